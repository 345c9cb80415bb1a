"""AgentDeployment: a policy plus its wrapper stack, driven by an external env that calls ``act``.

A production env does not follow the gym loop: it calls the agent with each state whenever it is ready. The
wrapper stack, however, is written for the gym loop (``reset`` then ``step`` after ``step``). The deployment
runs that ordinary loop inside a greenlet over an ExternalCoreEnv: when the stack steps the core env, the
greenlet suspends and the maze_action goes out to the caller; the next ``act`` resumes it with the next state.
A greenlet is a few KiB of heap, not an OS thread, so one process holds many thousands of open deployments.

``act`` is ``observe`` (run the stack up to the point where it needs the policy) followed by
``policy.compute_action`` and ``resume`` (run the stack on with the action up to the next maze_action). A
caller holding many deployments uses ``observe``/``resume`` (or ``act_batch``) to compute all their actions
in one batched policy call.
"""

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from greenlet import GreenletExit, getcurrent, greenlet

from maze_engine.core.actor_id import DEFAULT_ACTOR_ID, ActorID
from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import MazeError
from maze_engine.core.events import EventRecord
from maze_engine.deployment.external_core_env import EpisodeEnded, ExternalCoreEnv
from maze_engine.deployment.inputs import (
    StateCheck,
    check_actor_id,
    check_done,
    check_events,
    check_info,
    check_reward,
    compile_state_check,
)
from maze_engine.deployment.stack import (
    ConfigLike,
    WrappersLike,
    actor_id_source,
    attach_external_core,
    bottom_maze_env,
    build_env,
    build_policy,
    wrapper_layers,
)


class PolicyRequest(NamedTuple):
    """The stack needs the policy's action for ``observation`` of ``actor_id``; answer with resume()."""

    observation: dict[str, Any]
    actor_id: ActorID
    deployment: "AgentDeployment"


# Builds a PolicyRequest as ``_new_tuple(PolicyRequest, (observation, actor_id, deployment))``, without
# NamedTuple's Python-level __new__, which costs more than the rest of the request's hand-off on the hot path.
_new_tuple = tuple.__new__


class EpisodeAbortedError(MazeError, RuntimeError):
    """The running episode was aborted by an exception; ``reset()`` or ``close()`` starts over."""

    def __init__(self, method: str, cause: BaseException) -> None:
        super().__init__(f"{method}: the episode was aborted by {type(cause).__name__}: {cause}; "
                         "call reset() or close() before the next episode's first state")
        self.cause = cause


class _Channel:
    """What a deployment shares with its episode loop; holds no reference to the deployment itself, so a
    dropped deployment drops its greenlet too (a greenlet suspended in a reference cycle is never collected).
    """

    __slots__ = ("env", "core", "actor_of", "policy", "needs_action")

    def __init__(self, env: StructuredEnv, core: ExternalCoreEnv, actor_of: Callable[[], ActorID]) -> None:
        self.env = env
        self.core = core
        self.actor_of = actor_of
        # Set by ``act``: the loop then asks the policy itself, saving a greenlet round trip per step.
        self.policy: Any = None
        # Set by the loop when it hands an observation out, so the caller tells it from a maze_action.
        self.needs_action = False


def _episode_loop(channel: _Channel) -> None:
    """The gym loop of one episode, run inside the deployment's greenlet."""
    env, core = channel.env, channel.core
    # Bound once: CPython does not specialise attribute loads on wrappers, whose class defines __getattr__.
    step = env.step
    try:
        observation = env.reset()
        while True:
            policy = channel.policy
            if policy is not None:
                action = policy.compute_action(observation, actor_id=channel.actor_of(), deterministic=False)
            else:
                channel.needs_action = True
                action = getcurrent().parent.switch(observation)
            observation = step(action)[0]
            if core.closing:
                break
    except EpisodeEnded:
        pass
    _flush(channel)


def _flush(channel: _Channel) -> None:
    """Reset the stack on the episode's last state, so wrappers finish the episode."""
    channel.core.closing = True
    channel.env.reset()


def _adopt(g: greenlet, caller: greenlet) -> None:
    """Make ``caller`` the greenlet ``g`` returns to; greenlets (so episodes) cannot cross threads."""
    try:
        g.parent = caller
    except ValueError as err:
        raise MazeError("an episode must be driven from the thread that started it; this call came from "
                        f"thread {threading.current_thread().name!r}") from err


def _switch(g: greenlet, *args: Any) -> Any:
    """Switch into ``g``; whatever greenlet calls this is where ``g`` comes back to."""
    current = getcurrent()
    if g.parent is not current:
        _adopt(g, current)
    return g.switch(*args)


def _kill(g: greenlet, exit_exception: GreenletExit) -> None:
    """End a suspended episode greenlet by raising ``exit_exception`` at its suspension point."""
    current = getcurrent()
    if g.parent is not current:
        _adopt(g, current)
    g.throw(exit_exception)


