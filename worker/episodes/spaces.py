"""The spaces a worker serves: what producers send and get back, what the policy sees, and applied actions.

A producer's ``state`` must fit the env's maze_state space and replies carry maze_actions of its action
space; the policy sees observations after the wrapper stack and answers in its own action space.
``ServedSpaces`` holds all four (from the deployment factory's template stack), describes them as JSON for
describe requests and ``maze-worker describe``, and checks a reported ``applied_action``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gymnasium import spaces

from maze_engine.core.errors import MazeError, SpaceMismatchError
from maze_engine.core.space_codec import space_to_json
from maze_engine.core.spaces import to_plain, to_space_sample
from maze_engine.deployment.stack import bottom_maze_env
from worker.wire.protocol import PROTOCOL_VERSION

logger = logging.getLogger(__name__)

APPLIED_FIELD = "applied_action"


@dataclass(frozen=True)
class ServedSpaces:
    """The spaces of one served agent; step keys as the env's (``0`` for a single-step env)."""

    state: spaces.Space | None
    """What ``state`` must fit (the core env's maze_state space; None when the env does not say)."""
    action: spaces.Space | None
    """What replies carry and ``applied_action`` must fit (None when the env does not say)."""
    observations: Mapping[Any, spaces.Space]
    """The policy's observation space per step key (after the wrapper stack)."""
    policy_actions: Mapping[Any, spaces.Space]
    """The policy's action space per step key."""
    conversions: Mapping[Any, Any]
    """The env's action conversion per step key: maze_action -> the policy's action dict."""
    convertible: frozenset[Any] = frozenset()
    """Step keys whose conversion yields the policy's action space (no action wrapper changed it)."""

    @classmethod
    def of(cls, source: Any) -> ServedSpaces | None:
        """The spaces of a DeploymentFactory (its template stack); None for a source without one."""
        stack = getattr(source, "template_env", None)
        if stack is None:  # a published policy's VersionedFactory wraps its DeploymentFactory
            stack = getattr(getattr(source, "factory", None), "template_env", None)
        if stack is None:
            return None
        maze_env = bottom_maze_env(stack)
        gym_env = getattr(maze_env, "gym_env", None)
        action = getattr(maze_env, "maze_action_space", None) or getattr(gym_env, "action_space", None)
        state = getattr(maze_env.core_env, "maze_state_space", None)
        policy_actions = dict(stack.action_spaces_dict)
        conversions = dict(maze_env.action_conversion_dict)
        convertible = frozenset(step for step, conversion in conversions.items()
                                if conversion.space() == policy_actions.get(step))
        return cls(state, action, dict(stack.observation_spaces_dict), policy_actions, conversions,
                   convertible)

    @property
    def default_step(self) -> Any:
        return next(iter(self.observations))

    def check_applied(self, value: Any, actor: tuple[Any, int] | None) -> tuple[Any, Any]:
        """``value`` (a reported applied action) as a sample of the action space, and as the policy's action
        dict (None when the wrapper stack changed the action space, so no policy action corresponds).

        Raises SpaceMismatchError naming ``applied_action`` (or a part of it) when it does not fit.
        """
        step = self.default_step if actor is None else actor[0]
        if self.action is not None:
            sample = to_space_sample(self.action, value, APPLIED_FIELD)
        else:
            sample = value
        conversion = self.conversions.get(step)
        if conversion is None:
            return sample, None
        try:
            converted = conversion.maze_to_space(sample)
        except Exception as err:  # noqa: BLE001 - a conversion that cannot take the value: it does not fit
            raise SpaceMismatchError(APPLIED_FIELD, "an action of the env's action space",
                                     f"{type(value).__name__} ({err})") from err
        if step not in self.convertible:
            return sample, None
        if self.action is None:  # nothing checked it yet: the policy's space decides
            return sample, to_space_sample(self.policy_actions[step], converted, APPLIED_FIELD)
        return sample, converted

    def describe(self) -> dict[str, Any]:
        """The spaces as JSON-ready maps (``maze_engine.core.space_codec`` format; null where unknown)."""
        steps = [[_json_key(step), {"observation": _space_json(self.observations[step]),
                                    "policy_action": _space_json(self.policy_actions.get(step))}]
                 for step in self.observations]
        return {"protocol_version": PROTOCOL_VERSION, "state": _space_json(self.state),
                "action": _space_json(self.action), "observation": steps[0][1]["observation"],
                "policy_action": steps[0][1]["policy_action"], "steps": steps}


def same_action(proposed: Any, applied: Any) -> bool:
    """Whether two maze_actions are equal value for value (numpy values compared as plain numbers)."""
    return bool(to_plain(proposed) == to_plain(applied))


def _space_json(space: spaces.Space | None) -> Any:
    if space is None:
        return None
    try:
        return space_to_json(space)
    except MazeError as err:  # a space kind the codec does not know: say so instead of failing
        return {"type": type(space).__name__, "unsupported": str(err)}


def _json_key(step: Any) -> Any:
    return step if isinstance(step, int | str) else str(step)
