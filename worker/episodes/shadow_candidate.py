"""A shadow candidate: a policy version that acts on the same states as the served one, never answered with.

While a release runs a shadow (``maze-worker policies shadow NAME VERSION``), every new episode gets a second
deployment from the shadow's source. Each state the episode steps goes through that deployment's own wrapper
stack too, in one policy call per batch, and two things are compared: the shadow's action with the served one
(agreement), and the shadow's log-probability of the *served* action with the served policy's own (the
step's importance ratio, from which ``worker/serving/candidate_figures.py`` estimates the shadow's return by
off-policy evaluation). An episode keeps its shadow to its end, as it keeps its served version.

The shadow never touches a reply: a shadow that fails (its factory, its stack, its policy) is dropped from
that episode, counted and logged, and the episode goes on. Episodes handed over from another worker carry no
shadow (the shadow's stack would need the whole episode replayed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from maze_engine.core.errors import MazeError
from maze_engine.deployment.agent_deployment import AgentDeployment
from maze_engine.evaluation.candidate import Candidate, candidate_of
from worker.episodes.batching import act_one_source
from worker.episodes.open_episode import OpenEpisode
from worker.episodes.sources import DeploymentSource, PolicySources, version_of
from worker.episodes.spaces import same_action
from worker.wire.protocol import StateMessage

logger = logging.getLogger(__name__)

MAX_WEIGHED_STEPS = 100_000
"""Longest episode whose ratios and rewards are kept for the return estimate; a longer one is left out of
it (its lists freed), so an endless episode cannot grow them without bound."""
BatchCounts = Callable[[int | None, int, int, int], None]
"""``(shadow version, decisions, agreed, errors)`` of one batch."""
Finished = Callable[[int | None, np.ndarray, np.ndarray], None]
"""``(shadow version, per-step log importance ratios, per-step rewards)`` of an episode ended with done
whose ratios are all known."""


class ShadowRun:
    """The shadow of one episode: its deployment and what it has gathered so far."""

    __slots__ = ("deployment", "source", "version", "decisions", "log_ratios", "rewards", "weighable", "last")

    def __init__(self, deployment: AgentDeployment, source: DeploymentSource) -> None:
        self.deployment = deployment
        self.source = source
        self.version = version_of(source)
        self.decisions = 0
        self.log_ratios: list[float] = []
        """log pi_shadow(a|o) - log pi_served(a|o) of each served action ``a``."""
        self.rewards: list[float] = []
        """The reward that followed each served action."""
        self.weighable = True
        """False once a ratio is unknown: the producer applied another action than the served one, the served
        policy reports no log-probability, or the shadow could not score the action."""
        self.last: tuple[int | None, Any, float | None] | None = None
        """(version, action, log-probability of the served action) of the latest state: what the episode's
        recorded experience keeps beside the served step."""


class Shadowing:
    """The episode table's collaborator for shadow candidates (see the module docstring)."""

    def __init__(self, deterministic: bool = False, on_batch: BatchCounts | None = None,
                 on_finished: Finished | None = None) -> None:
        self.deterministic = deterministic
        """Served actions are argmax ones: their log-probabilities are no propensities, so no ratios."""
        self.on_batch = on_batch
        self.on_finished = on_finished
        self.running = 0
        """Open episodes with a shadow (the table asks for served log-probabilities while any run)."""
        self.sources: PolicySources | None = None
        """The table's sources (``attach``): where the shadow comes from, and who counts its users."""
        self._candidate_of: tuple[DeploymentSource, Candidate | None] | None = None
        """The shadow source last scored with, and its candidate (None: its policy cannot say)."""

    def attach(self, sources: PolicySources) -> None:
        self.sources = sources

    def open(self, episode: OpenEpisode) -> None:
        """Give a new episode the release's shadow, if one runs."""
        sources = self.sources
        source = None if sources is None else sources.shadow
        if sources is None or source is None:
            return
        try:
            deployment = source.create()
        except Exception as err:  # noqa: BLE001 - the shadow must never cost the episode
            logger.warning("episode %s: the shadow candidate's deployment cannot be created (%s); the "
                           "episode runs without it", episode.episode, err)
            self._count(version_of(source), 0, 0, 1)
            return
        sources.acquire(source)
        episode.shadow = ShadowRun(deployment, source)
        self.running += 1

    def step(self, messages: Sequence[StateMessage], acting: Sequence[tuple[int, OpenEpisode]],
             inputs: Sequence[tuple[Any, ...]], results: Sequence[Any], served_actions: Sequence[list[Any]],
             served_log_probs: Sequence[list[Any]], applied: Mapping[int, Any]) -> None:
        """The shadows of the acting episodes act on the same ``inputs`` (positional ``observe`` arguments);
        compared with the served ``results``. ``applied``: the checked applied actions by message index."""
        groups: dict[int, list[int]] = {}
        for number, (index, episode) in enumerate(acting):
            shadow = episode.shadow
            if shadow is None or isinstance(results[number], BaseException):
                continue
            self._outcome(shadow, episode, messages[index].reward, applied.get(index))
            groups.setdefault(id(shadow.source), []).append(number)
        for numbers in groups.values():
            self._step_group(acting, numbers, inputs, results, served_actions, served_log_probs)

    def finish(self, episode: OpenEpisode, message: StateMessage, applied: Any) -> None:
        """The episode ended with done: its ratios and rewards go to ``on_finished``."""
        shadow = episode.shadow
        if shadow is None or not shadow.decisions:
            return
        self._outcome(shadow, episode, message.reward, applied)
        if shadow.weighable and len(shadow.log_ratios) == shadow.decisions and self.on_finished is not None \
                and not self.deterministic:
            self.on_finished(shadow.version, np.asarray(shadow.log_ratios, dtype=np.float64),
                             np.asarray(shadow.rewards, dtype=np.float64))

    @staticmethod
    def _outcome(shadow: ShadowRun, episode: OpenEpisode, reward: float | None, applied: Any) -> None:
        """What followed the previous served action: its reward, and whether the producer applied it."""
        if not shadow.decisions:
            return
        if reward is None or shadow.decisions > MAX_WEIGHED_STEPS \
                or applied is not None and not same_action(episode.proposed, applied.sample):
            shadow.weighable = False
        if shadow.weighable and reward is not None:
            shadow.rewards.append(reward)
        elif shadow.log_ratios or shadow.rewards:  # nothing of this episode reaches the estimate
            shadow.log_ratios, shadow.rewards = [], []

    def drop(self, episode: OpenEpisode) -> None:
        """The episode closes or leaves, or its shadow failed: the shadow ends and its source is released."""
        shadow, episode.shadow = episode.shadow, None
        if shadow is None:
            return
        self.running -= 1
        shadow.deployment.abort(MazeError("the shadow candidate's episode ended"))
        if self.sources is not None:
            self.sources.release(shadow.source)

    # -- internals -----------------------------------------------------------------------------------------

    def _step_group(self, acting: Sequence[tuple[int, OpenEpisode]], numbers: list[int],
                    inputs: Sequence[tuple[Any, ...]], results: Sequence[Any],
                    served_actions: Sequence[list[Any]], served_log_probs: Sequence[list[Any]]) -> None:
        shadows: list[ShadowRun] = [acting[number][1].shadow for number in numbers]
        source = shadows[0].source
        actions: list[list[Any]] = []
        observations: list[list[Any]] = []
        shadow_results = act_one_source([(shadow.deployment, inputs[number])
                                         for shadow, number in zip(shadows, numbers, strict=True)],
                                        source, self.deterministic, actions, observations)
        agreed = errors = 0
        scored: list[int] = []
        for position, (shadow, number) in enumerate(zip(shadows, numbers, strict=True)):
            result = shadow_results[position]
            if isinstance(result, BaseException):
                errors += 1
                self._fail(acting[number][1], result)
                continue
            shadow.decisions += 1
            shadow.last = (shadow.version, actions[position][0] if actions[position] else None, None)
            agreed += same_action(results[number], result)
            if shadow.weighable and observations[position] and served_actions[number] \
                    and served_log_probs[number] and served_log_probs[number][0] is not None:
                scored.append(position)
            else:
                shadow.weighable = False
        if scored and not self.deterministic:
            self._score(source, [shadows[position] for position in scored],
                        [observations[position][0] for position in scored],
                        [served_actions[numbers[position]][0] for position in scored],
                        [served_log_probs[numbers[position]][0] for position in scored])
        self._count(shadows[0].version, len(numbers) - errors, agreed, errors)

    def _score(self, source: DeploymentSource, shadows: list[ShadowRun], observations: list[Any],
               actions: list[Any], served: list[float]) -> None:
        """Each shadow's log-probability of the served action, as a log ratio to the served one's."""
        candidate = self._candidate(source)
        try:
            if candidate is None:
                raise TypeError("the shadow policy has no log-probabilities")
            log_probs = candidate.log_probs(batched(observations), batched(actions))
        except Exception as err:  # noqa: BLE001 - scoring is optional; agreement is still counted
            logger.warning("the shadow candidate cannot score the served actions (%s); no return estimate "
                           "for these episodes", err)
            for shadow in shadows:
                shadow.weighable = False
            return
        for shadow, log_prob, behaviour in zip(shadows, log_probs, served, strict=True):
            shadow.log_ratios.append(float(log_prob) - float(behaviour))
            if shadow.last is not None:
                shadow.last = (shadow.last[0], shadow.last[1], float(log_prob))

    def _candidate(self, source: DeploymentSource) -> Candidate | None:
        if self._candidate_of is None or self._candidate_of[0] is not source:  # one shadow at a time
            try:
                candidate: Candidate | None = candidate_of(source.policy)
            except Exception:  # noqa: BLE001 - a policy kind without log-probabilities: agreement only
                candidate = None
            self._candidate_of = (source, candidate)
        return self._candidate_of[1]

    def _fail(self, episode: OpenEpisode, err: BaseException) -> None:
        logger.warning("episode %s: the shadow candidate failed (%s: %s); the episode goes on without it",
                       episode.episode, type(err).__name__, err)
        self.drop(episode)

    def _count(self, version: int | None, decisions: int, agreed: int, errors: int) -> None:
        if self.on_batch is not None:
            self.on_batch(version, decisions, agreed, errors)


def batched(values: Sequence[Any]) -> Any:
    """Per-step observations or actions (maps of arrays, numbers) as one batch: maps of stacked arrays."""
    first = values[0]
    if isinstance(first, Mapping):
        return {key: batched([value[key] for value in values]) for key in first}
    return np.stack([np.asarray(value) for value in values])
