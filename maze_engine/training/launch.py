"""Builds a training run from a composed ``conf_train`` config and runs it (for ``maze-run`` and RunContext).

The config may be a Hydra DictConfig or a plain mapping in which RunContext has put Python objects: an env
factory under ``env``, composer instances under ``model.policy`` / ``model.critic``, an algorithm config
object under ``algorithm``. The run directory receives ``config.yaml``, the model files of
``save_torch_policy`` (``state_dict.pt``, ``spaces.json``, ``model.yaml``), ``statistics.json`` when the env
normalizes observations, ``stats.tsv`` and TensorBoard event files, ``checkpoint.pt``, ``learning_curve.png``
and ``summary.json`` (``training.run``). ``algorithm=bc`` (behavioural cloning, ``training.bc``) learns from
the Minari dataset named by ``dataset`` instead of training envs, and trains the policy alone (no critic).
"""

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.core.factory import instantiate
from maze_engine.training.checkpoint import (
    check_same_config,
    comparable_config,
    read_checkpoint,
    restore_rng_states,
)
from maze_engine.training.config import (
    ALGORITHM_CONFIGS,
    AlgorithmConfig,
    BCAlgorithmConfig,
    TrainerConfig,
    algorithm_config_from_dict,
)
from maze_engine.training.epochs import EpochTrainer
from maze_engine.training.evaluator import BestModelSelection, RolloutEvaluator
from maze_engine.training.on_policy import OnPolicyTrainer, resolve_device
from maze_engine.training.reporting import TrainingReporter
from maze_engine.training.run import BestModelSaver, TrainingRun
from maze_engine.training.runners import TrainingRunnerConfig
from maze_engine.training.summary import TrainingSummary
from maze_engine.training.vector_env import check_single_actor

__all__ = ["EnvFactory", "TrainingRun", "build_algorithm_config", "build_training", "loggable_config",
           "set_torch_threads", "train_from_config", "trainer_class"]

logger = logging.getLogger(__name__)

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


def build_algorithm_config(config: Any) -> TrainerConfig:
    """The ``algorithm`` node as a config object: an instance, a name (``a2c``, ``ppo``, ``bc``) or a
    mapping."""
    if isinstance(config, AlgorithmConfig | BCAlgorithmConfig):
        return config
    if isinstance(config, str):
        if config not in ALGORITHM_CONFIGS:
            raise ConfigError(f"algorithm: expected one of {sorted(ALGORITHM_CONFIGS)}, got {config!r}")
        return ALGORITHM_CONFIGS[config]()
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if isinstance(config, Mapping) and "_target_" in config:
        built: Any = instantiate(config)
        if not isinstance(built, AlgorithmConfig | BCAlgorithmConfig):
            raise ConfigError(f"algorithm._target_: expected an algorithm config class, got "
                              f"{type(built).__name__}")
        return built
    if isinstance(config, Mapping):
        # Without a class path the keys decide: only BC holds data out, only PPO and BC have mini-batches.
        name = "bc" if "validation_fraction" in config else "ppo" if "batch_size" in config else "a2c"
        return algorithm_config_from_dict(ALGORITHM_CONFIGS[name], config)
    raise ConfigError(f"algorithm: expected 'a2c', 'ppo', 'bc', a mapping of hyperparameters or an "
                      f"A2C/PPO/BCAlgorithmConfig, got {type(config).__name__}")


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
    if isinstance(config, AlgorithmConfig | BCAlgorithmConfig):
        return {"_target_": f"{type(config).__module__}.{type(config).__name__}", **config.to_dict()}
    if isinstance(config, Mapping):
        return {str(key): loggable_config(value) for key, value in config.items()}
    if isinstance(config, list | tuple):
        return [loggable_config(value) for value in config]
    if config is None or isinstance(config, str | int | float | bool):
        return config
    name = getattr(config, "__qualname__", None) or type(config).__qualname__
    return f"<python object: {name}>"


