"""``maze-worker`` keeps the broker password out of what it prints (``--cfg job``, ``--help``, ``--info``),
and a broker URL with a bad query option is a one-line config error naming ``broker.url``."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from maze_engine.config import compose_config
from worker.cli import WORKER_CONFIG, masked_url_args
from worker.errors import ConfigProblem
from worker.startup import settings_of

ROOT = Path(__file__).resolve().parents[2]
SECRET = f"pw-{uuid.uuid4().hex[:12]}"


def _cli(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "MAZE_AMQP_URL"}
    if url is not None:
        env["MAZE_AMQP_URL"] = url
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize(("args", "url"), [
    ([f"broker.url=amqp://maze:{SECRET}@localhost:5672/%2F", "--cfg", "job"], None),
    (["--cfg", "all", f"broker.url=amqp://maze:{SECRET}@localhost:5672/%2F"], None),
    (["--cfg", "job", "--resolve"], f"amqp://maze:{SECRET}@localhost:5672/%2F"),
    (["--help"], f"amqp://maze:{SECRET}@localhost:5672/%2F"),
    (["--info"], f"amqp://maze:{SECRET}@localhost:5672/%2F"),
])
def test_printing_the_config_masks_the_broker_password(args: list[str], url: str | None) -> None:
    done = _cli(*args, url=url)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "url: amqp://maze:****@localhost:5672/%2F" in done.stdout


@pytest.mark.parametrize(("args", "url"), [
    ([], f"amqp://maze:{SECRET}@localhost/?heartbeat=abc"),
    (["role=jobs"], f"amqp://maze:{SECRET}@localhost/?heartbeat=abc"),
    ([f'broker.url="amqp://maze:{SECRET}@localhost/?ssl_options=("', "role=all"], None),
    ([f'broker.url="amqp://maze:{SECRET}@localhost/?no_such_option=1"', "--cfg", "job"], None),
])
def test_a_bad_url_query_is_a_one_line_config_error(args: list[str], url: str | None) -> None:
    done = _cli(*args, url=url)
    if "--cfg" in args:  # printing the config does not check values
        assert done.returncode == 0 and SECRET not in done.stdout
        return
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maze-worker: error: broker.url: "), done.stderr
    assert SECRET not in done.stderr and "****" in done.stderr


def test_settings_check_the_url_query() -> None:
    cfg = compose_config(WORKER_CONFIG, ['broker.url="amqp://guest:guest@localhost/?heartbeat=abc"'])
    with pytest.raises(ConfigProblem) as info:
        settings_of(cfg)
    assert str(info.value).startswith("broker.url: ") and "guest:****@" in str(info.value)
    ok = compose_config(WORKER_CONFIG, ['broker.url="amqp://guest:guest@localhost/?heartbeat=30"'])
    assert settings_of(ok).broker.url.endswith("heartbeat=30")


def test_only_printing_flags_get_the_masked_url() -> None:
    assert masked_url_args(["-m", "broker.shards=2"]) == ["-m", "broker.shards=2"], "a run keeps its URL"
    assert masked_url_args(["--cfg", "job", "-cn", "conf_rollout"]) == ["--cfg", "job", "-cn", "conf_rollout"]
    masked = masked_url_args(["broker.url=amqp://a:b@h/", "--cfg", "job"])
    assert masked == ["broker.url='amqp://a:****@h/'", "--cfg", "job"]
