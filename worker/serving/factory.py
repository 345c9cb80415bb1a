"""The deployments a worker serves: the configured wrapper stack plus an outermost LogStatsWrapper."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from maze_engine.deployment.factory import DeploymentFactory
from maze_engine.wrappers.logging.log_stats import LogStatsWrapper

STATS_PREFIX = "worker"


def build_factory(policy: Any, env: Any, wrappers: Any = None) -> DeploymentFactory:
    """The DeploymentFactory of the worker: the configured wrappers plus an outermost LogStatsWrapper."""
    return DeploymentFactory(policy, env, with_log_stats(wrappers))


def with_log_stats(wrappers: Any) -> list[Any]:
    """``wrappers`` (any format AgentDeployment accepts) as a list ending in a LogStatsWrapper."""
    if isinstance(wrappers, DictConfig | ListConfig):
        wrappers = OmegaConf.to_container(wrappers, resolve=True)
    if wrappers is None:
        items: list[Any] = []
    elif isinstance(wrappers, Mapping):
        items = [wrappers] if "_target_" in wrappers else [{key: value} for key, value in wrappers.items()]
    else:
        items = list(wrappers)
    items.append({"_target_": LogStatsWrapper, "logging_prefix": STATS_PREFIX})
    return items
