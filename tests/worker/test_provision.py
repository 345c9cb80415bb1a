"""Broker provisioning for ``make demo`` and ``make test`` (worker/broker/provision.py).

The start and enable paths run fake ``rabbitmqctl``, ``rabbitmq-server`` and ``rabbitmq-plugins`` scripts that
record their calls: the real broker is shared by everyone's tests and is never stopped or changed here. The
already-fine case runs against the real broker.
"""

import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.broker.probe import BrokerProblem
from worker.broker.provision import LOCAL_URL, PLUGIN, BrokerUnavailable, Provisioner, run_command

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("rabbitmqctl", "rabbitmq-server", "rabbitmq-plugins")
DOWN = BrokerProblem(BrokerProblem.UNREACHABLE, "no RabbitMQ reachable at amqp://guest:****@127.0.0.1:5672/%2F")
NO_PLUGIN = BrokerProblem(BrokerProblem.PLUGIN_MISSING, "the broker lacks the consistent-hash exchange")


class FakeTools:
    """Fake RabbitMQ command-line tools, each appending ``name args...`` to ``calls.log``; ``fail`` makes
    one exit 1, ``failures`` fails their first calls (as ``rabbitmqctl`` does while a node boots)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.log = directory / "calls.log"
        self.log.touch()

    def install(self, *names: str, fail: str = "", failures: int = 0) -> None:
        for name in names:
            script = self.directory / name
            counter = self.directory / f"{name}.count"
            exit_code = 1 if name == fail else 0
            script.write_text(f"""#!/bin/sh
