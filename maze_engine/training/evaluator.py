"""RolloutEvaluator: runs a policy for a number of episodes and reports their statistics; BestModelSelection.

Trainers evaluate after every epoch; the evaluator feeds the mean episode return to its model selection,
which saves the policy when it is the best so far and counts the epochs since the last improvement (for
``patience``).
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.training.acting import batch_actions
from maze_engine.training.vector_env import check_single_actor
from maze_engine.wrappers.logging.log_stats import EPISODE_RETURN, LogStatsWrapper
from maze_engine.wrappers.wrapper import find_wrapper


class BestModelSelection:
    """Remembers the best score so far; calls ``save`` on every new best.

    A ``tiebreak`` (higher is better) decides between equal scores: behavioural cloning passes its negative
    validation loss, so once the return cannot rise (CartPole's 500) the model that imitates best wins.

    >>> selection = BestModelSelection()
    >>> selection.update(10.0, epoch=0), selection.update(5.0, epoch=1), selection.epochs_without_improvement
    (True, False, 1)
    >>> selection.best_score, selection.best_epoch
    (10.0, 0)
    """

    def __init__(self, save: Callable[[], None] | None = None, min_improvement: float = 0.0) -> None:
        self.save = save
        self.min_improvement = min_improvement
        self.best_score = -math.inf
        self.best_epoch: int | None = None
        """The epoch whose evaluation scored ``best_score`` (None before the first score, or unknown)."""
        self.epochs_without_improvement = 0
        self.best_tiebreak: float | None = None
        """The tiebreak of the best score (None: none was given)."""

    def update(self, score: float, epoch: int | None = None, tiebreak: float | None = None) -> bool:
        """Record the score of ``epoch``'s evaluation; True (and the model saved) if it is a new best: a
        higher score, or the same score with a higher ``tiebreak``."""
        if math.isnan(score):
            self.epochs_without_improvement += 1
            return False
        tied_but_better = (tiebreak is not None and score == self.best_score
                           and (self.best_tiebreak is None or tiebreak > self.best_tiebreak))
        if score > self.best_score + self.min_improvement or self.best_score == -math.inf or tied_but_better:
            self.best_score = score
            self.best_tiebreak = tiebreak
            self.best_epoch = epoch
            self.epochs_without_improvement = 0
            if self.save is not None:
                self.save()
            return True
        self.epochs_without_improvement += 1
        return False

    def state_dict(self) -> dict[str, Any]:
        """The selection's progress as plain values (for training checkpoints)."""
        return {"best_score": float(self.best_score), "best_epoch": self.best_epoch,
                "epochs_without_improvement": self.epochs_without_improvement,
                "best_tiebreak": self.best_tiebreak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``'s values; the saved model files are the caller's business."""
        self.best_score = float(state["best_score"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        tiebreak = state.get("best_tiebreak")
        self.best_tiebreak = None if tiebreak is None else float(tiebreak)


class RolloutEvaluator:
    """Runs ``n_episodes`` with a policy in ``eval_env`` and returns their statistics.

    ``eval_env`` is one env or a list of envs (the episodes are spread over them and all of them act in one
    batched forward pass). An env without a LogStatsWrapper gets one (prefix ``eval``). ``deterministic``
    takes the policy's most likely action; ``max_episode_steps`` cuts longer episodes (counted as truncated).
    """

    def __init__(self, eval_env: StructuredEnv | Sequence[StructuredEnv], n_episodes: int,
                 model_selection: BestModelSelection | None = None, deterministic: bool = False,
                 max_episode_steps: int | None = None) -> None:
        envs = list(eval_env) if isinstance(eval_env, Sequence) else [eval_env]
        if not envs or not all(isinstance(env, StructuredEnv) for env in envs):
            raise ConfigError("eval_env: expected a StructuredEnv (e.g. GymMazeEnv(...)) or a non-empty "
                              "list of them")
        if not isinstance(n_episodes, int) or n_episodes < 1:
            raise ConfigError(f"n_episodes: expected an integer >= 1, got {n_episodes!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ConfigError(f"max_episode_steps: expected an integer >= 1 or None, "
                              f"got {max_episode_steps!r}")
        self._stats: list[LogStatsWrapper] = []
        self.envs: list[StructuredEnv] = []
        for env in envs:
            stats = find_wrapper(env, LogStatsWrapper)
            if stats is None:
                env = stats = LogStatsWrapper.wrap(env, logging_prefix="eval")
            self.envs.append(env)
            self._stats.append(stats)
        self.eval_env = self.envs[0]
        _, _, self.actor_id = check_single_actor(self.envs[0])
        self.n_episodes = n_episodes
        self.model_selection = model_selection
        self.deterministic = deterministic
        self.max_episode_steps = max_episode_steps

    def evaluate(self, policy: Any, epoch: int | None = None,
                 tiebreak: float | None = None) -> dict[str, dict[str, float]]:
        """Run the episodes, feed the mean return (as ``epoch``'s score, with ``tiebreak``) to the model
        selection and return the statistics.

        The statistics are published through the eval env's LogStatsWrapper (to the registered writers).
        """
        was_training = getattr(policy, "training", False)
        if hasattr(policy, "eval"):
            policy.eval()
        try:
            self._run_episodes(policy)
        finally:
            if was_training:
                policy.train()
        first = self._stats[0]
        for other in self._stats[1:]:
            first.merge_epoch_aggregates(other.epoch_aggregates())
            other.clear_epoch_stats()
        stats = first.write_epoch_stats()
        if self.model_selection is not None:
            self.model_selection.update(stats[EPISODE_RETURN]["mean"], epoch, tiebreak)
        return stats

    def _run_episodes(self, policy: Any) -> None:
        # Each env runs its share of the episodes; all running envs act in one batched forward pass.
        n_envs = min(len(self.envs), self.n_episodes)
        quotas = [self.n_episodes // n_envs + (1 if index < self.n_episodes % n_envs else 0)
                  for index in range(n_envs)]
        observations = {index: self.envs[index].reset() for index in range(n_envs)}
        lengths = dict.fromkeys(observations, 0)
        while observations:
            active = list(observations)
            stacked = {key: np.stack([observations[index][key] for index in active])
                       for key in observations[active[0]]}
            actions = batch_actions(policy, stacked, self.actor_id, self.deterministic)
            for position, index in enumerate(active):
                env = self.envs[index]
                observation, _, done, _ = env.step({key: value[position] for key, value in actions.items()})
                lengths[index] += 1
                cut = self.max_episode_steps is not None and lengths[index] >= self.max_episode_steps
                if done or cut:
                    quotas[index] -= 1
                    lengths[index] = 0
                    if quotas[index] > 0:
                        observation = env.reset()
                    else:
                        del observations[index]
                        if cut and not done:
                            env.reset()  # the LogStatsWrapper counts a cut episode when the next one starts
                        continue
                observations[index] = observation
