"""maze-worker's command line and settings: help, one-line config errors with exit code 2, TLS parameters,
credentials kept out of logs."""

import logging
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from maze_engine.config import compose_config
from maze_engine.core.errors import ConfigError
from maze_engine.wrappers.logging.log_stats import LogStatsWrapper
from worker import cli as worker_cli
from worker.broker.agent_transport import connection_parameters
from worker.broker.backoff import Backoff
from worker.cli import WORKER_CONFIG, main, prepare
from worker.metrics import MetricsServer, WorkerMetrics
from worker.serving.factory import with_log_stats
from worker.serving.service import WorkerService
from worker.settings import BrokerSettings, TLSSettings, WorkerSettings
from worker.startup import resolved_config

sys.path.insert(0, str(Path(__file__).parent))
from worker_harness import ROOT, running_worker, settings_for  # noqa: E402


def test_help_describes_the_worker_and_its_config() -> None:
    result = subprocess.run([sys.executable, "-m", "worker.cli", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    assert "maze-worker: serve an agent over RabbitMQ" in result.stdout
    for text in ("broker:", "prefix: maze", "idle_timeout_s",
                 "policy: published_policy, random_policy, torch_policy",
                 "policy=published_policy policy.name=cartpole"):
        assert text in result.stdout


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["broker.shards=0"], "broker.shards: expected an integer in [1, 999], got 0"),
    (["broker.shardz=3"], "broker.shardz"),
    (["broker.prefix=has space"], "broker.prefix"),
    (["broker.url=http://localhost"], "broker.url: expected an amqp:// or amqps:// URL"),
    (["metrics.port=70000"], "metrics.port"),
    (["episodes.max_open=none"], "episodes.max_open"),
    (["batch.max_size=-1"], "batch.max_size"),
    (["log_level=LOUD"], "log_level"),
    (["env.name=NoSuchEnv-v0"], "env.name"),
    (["policy=no_such_policy"], "policy/no_such_policy"),
    (["broker.shards=[1"], "[1"),
])
def test_config_mistakes_are_one_line_with_exit_code_2(overrides: list[str], fragment: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(overrides)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maze-worker: error: ") and fragment in lines[0], lines


def test_subcommands_are_dispatched_before_hydra(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def submit(args: list[str]) -> int:
        seen.append(args)
        return 0

    monkeypatch.setitem(worker_cli.SUBCOMMANDS, "submit", submit)
    with pytest.raises(SystemExit) as exited:
        main(["submit", "--x", "y=1"])
    assert exited.value.code == 0 and seen == [["--x", "y=1"]]


def test_the_composed_config_builds_settings_and_the_agent() -> None:
    cfg = compose_config(WORKER_CONFIG, ["broker.prefix=demo", "broker.shards=8", "env.name=CartPole-v1",
                                         "metrics.port=9100", "episodes.idle_timeout_s=5"])
    settings, factory = prepare(cfg)
    assert (settings.broker.prefix, settings.broker.shards, settings.metrics.port) == ("demo", 8, 9100)
    assert settings.episodes.idle_timeout_s == 5.0
    deployment = factory.create()
    assert deployment.env.find_wrapper(LogStatsWrapper) is not None


@pytest.mark.parametrize(("config", "key"), [
    ({"broker": {"prefetch": 0}}, "broker.prefetch"),
    ({"broker": {"heartbeat_s": -1}}, "broker.heartbeat_s"),
    ({"broker": {"tls": {"verify": "yes"}}}, "broker.tls.verify"),
    ({"broker": {"tls": {"ca_file": 3}}}, "broker.tls.ca_file"),
    ({"broker": "amqp://x"}, "broker"),
    ({"episodes": {"idle_timeout_s": 0}}, "episodes.idle_timeout_s"),
    ({"episodes": {"replay_window": 0}}, "episodes.replay_window"),
    ({"reconnect": {"initial_backoff_s": 2, "max_backoff_s": 1}}, "reconnect.max_backoff_s"),
    ({"deterministic": "no"}, "deterministic"),
    ({"torch_threads": 0}, "torch_threads"),
    ({"stats": {"interval_s": -5}}, "stats.interval_s"),
])
def test_settings_errors_name_the_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}:"):
        WorkerSettings.from_config(config)


def test_amqps_urls_get_tls_with_the_host_name() -> None:
    params = connection_parameters(BrokerSettings(url="amqps://user:secret@broker.example:5671/%2F"), "name")
    assert params.ssl_options is not None and params.ssl_options.server_hostname == "broker.example"
    assert params.ssl_options.context.verify_mode == ssl.CERT_REQUIRED
    assert params.port == 5671 and params.client_properties["connection_name"] == "name"
    relaxed = connection_parameters(BrokerSettings(url="amqps://broker.example/%2F",
                                                   tls=TLSSettings(verify=False)), "name")
    assert relaxed.ssl_options.context.verify_mode == ssl.CERT_NONE
    assert connection_parameters(BrokerSettings(url="amqp://localhost/%2F"), "n").ssl_options is None


def test_credentials_never_reach_the_log(caplog: pytest.LogCaptureFixture, unused_port: int) -> None:
    settings = settings_for(f"amqp://someone:s3cr3t-value@127.0.0.1:{unused_port}/%2F", "masked")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AssertionError), running_worker(settings, start_timeout=1.0):
        pass
    assert "cannot reach the broker" in caplog.text
    assert "someone:****@127.0.0.1" in caplog.text
    assert "s3cr3t-value" not in caplog.text


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


@pytest.mark.parametrize(("wrappers", "count"), [
    (None, 1), ({}, 1), ([], 1),
    ({"maze_engine.ObservationStackWrapper": {"n_steps": 2}}, 2),
    ([{"_target_": "maze_engine.ObservationStackWrapper", "n_steps": 2}], 2),
])
def test_log_stats_is_added_outermost(wrappers: Any, count: int) -> None:
    items = with_log_stats(wrappers)
    assert len(items) == count and items[-1]["logging_prefix"] == "worker"


def test_health_is_503_until_the_worker_consumes() -> None:
    import urllib.error
    import urllib.request

    metrics = WorkerMetrics()
    server = MetricsServer(metrics, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 503
        metrics.set_healthy(True)
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
        metrics.set_healthy(False)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url, timeout=5)
    finally:
        server.stop()


def test_a_service_can_be_built_without_a_broker() -> None:
    cfg = compose_config(WORKER_CONFIG, [])
    settings, factory = prepare(cfg)
    service = WorkerService(settings, factory)
    assert not service.consuming.is_set() and not service.metrics.healthy
    assert (service.cluster.prefix, service.cluster.shards) == ("maze", 16)
    assert service.table.worker_id == service.worker_id


def test_the_yaml_states_the_same_defaults_as_the_settings_dataclasses() -> None:
    """conf_worker.yaml documents each default; the dataclasses hold them (from_config has no literals)."""
    composed = WorkerSettings.from_config(resolved_config(compose_config(WORKER_CONFIG, [])))
    assert composed == WorkerSettings()
