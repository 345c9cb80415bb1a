"""deploy/Dockerfile and .dockerignore: base image, the pinned CPU torch, user, entrypoint, health check, and
that the files the image copies are enough for `pip install .` to ship every module and config.

No Docker engine runs where the tests run; the Dockerfile is parsed, and the project is built into a wheel
from exactly the files its COPY instructions take.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "python:3.11-slim"
TORCH_PIN = "torch==2.13.0"
TORCH_CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"
PROJECT_INSTALL = r"pip install (\S+ )*[\x22\x27]?\.(\[\w+(,\w+)*\])?[\x22\x27]?(\s|$)"
"""A `pip install` of the project itself: `.`, or `.` with extras, quoted or not."""
MUST_IGNORE = (".git", ".venv", "outputs", "maze_engine/__pycache__/x.pyc")


# ---------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's matching: `*` and `?` stay within one path element, `**` spans any number of them."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether `path` (relative to the context) is left out of the build context; the last match decides."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = _pattern_regex(raw.lstrip("!").strip("/"))
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def read_dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


# ---------------------------------------------------------------- checks


def copy_sources(dockerfile: Any, stage: int) -> list[tuple[list[str], str]]:
    """(sources, destination) of the COPY instructions of `stage` that copy from the build context."""
    copies = []
    for ins in dockerfile.of("COPY", stage):
        words = [w for w in ins.args.split() if not w.startswith("--")]
        if "--from=" not in ins.args:
            copies.append((words[:-1], words[-1]))
    return copies


def dockerfile_problems(dockerfile: Any, ignored: list[str]) -> list[str]:
    problems = []
    names = dockerfile.stage_names
    for ins in dockerfile.of("FROM"):
        base = ins.args.split()[0]
        if base != BASE_IMAGE and base not in names[: ins.stage]:
            problems.append(f"FROM {base}: expected {BASE_IMAGE} or an earlier stage")
    for ins in dockerfile.of("COPY"):
        source_stage = re.search(r"--from=(\S+)", ins.args)
        if source_stage and source_stage.group(1) not in names[: ins.stage]:
            problems.append(f"COPY --from={source_stage.group(1)}: no earlier stage of that name")

    runs = dockerfile.of("RUN")
    torch_runs = [r for r in runs if re.search(r"pip install[^&;]*\btorch\b", r.args)]
    pinned = [r for r in torch_runs if TORCH_PIN in r.args and TORCH_CPU_INDEX in r.args]
    if not pinned or len(pinned) != len(torch_runs):
        problems.append(f"torch must be installed only as `pip install {TORCH_PIN} {TORCH_CPU_INDEX}`")
    project_runs = [r for r in runs if re.search(PROJECT_INSTALL, r.args)]
    if not project_runs:
        problems.append("no `pip install .` of the project")
    for project in project_runs:
        if "[engine]" not in project.args:
            problems.append("the project must be installed with its engine extra (`pip install "
                            "\".[engine]\"`): a plain `pip install .` is the client alone")
    for project in project_runs:
        before = runs[: runs.index(project)]
        if not any(r in before and r.stage == project.stage for r in pinned):
            problems.append("`pip install .` must come after the CPU torch install in the same stage")

    final = dockerfile.final_stage
    users = dockerfile.of("USER", final)
    user = users[-1].args.split(":")[0] if users else "root"
    if not user.isdigit() or int(user) == 0:
        problems.append(
            f"final USER {user!r}: expected a numeric non-root uid (Kubernetes runAsNonRoot checks it)"
        )
    entrypoints = dockerfile.of("ENTRYPOINT", final)
    entry = entrypoints[-1].exec_form() if entrypoints else None
    if not entry or "maze-worker" not in entry:
        problems.append(f"ENTRYPOINT must be exec form running maze-worker, got {entry}")
    port = dockerfile.env(final).get("MAZE_METRICS_PORT")
    exposed = {p.split("/")[0] for ins in dockerfile.of("EXPOSE", final) for p in ins.args.split()}
    if port is None or port not in exposed:
        problems.append(f"EXPOSE {sorted(exposed)} must include MAZE_METRICS_PORT {port}")
    checks = dockerfile.of("HEALTHCHECK", final)
    health = checks[-1].exec_form() if checks else None
    if not health or "/healthz" not in " ".join(health) or "MAZE_METRICS_PORT" not in " ".join(health):
        problems.append(f"HEALTHCHECK must GET /healthz on MAZE_METRICS_PORT, got {health}")

    for stage in range(len(names)):
        for sources, _ in copy_sources(dockerfile, stage):
            for source in sources:
                if not (ROOT / source).exists():
                    problems.append(f"COPY {source}: not in the repository")
                elif dockerignore_excludes(ignored, source):
                    problems.append(f"COPY {source}: excluded from the build context by .dockerignore")
    for path in MUST_IGNORE:
        if not dockerignore_excludes(ignored, path):
            problems.append(f".dockerignore must leave out {path}")
    return problems


# ---------------------------------------------------------------- tests


def test_dockerfile_has_no_problems(dockerfile: Any) -> None:
    problems = dockerfile_problems(dockerfile, read_dockerignore())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        ([".venv"], ".venv/bin/python", True),
        (["*.egg-info"], "maze_engine.egg-info/PKG-INFO", True),
        (["*.egg-info"], "sub/x.egg-info", False),
        (["**/__pycache__"], "worker/__pycache__/cli.cpython-311.pyc", True),
        (["docs", "!docs/keep.md"], "docs/keep.md", False),
        (["tests"], "maze_engine/tests_util.py", False),
    ],
)
def test_dockerignore_matching(patterns: list[str], path: str, excluded: bool) -> None:
    assert dockerignore_excludes(patterns, path) is excluded


EDITS: dict[str, tuple[Callable[[str], str], str]] = {
    "torch from PyPI": (lambda t: t.replace(f" {TORCH_CPU_INDEX}", ""), "torch must be installed"),
    "torch unpinned": (lambda t: t.replace(TORCH_PIN, "torch"), "torch must be installed"),
    "project before torch": (
        lambda t: t.replace("RUN pip install torch", "RUN pip install . && true\nRUN pip install torch", 1),
        "must come after the CPU torch",
    ),
    "client-only install": (lambda t: t.replace('pip install ".[engine]"', "pip install ."), "engine extra"),
    "runs as root": (lambda t: t.replace("USER 10001:10001", "USER root"), "non-root"),
    "no user": (lambda t: t.replace("USER 10001:10001", ""), "non-root"),
    "shell-form entrypoint": (
        lambda t: re.sub(r"ENTRYPOINT \[.*\]", "ENTRYPOINT maze-worker", t),
        "ENTRYPOINT",
    ),
    "other base": (
        lambda t: t.replace("FROM python:3.11-slim AS build", "FROM python:3.12 AS build"),
        "FROM",
    ),
    "port not exposed": (lambda t: t.replace("EXPOSE 9100", "EXPOSE 8080"), "EXPOSE"),
    "health on /metrics": (lambda t: t.replace("/healthz", "/metrics"), "HEALTHCHECK"),
    "copy of a missing dir": (
        lambda t: t.replace("COPY conf ./conf", "COPY config ./conf"),
        "not in the repository",
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_checks_catch(edit: str, dockerfile_parser: Callable[[str], Any]) -> None:
    change, expected = EDITS[edit]
    original = (ROOT / "deploy" / "Dockerfile").read_text()
    edited = change(original)
    assert edited != original, f"edit {edit!r} no longer applies to the Dockerfile"
    problems = dockerfile_problems(dockerfile_parser(edited), read_dockerignore())
    assert any(expected in problem for problem in problems), f"{edit!r} not caught; problems: {problems}"


def test_dockerignore_keeping_a_copied_path_out_is_caught(dockerfile: Any) -> None:
    problems = dockerfile_problems(dockerfile, [*read_dockerignore(), "worker"])
    assert any("excluded from the build context" in problem for problem in problems)


def test_copied_files_build_a_complete_wheel(dockerfile: Any, tmp_path: Path) -> None:
    """`pip install .` on exactly what the image copies ships every module, every config and maze-worker."""
    ignored = read_dockerignore()
    context = tmp_path / "context"
    build_stage = next(
        ins.stage for ins in dockerfile.of("RUN") if re.search(PROJECT_INSTALL, ins.args)
    )
    for sources, _ in copy_sources(dockerfile, build_stage):
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(
                    origin,
                    context / source,
                    ignore=lambda d, names: [
                        n
                        for n in names
                        if dockerignore_excludes(ignored, str((Path(d) / n).relative_to(ROOT)))
                    ],
                )
            else:
                (context / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, context / source)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in shipped if n.endswith("entry_points.txt"))
    assert re.search(r"^maze-worker\s*=\s*worker\.entry_points:maze_worker", entry_points, re.MULTILINE), \
        entry_points
    expected = {
        str(p.relative_to(ROOT)) for top in ("maze_engine", "worker") for p in (ROOT / top).rglob("*.py")
    }
    expected |= {
        "maze_engine/conf/" + str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")
    }
    expected = {path for path in expected if "__pycache__" not in path}
    missing = sorted(expected - shipped)
    assert not missing, f"the image would lack (a package without __init__.py?): {missing[:10]}"
