"""Identifies which policy (step) and which agent acts next in a structured env."""

from typing import NamedTuple


class ActorID(NamedTuple):
    """The actor that acts next: ``step_key`` selects the policy, ``agent_id`` the agent within that step."""

    step_key: int | str
    agent_id: int


DEFAULT_ACTOR_ID = ActorID(0, 0)
