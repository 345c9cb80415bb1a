"""The producer-side client installs and runs without the engine: no torch, gymnasium or hydra."""

import shutil
import subprocess
import sys
import textwrap
import tomllib
import uuid
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "worker", "maze_engine", "conf")
ENGINE_MODULES = ("torch", "gymnasium", "hydra", "omegaconf", "maze_engine", "prometheus_client")


def test_importing_the_client_loads_no_engine_module() -> None:
    code = ("import sys, worker.client, worker.wire.protocol, worker.wire.replies, worker.wire.topology; "
            f"print(','.join(m for m in {ENGINE_MODULES!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=ROOT)
    assert loaded.stdout.strip() == ""


def test_the_base_install_requires_only_what_the_client_imports() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {requirement.split(">")[0].split("=")[0].split("<")[0] for requirement in project["dependencies"]}
    assert names == {"pika", "msgpack", "numpy"}
    assert any(requirement.startswith("torch") for requirement in project["optional-dependencies"]["engine"])


@pytest.mark.slow
@pytest.mark.integration
def test_a_fresh_environment_with_the_base_install_reaches_the_broker(tmp_path: Path, amqp_url: str) -> None:
    """pip install of the project without extras into a new venv: the client works, torch is absent and
    maze-worker says what to install instead of failing with a traceback."""
    source = tmp_path / "source"  # a copy: setuptools builds in the source tree
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                              str(source)], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    prefix = f"test-install-{uuid.uuid4().hex[:8]}"
    script = textwrap.dedent(f"""
        import importlib.util, sys
        from worker.client import MazeClient, TopologyMissing
        assert all(importlib.util.find_spec(name) is None for name in ("torch", "gymnasium", "hydra"))
        try:
            MazeClient({amqp_url!r}, prefix={prefix!r}, timeout=10)
        except TopologyMissing as err:
            print("topology missing:", err)
    """)
    run = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert run.returncode == 0 and "topology missing" in run.stdout, run.stdout + run.stderr
    worker = subprocess.run([str(environment / "bin" / "maze-worker")], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert worker.returncode != 0 and "pip install 'maze-engine[engine]'" in worker.stderr, worker.stderr
    assert "Traceback" not in worker.stderr
