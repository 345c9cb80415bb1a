"""SequentialRolloutRunner: episodes one after another in this process (debugging, rendering, single runs)."""

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maze_engine.core.actor_id import ActorID
from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.policies.policy import StructuredPolicy
from maze_engine.rollout.components import build_env, build_policy
from maze_engine.rollout.render import StepRenderer, choose_render_mode
from maze_engine.rollout.runner import Aggregates, RolloutRunner, derive_seeds

if TYPE_CHECKING:
    from maze_engine.wrappers.recording.minari import MinariRecordingWrapper


def run_episode(env: StructuredEnv, policy: StructuredPolicy, deterministic: bool) -> None:
    """Run one episode to ``done``: the hot loop, kept to a policy call and an env step per iteration."""
    policy.reset()
    observation = env.reset()
    # Bound methods looked up once: attribute lookups through the wrapper stack are the loop's main overhead.
    step = env.step
    compute_action = policy.compute_action
    done = False
    if list(env.agent_counts_dict.values()) == [1]:
        # One step key, one agent: the actor never changes, so skip asking the whole stack every step.
        actor = env.actor_id()
        while not done:
            observation, _, done, _ = step(compute_action(observation, actor, deterministic))
        return
    actor_id = env.actor_id
    while not done:
        observation, _, done, _ = step(compute_action(observation, actor_id(), deterministic))


def sample_with_log_prob(policy: Any, observation: dict[str, Any],
                         actor_id: ActorID) -> tuple[dict[str, Any], float | None]:
    """A sampled action of a policy with ``reports_log_probs`` and the log-probability the policy gave it
    (None where it cannot say), both from one call, as ``deployment.batch`` asks for them."""
    log_probs: list[float | None] = []
    action = policy.compute_actions([observation], actor_id, False, log_probs_out=log_probs)[0]
    return action, log_probs[0] if len(log_probs) == 1 else None


def run_logged_episode(recorder: "MinariRecordingWrapper", policy: Any) -> None:
    """``run_episode`` for a stack topped by a MinariRecordingWrapper and a sampling policy that reports
    log-probabilities: each step hands the recorder the log-probability of its action."""
    policy.reset()
    observation = recorder.reset()
    actor = recorder.actor_id()  # the recorder takes envs with one actor only
    step = recorder.step
    done = False
    while not done:
        action, log_prob = sample_with_log_prob(policy, observation, actor)
        observation, _, done, _ = step(action, log_prob)


class SequentialRolloutRunner(RolloutRunner):
    """Runs all episodes in the calling process; can render them.

    Besides the arguments of RolloutRunner, ``render=True`` shows every step: a window where a display is
    available, otherwise saved frames or text (see ``rollout.render``).

    >>> from maze_engine import GymMazeEnv, RandomPolicy
    >>> import tempfile
    >>> env = GymMazeEnv("CartPole-v1")
    >>> runner = SequentialRolloutRunner(n_episodes=3, max_episode_steps=10, seed=1, silent=True)
    >>> stats = runner.run_with(env=env, wrappers={}, agent=RandomPolicy(env.action_spaces_dict),
    ...                         output_dir=tempfile.mkdtemp())
    >>> stats["episode_length"]["count"]
    3
    """

    def __init__(self, n_episodes: int = 10, max_episode_steps: int | None = None,
                 deterministic: bool = False, record_trajectory: bool = False,
                 record_event_logs: bool = False, render: bool = False, seed: int | None = None,
                 silent: bool = False, record_minari: str | None = None) -> None:
        super().__init__(n_episodes=n_episodes, max_episode_steps=max_episode_steps,
                         deterministic=deterministic, record_trajectory=record_trajectory,
                         record_event_logs=record_event_logs, seed=seed, silent=silent,
                         record_minari=record_minari)
        self.render = bool(render)

    def _collect(self, env: Any, wrappers: Any, agent: Any, output_dir: Path) -> Aggregates:
        return self.collect(env, wrappers, agent, output_dir)

    def collect(self, env: Any, wrappers: Any, agent: Any, output_dir: Path,
                on_episode: Callable[[], None] | None = None, part: int = 0) -> Aggregates:
        """Run the episodes and return their raw statistics; ``on_episode`` is called after each episode,
        ``part`` numbers this process's share of a Minari dataset (``record_minari``).

        An env built here from a config or factory is closed at the end; an env instance passed in stays
        open (its owner closes it), so it can serve several runs.
        """
        owns_env = not isinstance(env, StructuredEnv)
        context = {"render_mode": choose_render_mode()} if self.render and owns_env else {}
        stack = build_env(env, **context)
        try:
            stack, log_stats = self.wrap_for_rollout(stack, wrappers, output_dir, part)
            policy = build_policy(agent, stack)
            if self.seed is not None:
                env_seed, policy_seed = derive_seeds(self.seed, 2)
                stack.seed(env_seed)
                policy.seed(policy_seed)
            renderer = StepRenderer(stack, output_dir) if self.render else None
            recorder = self._log_prob_recorder(stack, policy)
            for episode in range(self.n_episodes):
                if renderer is not None:
                    self._run_rendered_episode(stack, policy, renderer, episode, recorder)
                elif recorder is not None:
                    run_logged_episode(recorder, policy)
                else:
                    run_episode(stack, policy, self.deterministic)
                if on_episode is not None:
                    on_episode()
            # Copies: the wrapper's aggregates belong to the stack, which is discarded.
            return {name: copy.copy(stats) for name, stats in log_stats.epoch_aggregates().items()}
        finally:
            if owns_env:
                stack.close()
            else:
                self.release_recorders(stack)

    def _log_prob_recorder(self, stack: StructuredEnv,
                           policy: StructuredPolicy) -> "MinariRecordingWrapper | None":
        """The stack's Minari recorder where its episodes get log-probabilities: sampled actions of a policy
        that reports them. Otherwise None, and the plain loop runs (the recorder writes NaN)."""
        reports = getattr(policy, "reports_log_probs", False)
        if self.record_minari is None or self.deterministic or not reports:
            return None
        from maze_engine.wrappers.recording.minari import MinariRecordingWrapper

        assert isinstance(stack, MinariRecordingWrapper), "wrap_for_rollout puts the recorder outermost"
        return stack

    def _run_rendered_episode(self, env: StructuredEnv, policy: StructuredPolicy, renderer: StepRenderer,
                              episode: int, recorder: "MinariRecordingWrapper | None" = None) -> None:
        policy.reset()
        observation = env.reset()
        renderer.render(episode, 0, observation=observation)
        done, step = False, 0
        while not done:
            if recorder is None:
                action = policy.compute_action(observation, env.actor_id(), self.deterministic)
                observation, reward, done, _ = env.step(action)
            else:
                action, log_prob = sample_with_log_prob(policy, observation, recorder.actor_id())
                observation, reward, done, _ = recorder.step(action, log_prob)
            step += 1
            renderer.render(episode, step, action=action, reward=reward, observation=observation)
