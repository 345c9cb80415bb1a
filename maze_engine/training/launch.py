"""Builds a training run from a composed ``conf_train`` config and runs it (for ``maze-run`` and RunContext).

The config may be a Hydra DictConfig or a plain mapping in which RunContext has put Python objects: an env
factory under ``env``, composer instances under ``model.policy`` / ``model.critic``, an algorithm config
object under ``algorithm``. The run directory receives ``config.yaml``, the model files of
``save_torch_policy`` (``state_dict.pt``, ``spaces.json``, ``model.yaml``), ``statistics.json`` when the env
normalizes observations, ``stats.tsv`` and TensorBoard event files.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import instantiate
from maze_engine.training.config import ALGORITHM_CONFIGS, AlgorithmConfig, algorithm_config_from_dict
from maze_engine.training.evaluator import BestModelSelection, RolloutEvaluator
from maze_engine.training.on_policy import OnPolicyTrainer, Stats
from maze_engine.training.reporting import TrainingReporter
from maze_engine.training.runners import TrainingRunnerConfig
from maze_engine.training.vector_env import check_single_actor

CONFIG_FILE = "config.yaml"
NORMALIZATION_FILE = "statistics.json"


class EnvFactory:
    """Builds ``env`` and wraps it in ``wrappers``; picklable, so worker processes can call it too.

    ``statistics`` (observation normalization statistics estimated once for the run) are set on the
    ObservationNormalizationWrapper of every env it builds, so all envs normalize alike.
    """

    def __init__(self, env: Any, wrappers: Any = None, statistics: Mapping[str, Any] | None = None) -> None:
        self.env = env
        self.wrappers = wrappers
        self.statistics = statistics

    def __call__(self) -> StructuredEnv:
        from maze_engine.rollout.components import apply_wrappers, build_env

        env = apply_wrappers(build_env(self.env), self.wrappers)
        if self.statistics is not None:
            wrapper = _normalization_wrapper(env)
            if wrapper is not None:
                wrapper.set_statistics(self.statistics)
        return env


def _normalization_wrapper(env: StructuredEnv) -> Any:
    from maze_engine.wrappers.observation.normalization import ObservationNormalizationWrapper
    from maze_engine.wrappers.wrapper import find_wrapper

    return find_wrapper(env, ObservationNormalizationWrapper)


def build_algorithm_config(config: Any) -> AlgorithmConfig:
    """The ``algorithm`` node as a config object: an instance, a name (``a2c``/``ppo``) or a mapping."""
    if isinstance(config, AlgorithmConfig):
        return config
    if isinstance(config, str):
        if config not in ALGORITHM_CONFIGS:
            raise ConfigError(f"algorithm: expected one of {sorted(ALGORITHM_CONFIGS)}, got {config!r}")
        return ALGORITHM_CONFIGS[config]()
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if isinstance(config, Mapping) and "_target_" in config:
        return instantiate(config, AlgorithmConfig)
    if isinstance(config, Mapping):
        # Without a class path the keys decide: only PPO has mini-batches.
        config_class = ALGORITHM_CONFIGS["ppo" if "batch_size" in config else "a2c"]
        return algorithm_config_from_dict(config_class, config)
    raise ConfigError(f"algorithm: expected 'a2c', 'ppo', a mapping of hyperparameters or an "
                      f"A2CAlgorithmConfig/PPOAlgorithmConfig, got {type(config).__name__}")


def trainer_class(algorithm_config: AlgorithmConfig) -> type[OnPolicyTrainer]:
    """A2C or PPO, by the type of the algorithm config."""
    from maze_engine.training.a2c import A2C
    from maze_engine.training.config import A2CAlgorithmConfig, PPOAlgorithmConfig
    from maze_engine.training.ppo import PPO

    if isinstance(algorithm_config, PPOAlgorithmConfig):
        return PPO
    if isinstance(algorithm_config, A2CAlgorithmConfig):
        return A2C
    raise ConfigError(f"algorithm: no trainer for {type(algorithm_config).__name__}")


def loggable_config(config: Any) -> Any:
    """The config as plain YAML-able values; Python objects (factories, instances) become a description."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if isinstance(config, AlgorithmConfig):
        return {"_target_": f"{type(config).__module__}.{type(config).__name__}", **config.to_dict()}
    if isinstance(config, Mapping):
        return {str(key): loggable_config(value) for key, value in config.items()}
    if isinstance(config, list | tuple):
        return [loggable_config(value) for value in config]
    if config is None or isinstance(config, str | int | float | bool):
        return config
    name = getattr(config, "__qualname__", None) or type(config).__qualname__
    return f"<python object: {name}>"


@dataclass
class TrainingRun:
    """Everything a training run is made of; ``train`` runs it, ``close`` releases envs and files."""

    trainer: OnPolicyTrainer
    policy: Any
    critic: Any
    env_factory: EnvFactory
    run_dir: Path
    model_selection: BestModelSelection
    save_model: Any
    reporter: TrainingReporter
    eval_envs: list[StructuredEnv] = field(default_factory=list)
    closed: bool = False

    def train(self, n_epochs: int | None = None, **kwargs: Any) -> dict[str, Stats]:
        """Train (``n_epochs`` overrides the config's), make sure a model is saved, return the last
        epoch's statistics."""
        stats = self.trainer.train(n_epochs=n_epochs, **kwargs)
        if self.model_selection.best_score == -math.inf:
            self.save_model()  # no evaluation ever scored: keep the final weights
        return stats

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.trainer.env.close()
        for env in self.eval_envs:
            env.close()
        self.reporter.close()


