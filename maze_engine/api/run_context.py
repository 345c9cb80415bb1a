"""RunContext: train, roll out and evaluate from Python with the same configs as ``maze-run -cn conf_train``.

The config is composed in-process with Hydra's compose API (no ``sys.argv``, no change of working directory,
Hydra's global state and the logging handlers restored afterwards). Each argument may name a config group
option (``algorithm="ppo"``), carry a config mapping, or carry a ready Python object (an env factory, a
composer, an ``A2CAlgorithmConfig``); objects are put into the composed config after composition.
"""

import contextlib
import datetime
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from maze_engine.core.actor_id import ActorID
from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.training.config import AlgorithmConfig, BCAlgorithmConfig, PPOAlgorithmConfig

TRAIN_CONFIG = "conf_train"
_PRIMITIVES = (str, int, float, bool, type(None))


def _is_plain(value: Any) -> bool:
    """Whether OmegaConf can hold ``value`` (primitives, and dicts and lists of them)."""
    if isinstance(value, _PRIMITIVES):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(key, str | int) and _is_plain(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return all(_is_plain(item) for item in value)
    return False


def _set_path(config: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Put ``value`` at ``a.b.c`` in a plain nested dict (intermediate dicts are created)."""
    node = config
    *parents, leaf = dotted_key.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


@contextmanager
def preserved_process_state() -> Iterator[None]:
    """Restore ``sys.argv``, the working directory and the root logger's handlers and level on exit."""
    argv, cwd = list(sys.argv), os.getcwd()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        sys.argv[:] = argv
        if os.getcwd() != cwd:
            os.chdir(cwd)
        root.handlers[:] = handlers
        root.setLevel(level)


def _default_run_dir() -> Path:
    """``outputs/<date>/<time>`` under the working directory, like the CLI (made unique if taken)."""
    stamp = datetime.datetime.now()
    base = Path("outputs") / stamp.strftime("%Y-%m-%d") / stamp.strftime("%H-%M-%S")
    candidate, counter = base, 1
    while candidate.exists():
        candidate = base.with_name(f"{base.name}-{counter}")
        counter += 1
    return candidate


class RunContext:
    """Training, rollout and evaluation of an agent from Python, configured like ``maze-run -cn conf_train``.

    Args:
        env: a zero-argument factory returning a StructuredEnv (``lambda: GymMazeEnv("CartPole-v1")``), an
            ``env`` config option name or a config mapping. Instances are not accepted: training builds
            several envs (and, with ``runner="local"``, builds them in worker processes).
        wrappers: a ``wrappers`` option name, or a wrappers config (``{class path: kwargs}`` or a list).
        algorithm: ``"a2c"``, ``"ppo"`` or ``"bc"``, a mapping of hyperparameters, or an
            A2C/PPO/BCAlgorithmConfig.
        model: a ``model`` option name (``"vector_obs"``, ``"flatten_concat"``) or a model config mapping.
        policy: the policy composer (``model.policy``): a ProbabilisticPolicyComposer or its config mapping.
        critic: a ``critic`` option name (``"template_state"``), a critic composer or its config mapping.
        runner: ``"dev"`` (envs in this process) or ``"local"`` (envs in worker processes), or a mapping.
        overrides: dotted keys -> values (``{"env.name": "CartPole-v1", "runner.n_envs": 8}``); values may be
            plain values, mappings or Python objects. Option names in values are not resolved.
        silent: no console tables and progress bars.
        run_dir: where the run directory goes (default ``outputs/<date>/<time>``).
        dataset: ``algorithm="bc"`` only: the Minari dataset to learn from (an id or a path).
        configuration: an option of a ``configuration`` config group, when the config tree has one.

    With ``runner="local"`` in a script, keep the script's top-level code under
    ``if __name__ == "__main__":``; the env workers import the main module when they start.
    """

    def __init__(self, env: Any = None, wrappers: Any = None, algorithm: Any = None, model: Any = None,
                 policy: Any = None, critic: Any = None, runner: Any = None,
                 overrides: Mapping[str, Any] | None = None, silent: bool = False,
                 run_dir: str | Path | None = None, configuration: str | None = None,
                 dataset: str | os.PathLike[str] | None = None) -> None:
        if isinstance(env, StructuredEnv):
            raise ConfigError("env: expected a factory returning an env (e.g. lambda: "
                              "GymMazeEnv('CartPole-v1')), an env config name or mapping; got an instance")
        self.silent = bool(silent)
        self.run_dir = Path(run_dir) if run_dir is not None else _default_run_dir()
        group_choices: list[str] = []
        values: dict[str, Any] = {}
        for group, value in (("env", env), ("wrappers", wrappers), ("model", model), ("critic", critic),
                             ("runner", runner), ("configuration", configuration)):
            if isinstance(value, str):
                group_choices.append(f"{group}={value}")
            elif value is not None:
                values["model.critic" if group == "critic" else group] = value
        if isinstance(algorithm, str):
            group_choices.append(f"algorithm={algorithm}")
        elif isinstance(algorithm, AlgorithmConfig | BCAlgorithmConfig):
            name = ("bc" if isinstance(algorithm, BCAlgorithmConfig) else
                    "ppo" if isinstance(algorithm, PPOAlgorithmConfig) else "a2c")
            group_choices.append(f"algorithm={name}")
            values["algorithm"] = algorithm.to_dict()
        elif isinstance(algorithm, Mapping):
            if "validation_fraction" in algorithm:  # only behavioural cloning holds data out
                group_choices.append("algorithm=bc")
            elif "batch_size" in algorithm:  # of the on-policy algorithms, only PPO has mini-batches
                group_choices.append("algorithm=ppo")
            values["algorithm"] = dict(algorithm)
        elif algorithm is not None:
            raise ConfigError(f"algorithm: expected 'a2c', 'ppo', 'bc', a mapping or an algorithm config "
                              f"object, got {type(algorithm).__name__}")
        if dataset is not None:
            values["dataset"] = os.fspath(dataset)
        if policy is not None:
            values["model.policy"] = policy
        values.update(dict(overrides or {}))
        values["silent"] = self.silent
        self.config = self._compose(group_choices, values)
        self._run: Any = None

    # ------------------------------------------------------------------------------------------ config
    @staticmethod
    def _compose(group_choices: list[str], values: Mapping[str, Any]) -> dict[str, Any]:
        from hydra.errors import HydraException

        from maze_engine.config import compose_config

        with preserved_process_state():
            try:
                composed = compose_config(TRAIN_CONFIG, group_choices)
            except (HydraException, OmegaConfBaseException) as err:
                raise ConfigError(f"config: cannot compose {TRAIN_CONFIG} with {group_choices}: "
                                  f"{err}") from err
        objects: dict[str, Any] = {}
        for key, value in values.items():
            if not _is_plain(value):
                objects[key] = value
                continue
            # Plain values go through OmegaConf, so the schemas check them (``algorithm.lr="abc"`` fails).
            try:
                _update(composed, key, value)
            except OmegaConfBaseException as err:
                raise ConfigError(f"{key}: {err}") from err
        config: dict[str, Any] = OmegaConf.to_container(composed, resolve=True)  # type: ignore[assignment]
        for key, value in objects.items():
            _set_path(config, key, value)
        return config

    # ---------------------------------------------------------------------------------------- training
    def _training_run(self) -> Any:
        if self._run is None:
            from maze_engine.training.launch import build_training

            with preserved_process_state():
                self._run = build_training(self.config, run_dir=self.run_dir, silent=self.silent)
        return self._run

    def train(self, n_epochs: int | None = None, **kwargs: Any) -> dict[str, dict[str, dict[str, float]]]:
        """Train (``n_epochs`` overrides the config's; other keyword arguments go to the trainer's ``train``,
        e.g. ``stop_when``); returns the last epoch's statistics by section. Calling it again continues."""
        run = self._training_run()
        with preserved_process_state():
            return run.train(n_epochs=n_epochs, **kwargs)

    @property
    def policy(self) -> Any:
        """The trained (or, before ``train``, freshly initialised) TorchPolicy."""
        return self._training_run().policy

    @property
    def trainer(self) -> Any:
        """The A2C, PPO or behavioural cloning trainer."""
        return self._training_run().trainer

    @property
    def env_factory(self) -> Callable[[], StructuredEnv]:
        """Builds an env with the configured wrappers (and the run's normalization statistics)."""
        return self._training_run().env_factory

    def compute_action(self, observation: dict[str, Any], actor_id: ActorID | None = None,
                       deterministic: bool = False) -> dict[str, Any]:
        """The policy's action for one observation of an env built like the training envs."""
        return self.policy.compute_action(observation, actor_id, deterministic)

    # ------------------------------------------------------------------------------ rollout / evaluation
    def rollout(self, n_episodes: int = 10, max_episode_steps: int | None = None, deterministic: bool = False,
                record_trajectory: bool = False, record_event_logs: bool = False, render: bool = False,
                seed: int | None = None, output_dir: str | Path | None = None) -> dict[str, dict[str, float]]:
        """Roll the policy out with a sequential rollout runner; returns ``{metric: {mean, std, ...}}``.

        Trajectories and event logs (when recorded) and ``stats.tsv`` go to ``output_dir`` (default:
        ``<run_dir>/rollout``).
        """
        from maze_engine.rollout.sequential import SequentialRolloutRunner

        runner = SequentialRolloutRunner(n_episodes=n_episodes, max_episode_steps=max_episode_steps,
                                         deterministic=deterministic, record_trajectory=record_trajectory,
                                         record_event_logs=record_event_logs, render=render, seed=seed,
                                         silent=self.silent)
        directory = Path(output_dir) if output_dir is not None else self.run_dir / "rollout"
        run = self._training_run()
        with preserved_process_state():
            return runner.run_with(env=run.env_factory, wrappers=None, agent=run.policy, output_dir=directory)

    def evaluate(self, n_episodes: int = 10, deterministic: bool = False, n_envs: int = 1,
                 max_episode_steps: int | None = None) -> dict[str, dict[str, float]]:
        """Evaluate the policy with a RolloutEvaluator over ``n_envs`` fresh envs; returns the statistics."""
        from maze_engine.training.evaluator import RolloutEvaluator

        run = self._training_run()
        envs = [run.env_factory() for _ in range(max(1, min(n_envs, n_episodes)))]
        try:
            evaluator = RolloutEvaluator(envs, n_episodes=n_episodes, deterministic=deterministic,
                                         max_episode_steps=max_episode_steps)
            return evaluator.evaluate(run.policy)
        finally:
            for env in envs:
                env.close()

    def close(self) -> None:
        """Release the training envs (worker processes included) and close the run's files."""
        if self._run is not None:
            self._run.close()

    def __enter__(self) -> "RunContext":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: modules may already be gone
            self.close()


def _update(config: DictConfig, key: str, value: Any) -> None:
    """Set ``key`` in the composed config: mappings replace the node, other values are merged and checked."""
    if isinstance(value, Mapping) and key not in ("algorithm", "runner"):
        # A new model.policy or env mapping replaces the old one entirely (no leftover keys).
        OmegaConf.update(config, key, dict(value), merge=False, force_add=True)
    else:
        OmegaConf.update(config, key, value, merge=True)