echo "{name} $*" >> "{self.log}"
count=$(cat "{counter}" 2>/dev/null || echo 0); count=$((count + 1)); echo $count > "{counter}"
if [ $count -le {failures} ]; then echo "node not up yet" >&2; exit 69; fi
exit {exit_code}
""")
            script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def which(self, name: str) -> str | None:
        path = self.directory / name
        return str(path) if path.exists() else None


class ScriptedCheck:
    """``check(url)`` answering the given problems in turn (then the last one again)."""

    def __init__(self, *answers: BrokerProblem | None) -> None:
        self.answers = list(answers)
        self.urls: list[str] = []

    def __call__(self, url: str) -> BrokerProblem | None:
        self.urls.append(url)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def tools(tmp_path: Path) -> FakeTools:
    return FakeTools(tmp_path)


def provisioner(tools: FakeTools, check: ScriptedCheck, said: list[str] | None = None,
                startup_timeout_s: float = 5.0) -> Provisioner:
    """A Provisioner on the fake tools, without Docker, waiting briefly."""
    return Provisioner(check=check, which=tools.which, docker=lambda: False,
                       say=(said if said is not None else []).append, retry_interval_s=0.01,
                       startup_timeout_s=startup_timeout_s)


def test_a_local_broker_that_is_down_is_started_and_awaited(tools: FakeTools) -> None:
    tools.install(*TOOLS)
    said: list[str] = []
    check = ScriptedCheck(DOWN, None)
    with provisioner(tools, check, said=said).broker() as url:
        assert url == LOCAL_URL
    assert tools.calls() == ["rabbitmq-server -detached", "rabbitmqctl await_startup"]
    assert any("rabbitmq-server -detached" in line for line in said)


def test_await_startup_is_retried_while_the_node_boots(tmp_path: Path) -> None:
    tools = FakeTools(tmp_path)
    tools.install("rabbitmq-server", "rabbitmq-plugins")
    tools.install("rabbitmqctl", failures=2)
    with provisioner(tools, ScriptedCheck(DOWN, None)).broker() as url:
        assert url == LOCAL_URL
    assert tools.calls().count("rabbitmqctl await_startup") == 3


def test_a_started_broker_without_the_plugin_gets_it_enabled(tools: FakeTools) -> None:
    tools.install(*TOOLS)
    with provisioner(tools, ScriptedCheck(DOWN, NO_PLUGIN, None)).broker() as url:
        assert url == LOCAL_URL
    assert tools.calls() == ["rabbitmq-server -detached", "rabbitmqctl await_startup",
                             f"rabbitmq-plugins enable {PLUGIN}"]


def test_a_running_broker_without_the_plugin_is_not_restarted(tools: FakeTools) -> None:
    tools.install(*TOOLS)
    with provisioner(tools, ScriptedCheck(NO_PLUGIN, None)).broker() as url:
        assert url == LOCAL_URL
    assert tools.calls() == [f"rabbitmq-plugins enable {PLUGIN}"]


def test_a_failed_start_falls_back_to_a_docker_container(tools: FakeTools) -> None:
    tools.install(*TOOLS, fail="rabbitmq-server")
    container_url = "amqp://test:test@127.0.0.1:40000/%2F"

    @contextlib.contextmanager
    def container() -> Iterator[str]:
        yield container_url

    def by_url(url: str) -> BrokerProblem | None:
        return None if url == container_url else DOWN

    said: list[str] = []
    chosen = Provisioner(check=by_url, which=tools.which, docker=lambda: True, container=container,
                         say=said.append, retry_interval_s=0.01)
    with chosen.broker() as url:
        assert url == container_url
    assert tools.calls() == ["rabbitmq-server -detached"]
    assert "Docker" in said[-1] and "rabbitmq-server -detached failed" in said[-1]


def test_without_an_install_or_docker_one_message_names_every_way(tools: FakeTools) -> None:
    with pytest.raises(BrokerUnavailable) as caught, provisioner(tools, ScriptedCheck(DOWN)).broker():
        pass
    message = str(caught.value)
    assert tools.calls() == []
    for way in ("apt-get install rabbitmq-server", "start Docker",
                "docker compose -f deploy/docker-compose.yml up rabbitmq", "rabbitmq-server -detached",
                f"rabbitmq-plugins enable {PLUGIN}", "MAZE_AMQP_URL", "no local RabbitMQ install",
                "no Docker engine"):
        assert way in message


def test_a_broker_that_does_not_come_up_is_reported_with_the_tool_output(tools: FakeTools) -> None:
    tools.install(*TOOLS, fail="rabbitmqctl")
    with pytest.raises(BrokerUnavailable) as caught, \
            provisioner(tools, ScriptedCheck(DOWN), startup_timeout_s=0.05).broker():
        pass
    assert "did not start within" in str(caught.value) and "exit code 1" in str(caught.value)


def test_a_given_url_is_only_checked_never_provisioned(tools: FakeTools) -> None:
    tools.install(*TOOLS)
    url = "amqp://guest:secret@broker.example:5672/%2F"
    for problem, expected in ((DOWN, "never started"), (NO_PLUGIN, f"rabbitmq-plugins enable {PLUGIN}")):
        chosen = provisioner(tools, ScriptedCheck(problem))
        with pytest.raises(BrokerUnavailable) as caught, chosen.broker(url):
            pass
        assert expected in str(caught.value) and "secret" not in str(caught.value)
    assert tools.calls() == []


def test_run_command_reports_missing_programs_and_timeouts(tmp_path: Path) -> None:
    assert run_command([str(tmp_path / "nothing-here")], 5)[0] == 127
    assert run_command(["sleep", "5"], 0.2)[0] == 124
    assert run_command(["sh", "-c", "echo out; exit 3"], 5) == (3, "out")


@pytest.mark.integration
def test_a_usable_broker_is_used_as_it_is(amqp_url: str, tools: FakeTools) -> None:
    """The real broker (already fine): no tool is run, nothing is started or enabled."""
    tools.install(*TOOLS)
    chosen = Provisioner(local_url=amqp_url, which=tools.which, docker=lambda: pytest.fail("Docker asked"))
    with chosen.broker() as url:
        assert url == amqp_url
    assert chosen.provision_local() is None
    assert tools.calls() == []


@pytest.mark.integration
def test_the_command_prints_the_url_of_a_usable_broker(amqp_url: str, tools: FakeTools) -> None:
    tools.install(*TOOLS)
    env = {**os.environ, "MAZE_AMQP_URL": amqp_url, "PATH": f"{tools.directory}:{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "worker.broker.provision"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("amqp://") and tools.calls() == []
