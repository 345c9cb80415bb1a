"""A broker for ``make demo`` and ``make test`` on any machine, without steps by hand.

With ``MAZE_AMQP_URL`` (or a URL given) that broker is used as it is: it is checked, never started or changed.
Without one, in this order:

1. the local broker at 127.0.0.1:5672, when it is up and has the consistent-hash exchange;
2. a local RabbitMQ install (``rabbitmqctl`` on the PATH): started if down (``rabbitmq-server -detached``,
   then ``rabbitmqctl await_startup``) and the plugin enabled (``rabbitmq-plugins enable ...``); it keeps
   running afterwards;
3. where a Docker engine answers, a throwaway RabbitMQ container with the plugin (testcontainers), for as
   long as the ``broker()`` context lasts;
4. otherwise ``BrokerUnavailable``, whose message says what was tried and every way to get a broker.

    with broker() as url:          # the demo and the tests' ``amqp_url`` fixture
        ...

``python -m worker.broker.provision`` does 1 and 2 and prints the URL (``make broker``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

from worker.broker import probe
from worker.broker.probe import BrokerProblem
from worker.errors import EXIT_FAILURE, EXIT_OK, WorkerError
from worker.wire import topology

LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CONTAINER_IMAGE = "rabbitmq:3.13"
PLUGIN = probe.PLUGIN
STARTUP_TIMEOUT_S = 120.0

WAYS_TO_GET_ONE = f"""\
Any of these gives one:
  sudo apt-get install rabbitmq-server     # (macOS: brew install rabbitmq) a local install: make demo and
                                           # make test then start it and enable the plugin themselves
  start Docker                             # make demo and make test then start a RabbitMQ container
  docker compose -f deploy/docker-compose.yml up rabbitmq    # a lasting broker with its plugins (Docker)
  rabbitmq-server -detached                # start a local install by hand ...
  rabbitmq-plugins enable {PLUGIN}    # ... with the plugin the worker needs
  export MAZE_AMQP_URL=amqp://user:password@host:5672/%2F    # a broker elsewhere, with the plugin enabled"""

Runner = Callable[[Sequence[str], float], tuple[int, str]]
"""``(argv, timeout_s) -> (exit code, output)``: how commands are run (tests pass a recording fake)."""


class BrokerUnavailable(WorkerError):
    """No usable broker could be found or provisioned; the message says why and how to get one."""