class AgentDeployment:
    """Encapsulates a policy and a wrapper stack, so an external env gets maze_actions for its maze_states.

    ``policy``, ``env`` and ``wrappers`` may be instances or configs (``_target_`` mappings as used by
    rollouts), or a mix; ``wrappers`` is a list of wrapper configs/instances or Maze's
    ``{class path: kwargs}`` mapping, applied in order over ``env``. The deployment replaces the core env at
    the bottom of the stack with an ExternalCoreEnv; ``env`` (the stack) stays readable, e.g. for
    LogStatsWrapper statistics.

    >>> from maze_engine import GymMazeEnv, RandomPolicy
    >>> import gymnasium as gym
    >>> external = gym.make("CartPole-v1")
    >>> env = GymMazeEnv("CartPole-v1")
    >>> deployment = AgentDeployment(RandomPolicy(env.action_spaces_dict, seed=0), env)
    >>> state, _ = external.reset(seed=0)
    >>> external.action_space.contains(deployment.act(state, None, False, {}))
    True
    >>> deployment.close()
    """

    def __init__(self, policy: ConfigLike, env: ConfigLike, wrappers: WrappersLike = None) -> None:
        stack = build_env(env)
        for layer in wrapper_layers(wrappers):
            stack = layer.build(stack)
        built_policy = build_policy(policy, stack)
        core = attach_external_core(stack)
        self._setup(built_policy, stack, core, compile_state_check(core.maze_state_space), owns_policy=True)

    @classmethod
    def assemble(cls, policy: Any, env: StructuredEnv, core: ExternalCoreEnv, state_check: StateCheck,
                 owns_policy: bool = False) -> "AgentDeployment":
        """A deployment over a ready stack whose bottom core env is ``core`` (used by DeploymentFactory)."""
        deployment = cls.__new__(cls)
        deployment._setup(policy, env, core, state_check, owns_policy)
        return deployment

    def _setup(self, policy: Any, env: StructuredEnv, core: ExternalCoreEnv, state_check: StateCheck,
               owns_policy: bool) -> None:
        self.policy = policy
        self.env = env
        self.core_env = core
        self._state_check = state_check
        self._step_keys = frozenset(bottom_maze_env(env).observation_conversion_dict)
        # A shared policy (DeploymentFactory) must not be reset by every episode of every deployment.
        self._owns_policy = owns_policy
        self._channel = _Channel(env, core, actor_id_source(env, core))
        self._greenlet: greenlet | None = None
        self._awaiting_action = False
        self._episode_done = False
        self._failure: BaseException | None = None

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def episode_open(self) -> bool:
        """Whether an episode is running (its stack waits for a state or for an action)."""
        return self._greenlet is not None

    @property
    def request_pending(self) -> bool:
        """Whether ``observe`` handed out a PolicyRequest that ``resume`` has not answered yet."""
        return self._awaiting_action

    @property
    def failure(self) -> BaseException | None:
        """The exception that aborted the episode, until ``reset()`` or ``close()``."""
        return self._failure

    # -- the seed's API --------------------------------------------------------------------------------------

    def act(self, maze_state: Any, reward: Any, done: bool, info: dict[Any, Any] | None,
            events: list[EventRecord] | None = None, actor_id: ActorID = DEFAULT_ACTOR_ID) -> Any:
        """The maze_action for ``maze_state``; an episode's first call resets the stack, later ones step it.

        ``reward`` is the reward of the previous step (None on an episode's first state). After a state with
        ``done=True`` or after ``close()``, the next call starts a new episode. The same as ``observe``, then
        ``policy.compute_action`` and ``resume``, with the policy called from inside the stack's greenlet.
        """
        channel = self._channel
        channel.policy = self.policy
        try:
            result = self.observe(maze_state, reward, done, info, events, actor_id)
        finally:
            channel.policy = None
        while type(result) is PolicyRequest:  # not reached while the loop calls the policy itself
            try:
                action = self.policy.compute_action(result.observation, actor_id=result.actor_id,
                                                    deterministic=False)
            except BaseException as err:
                self.abort(err)
                raise
            result = self._enter(action)
        return result

    def close(self, maze_state: Any = None, reward: Any = None, done: bool = True,
              info: dict[Any, Any] | None = None, events: list[EventRecord] | None = None) -> None:
        """End the episode: pass the final state (if given) through the stack as its last step, then reset
        the stack so wrappers finish the episode (statistics, trajectories). The next ``act`` starts anew.

        The final state is ignored when no episode is open, when the episode already ended with ``done=True``
        in ``act``, or when it was aborted. Raises MazeError if a PolicyRequest is pending and a final state
        is given (there is no action for the previous state yet).
        """
        if maze_state is None or self._greenlet is None or self._episode_done or self._failure is not None:
            self._end_episode()
            return
        if self._awaiting_action:
            raise MazeError("close: a PolicyRequest is pending, so the final state cannot be stepped; "
                            "resume(action) first, or close() without a state to drop the request")
        state = self._state_check(maze_state)
        step = (state, check_reward(reward, first=False), check_done(done), check_info(info))
        core = self.core_env
        core.maze_state = state
        core.events = check_events(events)
        core.closing = True
        g, self._greenlet = self._greenlet, None
        # The episode loop steps the stack once more, sees ``closing`` and flushes; exceptions propagate.
        _switch(g, step)
        assert g.dead, "the episode loop ends once closing is set"

    def reset(self) -> None:
        """End the running episode without a final state and clear an abort, like close()."""
        self._end_episode()

    # -- the split, batchable API ----------------------------------------------------------------------------

    def observe(self, maze_state: Any, reward: Any, done: bool, info: dict[Any, Any] | None,
                events: list[EventRecord] | None = None, actor_id: ActorID = DEFAULT_ACTOR_ID) -> Any:
        """Pass a state into the stack and run it until it needs the policy.

        Returns a PolicyRequest, or the maze_action itself when the stack produced one without the policy
        (wrappers that skip steps). Bad input raises SpaceMismatchError naming the field (``state``,
        ``reward``, ``done``, ``info``, ``events``, ``actor_id``) and leaves the deployment unchanged.
        """
        if self._awaiting_action:
            raise MazeError("observe: a PolicyRequest is pending; answer it with resume(action) first")
        if self._failure is not None:
            raise EpisodeAbortedError("observe", self._failure) from self._failure
        state = self._state_check(maze_state)
        first = self._greenlet is None or self._episode_done
        # Fast paths for well-typed input; the checks name the field when something does not fit.
        if type(reward) is not float or reward - reward != 0.0:
            reward = check_reward(reward, first)
        if done is not True and done is not False:
            done = check_done(done)
        if type(info) is not dict:
            info = {} if info is None else check_info(info)
        if type(actor_id) is not ActorID or actor_id.step_key not in self._step_keys:
            actor_id = check_actor_id(actor_id, self._step_keys)
        checked_events = () if events is None else check_events(events)
        if first and self._greenlet is not None:  # the previous episode ended with done=True: flush it
            self._end_episode()
        core = self.core_env
        core.maze_state = state
        core.events = checked_events
        core.current_actor_id = actor_id
        result = self._start_episode() if first else self._enter((state, reward, done, info))
        self._episode_done = done
        return result

    def resume(self, action: dict[str, Any]) -> Any:
        """Answer the pending PolicyRequest with the policy's ``action``; returns the maze_action (or, if the
        stack needs the policy again before the next state, another PolicyRequest)."""
        if not self._awaiting_action:
            raise MazeError("resume: no PolicyRequest is pending; call observe(...) first")
        self._channel.policy = None
        return self._enter(action)

    def abort(self, cause: BaseException) -> None:
        """Abort the running episode because of ``cause`` (e.g. the policy failed on its request).

        ``act``/``observe`` then raise EpisodeAbortedError until ``reset()`` or ``close()``.
        """
        self._failure = cause
        self._awaiting_action = False
        self._episode_done = False
        g, self._greenlet = self._greenlet, None
        if g is not None and not g.dead:
            _kill(g, GreenletExit())

    # -- internals -------------------------------------------------------------------------------------------

    def _start_episode(self) -> Any:
        """Start the episode's greenlet, which resets the stack on the state just received."""
        if self._owns_policy:
            reset = getattr(self.policy, "reset", None)
            if reset is not None:
                reset()
        self.core_env.closing = False
        self._greenlet = greenlet(_episode_loop)
        return self._enter(self._channel)

    def _enter(self, value: Any) -> Any:
        """Switch into the episode's greenlet with ``value`` (the channel to start it, then a step result or
        an action); returns what it hands out next: an observation (as PolicyRequest) or a maze_action."""
        g = self._greenlet
        assert g is not None
        current = getcurrent()
        if g.parent is not current:  # called from another greenlet: come back there
            _adopt(g, current)
        try:
            result = g.switch(value)
        except BaseException as err:
            self._failure = err
            self._awaiting_action = False
            self._episode_done = False
            self._greenlet = None
            raise
        if g.dead:
            self._greenlet = None
            self._failure = MazeError("the wrapper stack ended the episode by itself")
            raise self._failure
        channel = self._channel
        if channel.needs_action:
            channel.needs_action = False
            self._awaiting_action = True
            return _new_tuple(PolicyRequest, (result, channel.actor_of(), self))
        self._awaiting_action = False
        return result

    def _end_episode(self) -> None:
        """Finish the open (or aborted) episode through the stack's reset; leaves the deployment idle."""
        g, self._greenlet = self._greenlet, None
        failed, self._failure = self._failure, None
        self._awaiting_action = False
        self._episode_done = False
        if g is not None and g:
            self.core_env.closing = True
            _kill(g, EpisodeEnded())
        elif failed is not None:
            # The aborted episode's stack is gone; a short-lived greenlet resets it so wrappers flush.
            _switch(greenlet(_flush), self._channel)