def build_training(cfg: DictConfig | Mapping[str, Any], run_dir: str | Path | None = None,
                   silent: bool | None = None, resume: str | Path | None = None) -> TrainingRun:
    """Assemble env factory, model, algorithm, runner, evaluator and outputs from a ``conf_train`` config.

    ``resume`` (a run directory) continues that run from its ``checkpoint.pt``, in that directory; the
    config must match the checkpoint's (``training.checkpoint.RESUMABLE_KEYS`` may differ). Nothing is
    written to the run directory until everything is built, so a config mistake leaves no files behind.
    """
    from maze_engine.perception.composers.model import build_model_composers

    config: dict[str, Any] = dict(OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig)
                                  else cfg)  # type: ignore[arg-type]
    for key in ("env", "model", "algorithm", "runner"):
        if config.get(key) is None:
            raise ConfigError(f"{key}: missing from the training config (expected a {key} config group "
                              "entry)")
    algorithm_config = build_algorithm_config(config["algorithm"])
    cloning = isinstance(algorithm_config, BCAlgorithmConfig)
    dataset = _dataset(config.get("dataset"), cloning)
    runner_config = TrainingRunnerConfig.from_config(config["runner"])
    resolve_device(algorithm_config.device)
    every = _non_negative_int(config.get("checkpoint_every_epochs", 1), "checkpoint_every_epochs",
                              "0: only when training ends")
    silent = bool(config.get("silent", False)) if silent is None else silent
    logged = loggable_config(config)
    checkpoint = None
    if resume:
        directory = Path(resume)
        checkpoint = read_checkpoint(directory)
        check_same_config(checkpoint, logged, directory)
    else:
        directory = Path(run_dir) if run_dir is not None else _default_run_dir()
    seeding = config.get("seeding") or {}
    if seeding.get("agent_base_seed") is not None:
        torch.manual_seed(int(seeding["agent_base_seed"]))

    env_factory = EnvFactory(config["env"], config.get("wrappers"),
                             checkpoint.normalization if checkpoint is not None else None)
    template_env = env_factory()
    observation_space, action_space, actor_id = check_single_actor(template_env)
    normalizer = _share_normalization(template_env, env_factory, runner_config)
    normalization = dict(env_factory.statistics or {}) if normalizer is not None else None

    policy_composer, critic_composer = build_model_composers(config["model"], template_env)
    if critic_composer is None and not cloning:
        raise ConfigError("model.critic: missing; A2C and PPO need a critic (e.g. critic=template_state)")
    policy = policy_composer.policy
    # Behavioural cloning trains the policy alone: a critic would stay untrained, so none is kept.
    critic = None if cloning or critic_composer is None else critic_composer.critic
    samples = None
    if dataset is not None:
        from maze_engine.training.bc import dataset_samples

        assert isinstance(algorithm_config, BCAlgorithmConfig)

        samples = dataset_samples(dataset, observation_space, action_space, algorithm_config,
                                  int(seeding.get("agent_base_seed") or 0))
    if config.get("input_dir") and checkpoint is None:
        _load_weights(Path(config["input_dir"]), policy, critic)
    save_model = BestModelSaver(directory, policy, critic, config["model"],
                                template_env.observation_spaces_dict, template_env.action_spaces_dict,
                                template_env.agent_counts_dict)
    template_env.close()

    epoch = checkpoint.epoch if checkpoint is not None else 0
    model_selection = BestModelSelection(save=save_model)
    eval_envs: list[StructuredEnv] = []
    evaluator = None
    if algorithm_config.eval_repeats > 0:
        n_eval_envs = min(runner_config.n_eval_envs, algorithm_config.eval_repeats)
        eval_envs = [env_factory() for _ in range(n_eval_envs)]
        for index, env in enumerate(eval_envs):
            env.seed(_env_seed(seeding.get("env_base_seed"), 100_000 + index, epoch))
        evaluator = RolloutEvaluator(eval_envs, algorithm_config.eval_repeats, model_selection,
                                     deterministic=algorithm_config.deterministic_eval)
    venv = None if cloning else runner_config.make_vector_env(env_factory)
    try:
        if venv is not None:
            venv.seed(_env_seed(seeding.get("env_base_seed"), 0, epoch))
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(yaml.safe_dump(logged, sort_keys=False), encoding="utf-8")
        if normalizer is not None:
            normalizer.save_statistics(directory / NORMALIZATION_FILE)
        reporter = TrainingReporter(directory, silent=silent, first_epoch=epoch)
        trainer: EpochTrainer
        if samples is not None:
            from maze_engine.training.bc import BehaviouralCloning

            assert isinstance(algorithm_config, BCAlgorithmConfig)
            trainer = BehaviouralCloning(algorithm_config, policy, actor_id, *samples, evaluator=evaluator,
                                         model_selection=model_selection, reporter=reporter)
        else:
            assert venv is not None and isinstance(algorithm_config, AlgorithmConfig)
            trainer = trainer_class(algorithm_config)(algorithm_config, venv, policy, critic,
                                                      evaluator=evaluator, model_selection=model_selection,
                                                      reporter=reporter)
        if checkpoint is not None:
            if checkpoint.best_weights is not None:
                save_model.restore(checkpoint.best_weights)
            trainer.load_state_dict(checkpoint.trainer)
            restore_rng_states(checkpoint.rng)
    except BaseException:
        if venv is not None:
            venv.close()
        raise
    env_name = config["env"].get("name") if isinstance(config["env"], Mapping) else None
    title = f"{type(trainer).__name__}{f' on {env_name}' if env_name else ''}: {directory.resolve()}"
    if checkpoint is not None:
        logger.info("resuming %s at epoch %d (of %s)", directory, epoch, algorithm_config.n_epochs or "until "
                    "patience")
    else:
        logger.info("training %s in %s", title.split(":")[0], directory)
    return TrainingRun(trainer, policy, critic, env_factory, directory, model_selection, save_model, reporter,
                       eval_envs, config=comparable_config(logged), normalization=normalization,
                       checkpoint_every_epochs=every, resumed=checkpoint, title=title)