def run_command(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    """Run ``argv``; its exit code and output (127 when it cannot be run, 124 when it timed out)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except OSError as err:
        return 127, f"{type(err).__name__}: {err}"
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {timeout:g} s"
    return done.returncode, (done.stdout + done.stderr).strip()


def docker_answers() -> bool:
    """Whether a Docker engine answers here (with the docker package, which testcontainers brings)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no package, no socket, no permission: all mean "no Docker engine for us"
        return False


@contextlib.contextmanager
def container_broker(image: str = CONTAINER_IMAGE) -> Iterator[str]:
    """A RabbitMQ container with the consistent-hash exchange, removed when the context ends."""
    from testcontainers.community.rabbitmq import RabbitMqContainer

    with RabbitMqContainer(image) as container:
        code, output = container.exec(["rabbitmq-plugins", "enable", "--online", PLUGIN])
        if code != 0:
            raise BrokerUnavailable(f"enabling {PLUGIN} in the RabbitMQ container failed: {output!r}")
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        yield f"amqp://{container.username}:{container.password}@{host}:{port}/%2F"


def nothing_found(problem: str) -> BrokerUnavailable:
    """The one message for "no broker here, none to start, no Docker": what was tried, and the ways out."""
    return BrokerUnavailable(f"No usable RabbitMQ broker: {problem}; no Docker engine answers either.\n"
                             f"{WAYS_TO_GET_ONE}")


def _say(message: str) -> None:
    print(f"broker: {message}", file=sys.stderr, flush=True)


class Provisioner:
    """Finds or provisions a broker (see the module docstring); every outside effect is a collaborator."""

    def __init__(self, *, local_url: str = LOCAL_URL,
                 check: Callable[[str], BrokerProblem | None] = probe.broker_problem,
                 run: Runner = run_command, which: Callable[[str], str | None] = shutil.which,
                 docker: Callable[[], bool] = docker_answers,
                 container: Callable[[], AbstractContextManager[str]] = container_broker,
                 say: Callable[[str], None] = _say, startup_timeout_s: float = STARTUP_TIMEOUT_S,
                 retry_interval_s: float = 1.0) -> None:
        self.local_url = local_url
        self.check = check
        self.run = run
        self.which = which
        self.docker = docker
        self.container = container
        self.say = say
        self.startup_timeout_s = startup_timeout_s
        self.retry_interval_s = retry_interval_s

    @contextlib.contextmanager
    def broker(self, url: str | None = None) -> Iterator[str]:
        """The URL of a usable broker while the context lasts: ``url`` (checked only), else see the module
        docstring; raises BrokerUnavailable."""
        if url:
            self.require(url)
            yield url
            return
        problem = self.provision_local()
        if problem is None:
            yield self.local_url
            return
        if not self.docker():
            raise nothing_found(problem)
        self.say(f"{problem}; starting a RabbitMQ container ({CONTAINER_IMAGE}) with Docker")
        with self.container() as container_url:
            self.require(container_url)
            yield container_url

    def require(self, url: str) -> None:
        """Raise BrokerUnavailable, saying how to fix it, unless ``url`` reaches a usable broker."""
        problem = self.check(url)
        if problem is None:
            return
        where = topology.mask_url(url)
        if problem.kind == BrokerProblem.PLUGIN_MISSING:
            raise BrokerUnavailable(f"The broker at {where} lacks the consistent-hash exchange the worker "
                                    f"shards episodes with. Enable it on that broker:\n"
                                    f"  rabbitmq-plugins enable {PLUGIN}\n"
                                    f"(docker compose -f deploy/docker-compose.yml up rabbitmq enables it)")
        raise BrokerUnavailable(f"No usable RabbitMQ broker: {problem}. A broker you name "
                                f"(${topology.AMQP_URL_ENV} or --url) is used as it is, never started; "
                                f"unset {topology.AMQP_URL_ENV} to have a local one provisioned.\n"
                                f"{WAYS_TO_GET_ONE}")

    def provision_local(self) -> str | None:
        """Make the local broker usable (start it, enable the plugin) where it is installed; None once it is,
        else why not."""
        problem = self.check(self.local_url)
        if problem is None:
            return None
        ctl, server, plugins = (self.which(name) for name in ("rabbitmqctl", "rabbitmq-server",
                                                               "rabbitmq-plugins"))
        if ctl is None or server is None or plugins is None:
            return (f"{problem}, and no local RabbitMQ install to start (rabbitmqctl, rabbitmq-server and "
                    "rabbitmq-plugins on the PATH)")
        if problem.kind == BrokerProblem.UNREACHABLE:
            self.say(f"{problem}; starting the local RabbitMQ (rabbitmq-server -detached)")
            code, output = self.run([server, "-detached"], 60.0)
            if code != 0:
                return f"{problem}; rabbitmq-server -detached failed ({_brief(output, code)})"
            failure = self._await_startup(ctl)
            if failure is not None:
                return failure
            problem = self._check_after_start()
            if problem is None:
                return None
        if problem.kind == BrokerProblem.PLUGIN_MISSING:
            self.say(f"enabling the consistent-hash exchange: rabbitmq-plugins enable {PLUGIN}")
            code, output = self.run([plugins, "enable", PLUGIN], 120.0)
            if code != 0:
                return f"rabbitmq-plugins enable {PLUGIN} failed ({_brief(output, code)})"
            problem = self.check(self.local_url)
        return None if problem is None else str(problem)

    def _await_startup(self, ctl: str) -> str | None:
        """Wait until the started node runs RabbitMQ; None, or why it did not."""
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            code, output = self.run([ctl, "await_startup"], max(1.0, remaining))
            if code == 0:
                return None
            if time.monotonic() + self.retry_interval_s > deadline:  # the node may not answer at first
                return (f"the local RabbitMQ did not start within {self.startup_timeout_s:g} s "
                        f"(rabbitmqctl await_startup: {_brief(output, code)})")
            time.sleep(self.retry_interval_s)

    def _check_after_start(self) -> BrokerProblem | None:
        """The started broker's problem; its listener may open a moment after ``await_startup``."""
        problem = self.check(self.local_url)
        for _ in range(10):
            if problem is None or problem.kind != BrokerProblem.UNREACHABLE:
                break
            time.sleep(self.retry_interval_s)
            problem = self.check(self.local_url)
        return problem


def _brief(output: str, code: int) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "no output"
    return f"exit code {code}: {last[:300]}"


def broker(url: str | None = None, say: Callable[[str], None] = _say) -> AbstractContextManager[str]:
    """``Provisioner(say=say).broker(url)``: the URL of a usable broker while the context lasts."""
    return Provisioner(say=say).broker(url)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worker.broker.provision``: provision a lasting local broker and print its URL."""
    parser = argparse.ArgumentParser(prog="python -m worker.broker.provision",
                                     description="Check $MAZE_AMQP_URL, or start the local RabbitMQ and "
                                                 "enable the consistent-hash exchange; print the URL.")
    parser.parse_args(argv)
    provisioner = Provisioner()
    url = os.environ.get(topology.AMQP_URL_ENV)
    try:
        if url:
            provisioner.require(url)
        else:
            problem = provisioner.provision_local()
            if problem is not None:
                if not provisioner.docker():
                    raise nothing_found(problem)
                print(f"{problem}; Docker answers: make demo and make test start a RabbitMQ container of "
                      f"their own (docker compose -f deploy/docker-compose.yml up rabbitmq starts a lasting "
                      f"one)", file=sys.stderr)
                return EXIT_OK
            url = provisioner.local_url
    except BrokerUnavailable as err:
        print(err, file=sys.stderr)
        return EXIT_FAILURE
    print(topology.mask_url(url))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
