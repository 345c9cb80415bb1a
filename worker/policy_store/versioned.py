"""The published versions a worker serves: the DeploymentFactory of one version, and how to build another.

``published_source`` builds the DeploymentFactory of the latest published version of the configured policy
(``policy=published_policy policy.name=<name>``), or of the stable version where the name has a release
state (``worker.policy_store.releases``), wrapped as a ``VersionedFactory`` that knows how to build any other
version. ``worker.policy_store.reload`` loads newer versions and release changes with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import resolve_target
from maze_engine.deployment.agent_deployment import AgentDeployment
from worker.policy_store.releases import read_release
from worker.policy_store.store import (
    STATISTICS_FILE,
    PublishedPolicy,
    check_name,
    get_policy,
    load_published_policy,
    names_hint,
    published_versions,
)

logger = logging.getLogger(__name__)

PUBLISHED_POLICY_TARGET = f"{load_published_policy.__module__}.{load_published_policy.__qualname__}"
"""The ``_target_`` of ``conf/policy/published_policy.yaml``."""

FactoryBuilder = Callable[[Any, Any, Any], Any]
"""``(policy config, env config, wrappers config) -> DeploymentFactory`` (the service's ``build_factory``)."""


class VersionedFactory:
    """The DeploymentFactory of one published version, plus how to build the factory of another version."""

    def __init__(self, factory: Any, published: PublishedPolicy,
                 rebuild: Callable[[PublishedPolicy], VersionedFactory], follows_latest: bool = True) -> None:
        self.factory = factory
        self.published = published
        self.rebuild = rebuild
        self.follows_latest = follows_latest
        """False when the config pins a version: then no newer one is loaded."""
        self.rejected_at_start: frozenset[int] = frozenset()
        """Newer versions that could not be loaded when the worker started (the reloader skips them)."""
        self.policy: Any = factory.policy

    @property
    def policy_version(self) -> int:
        """The version replies of this factory's episodes carry."""
        return self.published.version

    @property
    def name(self) -> str:
        return self.published.name

    def create(self) -> AgentDeployment:
        deployment: AgentDeployment = self.factory.create()
        return deployment

    def at_version(self, version: int) -> VersionedFactory:
        """The factory of another published ``version`` of the same name (self for this one); raises what
        loading it raises."""
        if version == self.policy_version:
            return self
        artifact_root = self.published.path.parents[2]  # <root>/policies/<name>/<version>
        return self.rebuild(get_policy(artifact_root, self.name, version))


def published_policy_name(policy_config: Any) -> str | None:
    """The policy name when ``policy_config`` is a published policy's config, else None."""
    if isinstance(policy_config, DictConfig):
        policy_config = OmegaConf.to_container(policy_config, resolve=True)
    if not isinstance(policy_config, Mapping) or policy_config.get("_target_") != PUBLISHED_POLICY_TARGET:
        return None
    return _checked_name(policy_config)


def _checked_name(policy_config: Mapping[str, Any]) -> str:
    """``policy.name``, or ConfigError naming it and the names published under ``policy.artifact_root``."""
    try:
        return check_name(policy_config.get("name"), "policy.name")
    except ConfigError as err:
        root = policy_config.get("artifact_root")
        if not isinstance(root, str | Path) or not str(root):
            raise
        raise ConfigError(f"{err} ({names_hint(root)}, under {root}/policies)") from None


def published_source(policy_config: Mapping[str, Any], env: Any, wrappers: Any,
                     build_factory: FactoryBuilder) -> VersionedFactory:
    """The VersionedFactory of the newest usable version of the published policy ``policy_config`` names
    (or of its pinned ``version``).

    An unusable latest version is logged and skipped for the one before, so a corrupt publication cannot keep
    restarted workers down. Raises ConfigError naming ``policy.name`` when no version is published yet (the
    worker refuses to start), and what loading the oldest (or the pinned) version raised when none is usable.
    """
    name = _checked_name(policy_config)
    root = policy_config.get("artifact_root")
    if not isinstance(root, str | Path) or not str(root):
        raise ConfigError(f"policy.artifact_root: expected the artifact root directory, got {root!r}")
    version = policy_config.get("version")

    def rebuild(target: PublishedPolicy) -> VersionedFactory:
        config = {**policy_config, "version": target.version}
        factory = build_factory(config, env, with_statistics(wrappers, target))
        return VersionedFactory(factory, target, rebuild, follows_latest=version is None)

    if version is not None:
        pinned = rebuild(get_policy(root, name, version))
        logger.info("serving %s (pinned: newer versions are not loaded)", describe_version(pinned.published))
        return pinned
    candidates = published_versions(root, name)
    release = read_release(root, name)
    if release is not None:  # the fleet's stable version (a canary comes with the first release check)
        candidates = [candidate for candidate in candidates if candidate <= release.stable]
    if not candidates:
        raise ConfigError(f"policy.name: no version of policy {name!r} is published under {root}/policies/"
                          f"{name} ({names_hint(root)}); publish one first (maze-worker serves only a "
                          "published version)")
    rejected: set[int] = set()
    newest_first = candidates[::-1]
    for candidate, older in zip(newest_first, [*newest_first[1:], None], strict=True):
        try:
            source = rebuild(get_policy(root, name, candidate))
        except Exception as err:  # noqa: BLE001 - any unusable version is skipped while an older one is left
            if older is None:
                raise
            rejected.add(candidate)
            logger.error("policy %r version %d rejected at start, trying version %d: %s", name, candidate,
                         older, brief(err))
            continue
        source.rejected_at_start = frozenset(rejected)
        logger.info("serving %s; newer versions are loaded as they are published",
                    describe_version(source.published))
        return source
    raise AssertionError("unreachable: the oldest version either loads or raises")


def describe_version(published: PublishedPolicy) -> str:
    """"policy 'cartpole' version 3 (published <time>, best evaluation return 500.0)", for the log."""
    recorded = published.best_eval_return
    return (f"policy {published.name!r} version {published.version} (published {published.created or '?'}, "
            f"best evaluation return {'not recorded' if recorded is None else f'{recorded:.1f}'})")


def with_statistics(wrappers: Any, published: PublishedPolicy) -> Any:
    """``wrappers`` with every ObservationNormalizationWrapper reading the version's normalization statistics
    (``statistics.json``), so the policy sees observations normalized as in its training."""
    statistics = published.path / STATISTICS_FILE
    if not statistics.is_file():
        return wrappers
    if isinstance(wrappers, DictConfig):
        wrappers = OmegaConf.to_container(wrappers, resolve=True)
    if isinstance(wrappers, Mapping) and "_target_" not in wrappers:
        return {key: _pointed(key, value, statistics) for key, value in wrappers.items()}
    if isinstance(wrappers, list):
        return [_pointed(item.get("_target_"), item, statistics) if isinstance(item, Mapping) else item
                for item in wrappers]
    if isinstance(wrappers, Mapping):
        return _pointed(wrappers.get("_target_"), wrappers, statistics)
    return wrappers


def _pointed(target: Any, arguments: Any, statistics: Path) -> Any:
    from maze_engine.wrappers.observation.normalization import ObservationNormalizationWrapper

    if not isinstance(arguments, Mapping) or not isinstance(target, str):
        return arguments
    try:
        if resolve_target(target) is not ObservationNormalizationWrapper:
            return arguments
    except ConfigError:
        return arguments
    return {**arguments, "statistics_dump": str(statistics)}


def brief(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 500 else text[:497] + "..."
