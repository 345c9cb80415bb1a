"""Runs a rollout from a composed config: the step shared by ``maze-run`` and RunContext."""

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import TARGET_KEY, instantiate, resolve_target
from maze_engine.rollout.runner import RolloutRunner, Statistics

logger = logging.getLogger(__name__)

RUN_STATISTICS_FILE = "statistics.json"
"""Normalization statistics a training run saves in its directory (see training.launch)."""


def default_output_dir() -> Path:
    """Hydra's output directory inside a Hydra app (``outputs/<date>/<time>``), else the working directory."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def _as_dict(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def _check_input_dir(policy: Any) -> None:
    """A policy loaded from a training run needs that run's directory; say so before trying to load it."""
    if isinstance(policy, Mapping) and "input_dir" in policy and not policy["input_dir"]:
        raise ConfigError("input_dir: this policy is loaded from a training run's output directory; "
                          "expected input_dir=<run dir> (e.g. input_dir=outputs/2024-01-31/12-00-00), "
                          "got an empty value")


def _is_normalization_wrapper(target: Any) -> bool:
    from maze_engine.wrappers.observation.normalization import ObservationNormalizationWrapper

    try:
        resolved = resolve_target(target) if isinstance(target, str) else target
    except ConfigError:
        return False  # reported when the stack is built
    return isinstance(resolved, type) and issubclass(resolved, ObservationNormalizationWrapper)


def with_run_statistics(wrappers: Any, input_dir: str | Path | None) -> Any:
    """``wrappers`` with every observation normalization wrapper reading the statistics of the training run
    in ``input_dir``, so a trained policy sees observations normalized exactly as in training."""
    if not input_dir or not (Path(input_dir) / RUN_STATISTICS_FILE).is_file():
        return wrappers
    dump = str(Path(input_dir) / RUN_STATISTICS_FILE)

    def patched(config: Any) -> Any:
        if isinstance(config, Mapping) and TARGET_KEY in config:
            if _is_normalization_wrapper(config[TARGET_KEY]):
                return {**config, "statistics_dump": dump}
            return config
        if isinstance(config, Mapping):
            return {target: {**(kwargs or {}), "statistics_dump": dump} if _is_normalization_wrapper(target)
                    else kwargs for target, kwargs in config.items()}
        return config

    if isinstance(wrappers, list):
        return [patched(item) for item in wrappers]
    return patched(wrappers)


def build_runner(runner_config: Any, seed: int | None = None) -> RolloutRunner:
    """Instantiate the ``runner`` node; ``seed`` (the top-level seed) applies unless the node sets one."""
    if isinstance(runner_config, Mapping) and TARGET_KEY not in runner_config:
        raise ConfigError(f"runner: expected a rollout runner (runner=sequential or runner=parallel), got a "
                          f"config without {TARGET_KEY} (keys {sorted(runner_config)}); training runners "
                          "need -cn conf_train")
    return instantiate(runner_config, RolloutRunner, seed=seed)


def rollout_from_config(cfg: DictConfig | Mapping[str, Any],
                        output_dir: str | Path | None = None) -> Statistics:
    """Roll ``cfg.policy`` out in ``cfg.env`` with ``cfg.wrappers`` using ``cfg.runner``; return statistics.

    ``cfg`` is a composed ``conf_rollout`` (or an equivalent mapping). Output goes to ``output_dir``, by
    default Hydra's output directory when called inside a Hydra app and the working directory otherwise.
    """
    config = _as_dict(cfg)
    for key in ("runner", "env", "policy"):
        if config.get(key) is None:
            raise ConfigError(f"{key}: missing from the rollout config (expected a {key} config group entry)")
    _check_input_dir(config["policy"])
    runner = build_runner(config["runner"], seed=config.get("seed"))
    directory = Path(output_dir) if output_dir is not None else default_output_dir()
    wrappers = with_run_statistics(config.get("wrappers"), config.get("input_dir"))
    logger.info("rolling out %d episodes with %s into %s", runner.n_episodes, type(runner).__name__,
                directory)
    statistics = runner.run_with(env=config["env"], wrappers=wrappers, agent=config["policy"],
                                 output_dir=directory)
    logger.info("rollout done: %s", ", ".join(
        f"{metric} mean {values['mean']:.4g} (min {values['min']:.4g}, max {values['max']:.4g}, "
        f"count {values['count']:g})" for metric, values in statistics.items()))
    return statistics
