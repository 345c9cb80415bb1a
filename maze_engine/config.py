"""Hydra glue: where the config tree lives, the dataclass schemas its YAML files extend, and a compose helper.

The YAML files under ``conf/`` (shipped as the package ``maze_engine.conf``) hold the values; the dataclasses
here give the runner and env configs their types, so ``runner.n_episodes=ten`` or a misspelt key fails while
Hydra composes the config rather than deep inside a rollout. ``compose_config`` builds a config from Python
(RunContext, tests, notebooks) without touching ``sys.argv``, the working directory or Hydra's global state.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.initialize import get_gh_backup, restore_gh_from_backup
from omegaconf import MISSING, DictConfig, OmegaConf

CONFIG_MODULE = "maze_engine.conf"
"""The Python package that holds the config tree (the repository's top-level ``conf/`` directory)."""

CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
"""The tree as a Hydra ``config_path``, valid from any working directory once the project is installed."""

ROLLOUT_CONFIG = "conf_rollout"
"""The primary config ``maze-run`` uses unless ``-cn`` names another."""

HYDRA_VERSION_BASE = "1.3"


@dataclass
class RolloutRunnerSchema:
    """Fields shared by every rollout runner (``conf/runner/sequential.yaml``, ``parallel.yaml``)."""

    _target_: str = MISSING
    n_episodes: int = 10
    """Total number of episodes to run."""
    max_episode_steps: int | None = None
    """Cut episodes after this many steps (counted as truncated); null leaves it to the env's own limit."""
    deterministic: bool = False
    """Ask the policy for its most likely action instead of sampling."""
    record_trajectory: bool = True
    """Write every episode's observations, actions and rewards under ``<output dir>/trajectory_data``."""
    record_event_logs: bool = True
    """Write every step's events under ``<output dir>/event_logs``."""
    record_minari: str | None = None
    """A Minari dataset id (``(namespace/)name-v<version>``): write the episodes into that dataset under
    ``<output dir>/minari``; null: no dataset."""
    silent: bool = False
    """Suppress the console table and the progress bar (``stats.tsv`` is still written)."""


@dataclass
class SequentialRunnerSchema(RolloutRunnerSchema):
    """The single-process runner; it can render."""

    _target_: str = "maze_engine.rollout.sequential.SequentialRolloutRunner"
    render: bool = False
    """Show the env: a window where a display is available, otherwise text or saved frames."""


@dataclass
class ParallelRunnerSchema(RolloutRunnerSchema):
    """The multi-process runner."""

    _target_: str = "maze_engine.rollout.parallel.ParallelRolloutRunner"
    n_processes: int = 5
    """Worker processes; capped at the number of CPU cores and at ``n_episodes``."""


@dataclass
class GymEnvSchema:
    """A registered gymnasium env behind the Maze env hierarchy."""

    _target_: str = "maze_engine.make_gym_maze_env"
    name: str = MISSING
    """The gymnasium id, e.g. ``CartPole-v1``."""


SCHEMAS: dict[str, type] = {
    "maze_schema_runner_sequential": SequentialRunnerSchema,
    "maze_schema_runner_parallel": ParallelRunnerSchema,
    "maze_schema_env_gym": GymEnvSchema,
}
"""Schema name (as YAML defaults lists refer to it: ``- /maze_schema_runner_parallel@_here_``) -> dataclass.

They are stored outside any config group so they do not show up as options in ``maze-run --help``.
"""


def _run_dir(resume: Any, default: str) -> str:
    """``${maze_run_dir:${resume},<default>}``: a resumed training continues in its own directory."""
    return str(resume) if resume else default


def _hydra_subdir(resume: Any) -> str | None:
    """``${maze_hydra_subdir:${resume}}``: a resumed run keeps the ``.hydra/`` of its first start."""
    return None if resume else ".hydra"


RESOLVERS: dict[str, Callable[..., Any]] = {"maze_run_dir": _run_dir, "maze_hydra_subdir": _hydra_subdir}
"""OmegaConf resolvers the primary configs use in their ``hydra`` node (conf_train.yaml)."""


def register_schemas() -> None:
    """Store the schemas in Hydra's ConfigStore and register the resolvers; safe to call more than once."""
    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(name=name, node=schema)
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    # The training groups' schemas (algorithm, training runners) live with the training code.
    from maze_engine.training.config import register_configs

    register_configs()


def compose_config(config_name: str = ROLLOUT_CONFIG, overrides: Sequence[str] = (),
                   with_hydra: bool = False) -> DictConfig:
    """Compose ``config_name`` with command-line style ``overrides`` (``["env.name=CartPole-v1"]``).

    Works inside a running Hydra app too: Hydra's global state is set aside and restored afterwards. The
    ``hydra`` node is left out unless ``with_hydra``, so interpolations into it (``${hydra:...}``) are not
    available.
    """
    register_schemas()
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, job_name="maze_engine",
                                      version_base=HYDRA_VERSION_BASE):
            return compose(config_name=config_name, overrides=list(overrides),
                           return_hydra_config=with_hydra)
    finally:
        restore_gh_from_backup(backup)