def build_training(cfg: DictConfig | Mapping[str, Any], run_dir: str | Path | None = None,
                   silent: bool | None = None) -> TrainingRun:
    """Assemble env factory, model, algorithm, runner, evaluator and outputs from a ``conf_train`` config."""
    from maze_engine.perception.composers.model import build_model_composers
    from maze_engine.policies.torch_io import save_torch_policy

    config: dict[str, Any] = dict(OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig)
                                  else cfg)  # type: ignore[arg-type]
    for key in ("env", "model", "algorithm", "runner"):
        if config.get(key) is None:
            raise ConfigError(f"{key}: missing from the training config (expected a {key} config group "
                              "entry)")
    algorithm_config = build_algorithm_config(config["algorithm"])
    runner_config = TrainingRunnerConfig.from_config(config["runner"])
    silent = bool(config.get("silent", False)) if silent is None else silent
    directory = Path(run_dir) if run_dir is not None else _default_run_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(yaml.safe_dump(loggable_config(config), sort_keys=False),
                                         encoding="utf-8")
    seeding = config.get("seeding") or {}
    if seeding.get("agent_base_seed") is not None:
        torch.manual_seed(int(seeding["agent_base_seed"]))

    env_factory = EnvFactory(config["env"], config.get("wrappers"))
    template_env = env_factory()
    check_single_actor(template_env)
    _estimate_normalization(template_env, env_factory, runner_config, directory)

    policy_composer, critic_composer = build_model_composers(config["model"], template_env)
    if critic_composer is None:
        raise ConfigError("model.critic: missing; A2C and PPO need a critic (e.g. critic=template_state)")
    policy, critic = policy_composer.policy, critic_composer.critic
    if config.get("input_dir"):
        _load_weights(Path(config["input_dir"]), policy, critic)
    spaces = (template_env.observation_spaces_dict, template_env.action_spaces_dict)
    agent_counts = template_env.agent_counts_dict
    model_config = config["model"]
    template_env.close()

    def save_model() -> None:
        save_torch_policy(directory, policy, model_config, spaces[0], spaces[1], critic=critic,
                          agent_counts_dict=agent_counts)

    model_selection = BestModelSelection(save=save_model)
    eval_envs: list[StructuredEnv] = []
    evaluator = None
    if algorithm_config.eval_repeats > 0:
        n_eval_envs = min(runner_config.n_eval_envs, algorithm_config.eval_repeats)
        eval_envs = [env_factory() for _ in range(n_eval_envs)]
        for index, env in enumerate(eval_envs):
            env.seed(_offset_seed(seeding.get("env_base_seed"), 100_000 + index))
        evaluator = RolloutEvaluator(eval_envs, algorithm_config.eval_repeats, model_selection,
                                     deterministic=algorithm_config.deterministic_eval)
    venv = runner_config.make_vector_env(env_factory)
    try:
        venv.seed(seeding.get("env_base_seed"))
        reporter = TrainingReporter(directory, silent=silent)
        trainer = trainer_class(algorithm_config)(algorithm_config, venv, policy, critic, evaluator=evaluator,
                                                  model_selection=model_selection, reporter=reporter)
    except BaseException:
        venv.close()
        raise
    return TrainingRun(trainer, policy, critic, env_factory, directory, model_selection, save_model, reporter,
                       eval_envs)


def train_from_config(cfg: DictConfig | Mapping[str, Any],
                      run_dir: str | Path | None = None) -> dict[str, Stats]:
    """Train as ``cfg`` says and return the last epoch's statistics by section (``train``, ``eval``...).

    ``run_dir`` defaults to Hydra's output directory inside a Hydra app, else the working directory.
    """
    run = build_training(cfg, run_dir)
    try:
        return run.train()
    finally:
        run.close()


def _default_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def _offset_seed(base: Any, offset: int) -> int | None:
    return None if base is None else int(base) + offset


def _estimate_normalization(env: StructuredEnv, factory: EnvFactory, runner: TrainingRunnerConfig,
                            directory: Path) -> None:
    """Estimate normalization statistics once, write them to the run directory and hand them to every env."""
    wrapper = _normalization_wrapper(env)
    if wrapper is None:
        return
    if wrapper.missing_statistics():
        wrapper.estimate_statistics(runner.normalization_samples)
    wrapper.save_statistics(directory / NORMALIZATION_FILE)
    factory.statistics = {key: value for key, value in wrapper.get_statistics().items() if value is not None}


def _load_weights(input_dir: Path, policy: Any, critic: Any) -> None:
    """Continue from a previous run: load its ``state_dict.pt`` (weights only) into policy and critic."""
    from maze_engine.policies.torch_io import STATE_DICT_FILE, load_state_dict_file

    path = input_dir / STATE_DICT_FILE
    if not path.is_file():
        raise ConfigError(f"input_dir: {path} not found; expected a training run directory with "
                          f"{STATE_DICT_FILE}")
    state = load_state_dict_file(path)
    policy.load_state_dict(state["policy"])
    if "critic" in state:
        critic.load_state_dict(state["critic"])
