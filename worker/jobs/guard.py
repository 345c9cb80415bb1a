"""Which jobs may run at all: the configs, config groups and keys a job message may ask for, and the class
paths and paths in the config it composes (docs/jobs.md, "What a job message may ask").

The allow-list is the config tree itself. A job composes ``conf_train`` (train) or ``conf_rollout``
(rollout). Each override is a plain ``key=value`` (``worker.jobs.grammar``) that either picks an option of a
config group (``runner=sequential``: a YAML file of ``conf/runner/``) or sets a key that the config, composed
with the job's group selections, already has (``runner.n_episodes=10``), to a value of the same shape: a
scalar for a scalar, a list for a list, never a whole section. Nothing is added, deleted or interpolated, and
``hydra.*`` is no part of a job's config. Values obey ``worker.jobs.rules``; a relative path is taken
relative to the artifact root and passed to the job as the absolute path it resolves to. Once composed, the
whole config is checked by the same rules, so a group option cannot bring in what an override may not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from maze_engine.core.errors import ConfigError
from worker.errors import WorkerError, one_line
from worker.jobs.evaluation_spec import published_policy
from worker.jobs.grammar import Override, OverrideSyntaxError, parse_override, render_override
from worker.jobs.rules import DATASET_KEY, DATASETS_DIR, STREAM, TARGET_KEY, ValueRules, is_path_key
from worker.jobs.schema import DEFAULT_CONFIGS, EvaluationSpec, JobMessage
from worker.settings import DEFAULT_ALLOWED_TARGETS

GROUPS = ("env", "policy", "model", "critic", "algorithm", "runner", "wrappers")
"""Config groups a job may pick options of."""
JOB_CONFIGS = tuple(DEFAULT_CONFIGS.values())
"""Primary configs a job may compose."""
CONFIG_PACKAGE = "maze_engine.conf"


class JobRefused(WorkerError):
    """A job message asks for something a job may not; ``field`` names it (``overrides[2]``, ``config``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@cache
def group_options(group: str) -> tuple[str, ...]:
    """The options of config group ``group``: the names of the YAML files in ``conf/<group>/``."""
    folder = resources.files(CONFIG_PACKAGE) / group
    if not folder.is_dir():
        return ()
    return tuple(sorted(item.name.removesuffix(".yaml") for item in folder.iterdir()
                        if item.name.endswith(".yaml")))


class JobGuard:
    """Vets job messages against the config tree, one artifact root and ``jobs.allowed_targets``."""

    def __init__(self, artifact_root: str | Path,
                 allowed_targets: Sequence[str] = DEFAULT_ALLOWED_TARGETS) -> None:
        self.rules = ValueRules(artifact_root, allowed_targets)
        self._trees: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
        """Composed configs by (config, group selections): most jobs pick the same few."""

    def vet(self, job: JobMessage) -> JobMessage:
        """``job`` if it may run, with its relative paths made absolute; raises JobRefused naming the
        field."""
        if job.evaluation is not None:
            return replace(job, evaluation=self._vet_evaluation(job.evaluation))
        if job.config not in JOB_CONFIGS:
            raise JobRefused("config", f"config: expected one of {', '.join(JOB_CONFIGS)}, "
                                       f"got {job.config!r}")
        parsed = [_parse(index, text) for index, text in enumerate(job.overrides)]
        selections: dict[int, Override] = {}
        for index, override in enumerate(parsed):
            if override.key in GROUPS:
                options = group_options(override.key)
                if override.value not in options:
                    raise _refused(index, override, f"expected an option of config group {override.key} "
                                                    f"({', '.join(options)})")
                selections[index] = override
        tree = self._tree(job.config, selections)
        vetted = [override.text if override.key in GROUPS else self._vet_value(index, override, job, tree)
                  for index, override in enumerate(parsed)]
        return replace(job, overrides=tuple(vetted))

    def check_composed(self, config: Any) -> None:
        """Raise JobRefused("config") unless every class path, path and name in the composed ``config`` (a
        DictConfig or plain mapping) passes ``worker.jobs.rules``.

        Interpolations are left alone: a job's values cannot hold one, so each comes from the config tree, and
        what it refers to is checked where it is set.
        """
        from omegaconf import DictConfig, OmegaConf

        tree = OmegaConf.to_container(config, resolve=False) if isinstance(config, DictConfig) else config
        if not isinstance(tree, dict):
            raise JobRefused("config", f"config: expected a mapping, got {type(tree).__name__}")
        self._walk(tree, "")
        wrappers = tree.get("wrappers")
        entries = wrappers if isinstance(wrappers, list) else [wrappers]
        for index, entry in enumerate(entries):
            where = f"wrappers[{index}]" if isinstance(wrappers, list) else "wrappers"
            paths = [entry] if isinstance(entry, str) else (
                list(entry) if isinstance(entry, dict) and TARGET_KEY not in entry else [])
            for path in paths:
                problem = self.rules.target_problem(path)
                if problem is not None:
                    raise JobRefused("config", f"config: {where}: a wrapper's class path: {problem}")

    def _vet_evaluation(self, spec: EvaluationSpec) -> EvaluationSpec:
        """``spec`` if its policy is published under the artifact root and its dataset is one a job may read
        (the rules of ``dataset=``), with the dataset's path made absolute; raises JobRefused naming the
        field. Checked here, not in the job's process, so that a wrong name or path is answered at once."""
        from maze_engine.records.minari import is_dataset_dir
        from worker.policy_store.store import POLICIES_DIR, get_policy, names_hint, published_versions

        root = self.rules.root
        name, version = published_policy(spec.policy)
        versions = published_versions(root, name)
        if not versions:
            raise JobRefused("evaluation.policy", f"evaluation.policy: no version of {name!r} is published "
                                                  f"under {root / POLICIES_DIR} ({names_hint(root)})")
        if version is not None and version not in versions:
            raise JobRefused("evaluation.policy", f"evaluation.policy: version {version} of {name!r} is not "
                                                  f"published under {root / POLICIES_DIR} (its versions: "
                                                  f"{', '.join(map(str, versions))})")
        try:
            published = get_policy(root, name, versions[-1] if version is None else version)
        except ConfigError as err:  # a broken manifest
            raise JobRefused("evaluation.policy", f"evaluation.policy: {one_line(err)}") from None
        problem = self.rules.path_problem(str(published.path))  # a version linked in from elsewhere
        if problem is not None:
            raise JobRefused("evaluation.policy", f"evaluation.policy: {spec.policy}: {problem}")
        problem = self.rules.dataset_problem(spec.dataset)
        if problem is not None:
            raise JobRefused("evaluation.dataset", f"evaluation.dataset: {problem}")
        if spec.dataset.startswith(STREAM):
            return spec  # read by the job's process (worker.experience.evaluate)
        try:
            path = self.rules.dataset_path(spec.dataset)
        except ValueError as err:
            raise JobRefused("evaluation.dataset", f"evaluation.dataset: {err}") from None
        if path is None or not is_dataset_dir(path):
            raise JobRefused("evaluation.dataset", f"evaluation.dataset: no Minari dataset at {path} (a path "
                                                   "is taken relative to the artifact root, a bare id such "
                                                   f"as cartpole/logged-v0 under {root / DATASETS_DIR})")
        return replace(spec, dataset=str(path))

    # -- helpers -------------------------------------------------------------------------------------------

    def _tree(self, config: str, selections: dict[int, Override]) -> dict[str, Any]:
        """The config ``config`` composed with the group ``selections`` (by override index), unresolved, as
        plain containers (cached)."""
        key = (config, tuple(override.text for override in selections.values()))
        if key not in self._trees:
            try:
                composed = _compose(config, key[1])
            except Exception as err:  # noqa: BLE001 - Hydra raises several types for a group it cannot select
                for index, override in selections.items():  # which one? (e.g. critic= on a rollout)
                    try:
                        _compose(config, (override.text,))
                    except Exception as alone:  # noqa: BLE001 - as above
                        raise _refused(index, override, f"expected a group of the {config} config "
                                                        f"({one_line(alone)})") from None
                raise JobRefused("overrides", f"overrides: {one_line(err)}") from None
            if len(self._trees) >= 64:
                self._trees.clear()
            self._trees[key] = composed
        return self._trees[key]

    def _vet_value(self, index: int, override: Override, job: JobMessage, tree: dict[str, Any]) -> str:
        """The override to pass on for a ``key=value`` (a path made absolute); raises JobRefused."""
        segments = override.segments
        if segments[0] == "hydra":
            raise _refused(index, override, "expected a key of the job's config; hydra.* is no part of it")
        node: Any = tree
        for depth, segment in enumerate(segments):
            known = _children(node)
            if segment not in known:
                where = ".".join(segments[:depth]) or f"the {job.config} config"
                listed = ", ".join(known[:16]) + (", ..." if len(known) > 16 else "")
                raise _refused(index, override, f"expected a key of {where} ({listed or 'none'}), "
                                                f"got {segment!r}")
            node = node[int(segment)] if isinstance(node, list) else node[segment]
        value = override.value
        if isinstance(node, dict):
            raise _refused(index, override, f"expected a key holding a value; {override.key} is a section "
                                            "(set its keys one by one, or pick a group option)")
        if isinstance(node, list) and not isinstance(value, list):
            raise _refused(index, override, f"expected a list such as [1, 2] for {override.key}")
        if not isinstance(node, list) and isinstance(value, list):
            raise _refused(index, override, f"expected a single value for {override.key}, got a list")
        name = segments[-1]
        problem = self.rules.value_problem(name, value)
        if problem is not None:
            raise _refused(index, override, f"{override.key}: {problem}")
        if name == DATASET_KEY and isinstance(value, str) and value.startswith(STREAM):
            return override.text  # exported by the job worker before the job starts (worker.jobs.datasets)
        if is_path_key(name) and isinstance(value, str) and value:
            resolved = self.rules.dataset_path(value) if name == DATASET_KEY else self.rules.confine(value)
            try:
                return render_override(override.key, str(resolved))
            except OverrideSyntaxError as err:
                raise _refused(index, override, str(err)) from None
        return override.text

    def _walk(self, node: Any, where: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            path = f"{where}[{key}]" if isinstance(node, list) else (f"{where}.{key}" if where else str(key))
            if isinstance(value, str) and "${" in value:
                continue
            if isinstance(value, dict):
                self._walk(value, path)
                continue
            if isinstance(node, dict):
                # Relative paths in the tree itself are used as the job's process sees them: from its
                # working directory, the worker's.
                problem = self.rules.value_problem(str(key), value, base=Path.cwd())
                if problem is not None:
                    raise JobRefused("config", f"config: {path}: {problem}")
            if isinstance(value, list):
                self._walk(value, path)


def _compose(config: str, overrides: Sequence[str]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from maze_engine.config import compose_config

    composed = OmegaConf.to_container(compose_config(config, list(overrides)), resolve=False)
    assert isinstance(composed, dict)
    return {str(key): value for key, value in composed.items()}


def _children(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [str(key) for key in node]
    if isinstance(node, list):
        return [str(index) for index in range(len(node))]
    return []


def _parse(index: int, text: str) -> Override:
    try:
        return parse_override(text)
    except OverrideSyntaxError as err:
        raise JobRefused(f"overrides[{index}]", f"overrides[{index}]: {_quote(text)}: {err}") from None


def _refused(index: int, override: Override, expected: str) -> JobRefused:
    return JobRefused(f"overrides[{index}]", f"overrides[{index}]: {_quote(override.text)}: {expected}")


def _quote(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