def train_from_config(cfg: DictConfig | Mapping[str, Any],
                      run_dir: str | Path | None = None) -> TrainingSummary:
    """Train as ``cfg`` says and return the run's summary (also ``summary.json`` in the run directory and,
    unless ``silent``, printed at the end, however training ends).

    This is ``maze-run -cn conf_train``: ``torch_threads`` sets torch's intra-op threads of this process and
    ``resume`` continues a run. ``run_dir`` defaults to Hydra's output directory inside a Hydra app, else
    the working directory.
    """
    config: dict[str, Any] = dict(OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig)
                                  else cfg)  # type: ignore[arg-type]
    set_torch_threads(config.get("torch_threads", 0))
    resume = config.get("resume") or None
    if resume is not None and not isinstance(resume, str | Path):
        raise ConfigError(f"resume: expected the path of a run directory, got {resume!r}")
    run = build_training(config, run_dir, resume=resume)
    try:
        run.train()
    finally:
        run.close()
        if run.summary is not None and not config.get("silent", False):
            print(run.summary.format(), flush=True)
    assert run.summary is not None, "TrainingRun.train always sums up"
    return run.summary


def set_torch_threads(threads: Any) -> None:
    """``torch_threads``: torch's intra-op threads for this process; 0 keeps torch's default (one per core).

    On-policy training on a CPU runs small nets: one thread is fastest per process, and several trainings on
    one machine do not fight over cores.
    """
    threads = _non_negative_int(threads, "torch_threads", "0: torch's default, one per core")
    if threads > 0:
        torch.set_num_threads(threads)


def _dataset(value: Any, cloning: bool) -> str | None:
    """The ``dataset`` key: required by behavioural cloning, refused by the on-policy algorithms."""
    if not cloning:
        if value:
            raise ConfigError(f"dataset: only algorithm=bc learns from a dataset; A2C and PPO learn from "
                              f"their envs, so leave dataset unset (got {value!r})")
        return None
    if not value or not isinstance(value, str | os.PathLike):
        raise ConfigError(f"dataset: algorithm=bc learns from a Minari dataset; expected dataset=<Minari id "
                          f"or path> (e.g. dataset=cartpole/expert-v0 or dataset=outputs/<date>/<time>/"
                          f"minari/cartpole/expert-v0), got {value!r}")
    return os.fspath(value)


def _non_negative_int(value: Any, field: str, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{field}: expected an integer >= 0 ({meaning}), got {value!r}")
    return value


def _default_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def _env_seed(base: Any, offset: int, epoch: int) -> int | None:
    """The seed of env ``offset`` (plus its index); a resumed run draws new episodes, not epoch 0's again."""
    if base is None:
        return None
    if epoch == 0:
        return int(base) + offset
    return int(np.random.SeedSequence([int(base), epoch]).generate_state(1)[0]) + offset


def _share_normalization(env: StructuredEnv, factory: EnvFactory, runner: TrainingRunnerConfig) -> Any:
    """Estimate normalization statistics once (unless the factory brings them, from a checkpoint) and hand
    them to every env the factory builds; returns the normalization wrapper (None: the env has none)."""
    wrapper = _normalization_wrapper(env)
    if wrapper is None:
        return None
    if wrapper.missing_statistics():
        wrapper.estimate_statistics(runner.normalization_samples)
    factory.statistics = {key: value for key, value in wrapper.get_statistics().items() if value is not None}
    return wrapper


def _load_weights(input_dir: Path, policy: Any, critic: Any) -> None:
    """Continue from a previous run: load its ``state_dict.pt`` (weights only) into policy and critic."""
    from maze_engine.policies.torch_io import STATE_DICT_FILE, load_state_dict_file

    path = input_dir / STATE_DICT_FILE
    if not path.is_file():
        raise ConfigError(f"input_dir: {path} not found; expected a training run directory with "
                          f"{STATE_DICT_FILE}")
    state = load_state_dict_file(path)
    policy.load_state_dict(state["policy"])
    if "critic" in state and critic is not None:
        critic.load_state_dict(state["critic"])
