"""Shared fixtures for the deploy/ checks: parsed manifests, the Dockerfile and a worker-config validator.

Nothing here talks to Docker or Kubernetes (neither runs where the tests run); the files are parsed and
cross-checked against each other and against the worker's own Hydra config.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CONF = ROOT / "conf"
WORKER_CONF = CONF / "conf_worker.yaml"

# The test modules import the check functions from manifest_checks.py next to them; with
# --import-mode=importlib pytest does not put test folders on sys.path, so this one is added here.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))


# ---------------------------------------------------------------- YAML


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it came from."""

    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind"))

    @property
    def name(self) -> str:
        return str(self.doc.get("metadata", {}).get("name"))


def load_yaml_documents(path: Path) -> list[Any]:
    """All documents of a YAML file, empty ones (a trailing `---`) dropped."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


@pytest.fixture(scope="session")
def manifests() -> list[Manifest]:
    """Every object in deploy/k8s/*.yaml except the kustomization itself."""
    found: list[Manifest] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found.extend(Manifest(path, doc) for doc in load_yaml_documents(path))
    return found


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    docs = load_yaml_documents(DEPLOY / "docker-compose.yml")
    assert len(docs) == 1, "docker-compose.yml must hold exactly one YAML document"
    return docs[0]


# ---------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: upper-case keyword, raw argument text, the stage it belongs to."""

    keyword: str
    args: str
    stage: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction (ENTRYPOINT ["a", "b"]), else None."""
        text = self.args
        for flag in ("CMD ",):  # HEALTHCHECK's options come before its CMD
            if flag in text:
                text = text.split(flag, 1)[1]
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return [str(part) for part in value] if isinstance(value, list) else None


@dataclass(frozen=True)
class Dockerfile:
    instructions: list[Instruction]
    stage_names: list[str | None]

    @property
    def final_stage(self) -> int:
        return len(self.stage_names) - 1

    def of(self, keyword: str, stage: int | None = None) -> list[Instruction]:
        return [
            ins
            for ins in self.instructions
            if ins.keyword == keyword and (stage is None or ins.stage == stage)
        ]

    def env(self, stage: int) -> dict[str, str]:
        """ENV settings of one stage (the KEY=VALUE form only, which is what deploy/Dockerfile uses)."""
        values: dict[str, str] = {}
        for ins in self.of("ENV", stage):
            for token in shlex.split(ins.args):
                if "=" in token:
                    key, value = token.split("=", 1)
                    values[key] = value
        return values


def parse_dockerfile(text: str) -> Dockerfile:
    """Split a Dockerfile into instructions, joining continuation lines and dropping comments."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction are dropped by Docker too
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    if pending:
        logical.append(pending.strip())

    instructions: list[Instruction] = []
    stage_names: list[str | None] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            stage_names.append(parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None)
        instructions.append(Instruction(keyword, args.strip(), len(stage_names) - 1))
    return Dockerfile(instructions, stage_names)


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return parse_dockerfile((DEPLOY / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def dockerfile_parser() -> Callable[[str], Dockerfile]:
    """The parser itself, for tests that check the checks on edited copies of the Dockerfile."""
    return parse_dockerfile


# ---------------------------------------------------------------- worker config


class WorkerConfig:
    """Checks `maze-worker` command lines the way the worker does before it connects to a broker.

    The overrides are composed with conf/conf_worker.yaml by the project's own `compose_config` (unknown keys,
    groups and types fail there), then `worker.cli.prepare` reads the settings (bounds such as
    `broker.shards >= 1`) and builds the agent factory from env, wrappers and policy.
    """

    def __init__(self) -> None:
        self._base_keys: set[str] | None = None

    def compose(self, overrides: Sequence[str]) -> Any:
        from maze_engine.config import compose_config

        return compose_config("conf_worker", list(overrides))

    def problems(self, overrides: Sequence[str]) -> list[str]:
        """Empty when `maze-worker <overrides>` would get past its config checks; else what it would print."""
        import torch

        from worker.cli import ConfigProblem, prepare

        line = " ".join(overrides)
        try:
            cfg = self.compose(overrides)
        except Exception as error:  # Hydra and OmegaConf raise several unrelated types; all mean "invalid"
            return [f"{line}: {type(error).__name__}: {error}"]
        if cfg.get("role", "agent") != "agent":
            return []  # job workers build no agent; composing is all there is to check for them
        threads = torch.get_num_threads()
        try:
            prepare(cfg)
        except ConfigProblem as error:
            return [f"{line}: {error}"]
        finally:
            torch.set_num_threads(threads)  # prepare() applies the worker's torch_threads to this process
        return []

    def skip_unless_supported(self, overrides: Sequence[str]) -> None:
        """Skip rather than fail on `role=jobs` when the config has no `role` key (no job workers)."""
        uses_role = any(item.split("=", 1)[0].lstrip("+~") == "role" for item in overrides)
        if not uses_role or (CONF / "role").is_dir():
            return
        if self._base_keys is None:
            self._base_keys = set(self.compose([]).keys())
        if "role" not in self._base_keys:
            pytest.skip("conf_worker.yaml has no `role` (no job workers): cannot check role=jobs")


@pytest.fixture(scope="session")
def worker_config() -> WorkerConfig:
    if not WORKER_CONF.is_file():
        pytest.skip(
            "conf/conf_worker.yaml does not exist: "
            "worker overrides cannot be checked against it"
        )
    return WorkerConfig()
