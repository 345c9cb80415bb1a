"""ExternalCoreEnv: the CoreEnv of a deployed agent, whose states come from an external env.

In a deployment the control flow is inverted: the production env calls the agent instead of being stepped by
it. The wrapper stack above this core env still runs its ordinary ``reset``/``step`` code; when the stack
steps this core env, ``step`` suspends the stack's greenlet, hands the maze_action to the deployment's
caller and returns the next state once the caller passes it in. ``reset`` never suspends: the deployment
sets the episode's first state before it starts the stack.
"""

from collections.abc import Sequence
from typing import Any

from greenlet import GreenletExit, getcurrent

from maze_engine.core.actor_id import DEFAULT_ACTOR_ID, ActorID
from maze_engine.core.env.core_env import CoreEnv, StepResult
from maze_engine.core.errors import MazeError
from maze_engine.core.events import EventRecord


class EpisodeEnded(GreenletExit):
    """Unwinds a stack that asks for another state after its deployment ended the episode.

    A GreenletExit, so it ends the stack's greenlet quietly and wrappers that catch ``Exception`` do not
    swallow it.
    """


class ExternalCoreEnv(CoreEnv):
    """A CoreEnv fed by an AgentDeployment; it holds the latest external state and never simulates.

    The deployment writes ``maze_state``, ``events`` and ``current_actor_id`` before each state enters the
    stack (plain attributes: this is the hot path), and sets ``closing`` when the episode ends.

    >>> env = ExternalCoreEnv()
    >>> env.maze_state = [0.0, 1.0]
    >>> env.reset()
    [0.0, 1.0]
    """

    def __init__(self, maze_state_space: Any = None) -> None:
        self._maze_state_space = maze_state_space
        self.maze_state: Any = None
        self.events: Sequence[EventRecord] = ()
        self.current_actor_id: ActorID = DEFAULT_ACTOR_ID
        self.closing = False

    @property
    def maze_state_space(self) -> Any:
        """The space of incoming states, taken from the core env this one replaced (None if unknown)."""
        return self._maze_state_space

    def step(self, maze_action: Any) -> StepResult:
        """Hand ``maze_action`` to the deployment's caller; return the next (state, reward, done, info)."""
        if self.closing:
            raise EpisodeEnded()
        caller = getcurrent().parent
        if caller is None:
            raise MazeError("ExternalCoreEnv.step: states come from AgentDeployment.act; "
                            "a deployment's env cannot be stepped directly")
        # Suspends the stack until the deployment passes in the next state (or ends the episode).
        return caller.switch(maze_action)

    def reset(self) -> Any:
        """The episode's first state (at the end of an episode: its last state, so wrappers can flush)."""
        return self.maze_state

    def actor_id(self) -> ActorID:
        return self.current_actor_id

    def get_step_events(self) -> list[EventRecord]:
        return list(self.events)
