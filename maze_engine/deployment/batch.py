"""act_batch: step many deployments and compute all their actions in one policy call per actor id."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from maze_engine.core.actor_id import DEFAULT_ACTOR_ID, ActorID
from maze_engine.core.errors import MazeError
from maze_engine.core.events import EventRecord
from maze_engine.deployment.agent_deployment import AgentDeployment, PolicyRequest


class StepInput(NamedTuple):
    """What the external env hands over for one state (the arguments of ``AgentDeployment.act``)."""

    maze_state: Any
    reward: Any
    done: bool
    info: dict[Any, Any] | None
    events: list[EventRecord] | None = None
    actor_id: ActorID = DEFAULT_ACTOR_ID


def _observe(deployment: AgentDeployment, inputs: Any) -> Any:
    if isinstance(inputs, tuple):  # tuples and StepInput; checked first since Mapping's check is slower
        return deployment.observe(*inputs)
    if isinstance(inputs, Mapping):
        return deployment.observe(**inputs)
    if isinstance(inputs, list):
        return deployment.observe(*inputs)
    raise MazeError(f"act_batch: expected the inputs of act as a tuple, StepInput or mapping, "
                    f"got {type(inputs).__name__}")


def _compute(policy: Any, observations: list[dict[str, Any]], actor_id: ActorID,
             deterministic: bool, log_probs: list[float | None] | None = None) -> Sequence[dict[str, Any]]:
    """The policy's actions for ``observations``; ``log_probs`` (when asked) gets one log-probability per
    observation, None each where the policy cannot say."""
    compute_actions = getattr(policy, "compute_actions", None)
    if compute_actions is None:  # a policy with compute_action only
        actions: Sequence[dict[str, Any]] = [
            policy.compute_action(observation, actor_id=actor_id, deterministic=deterministic)
            for observation in observations]
    elif log_probs is not None and getattr(policy, "reports_log_probs", False):
        actions = compute_actions(observations, actor_id, deterministic, log_probs_out=log_probs)
    else:
        actions = compute_actions(observations, actor_id, deterministic)
    if log_probs is not None and len(log_probs) != len(observations):
        log_probs[:] = [None] * len(observations)
    if len(actions) != len(observations):
        raise MazeError(f"policy.compute_actions: returned {len(actions)} actions for "
                        f"{len(observations)} observations")
    return actions


def _compute_one(policy: Any, observation: dict[str, Any], actor_id: ActorID, deterministic: bool) -> Any:
    """The action for one observation, or the exception the policy raised for it."""
    try:
        return policy.compute_action(observation, actor_id=actor_id, deterministic=deterministic)
    except Exception as err:  # noqa: BLE001 - returned in the item's place, like every per-item failure
        return err


def act_batch(deployments_and_inputs: Iterable[tuple[AgentDeployment, Any]], policy: Any,
              deterministic: bool = False, actions_out: list[list[Any]] | None = None,
              observations_out: list[list[Any]] | None = None,
              log_probs_out: list[list[float | None]] | None = None) -> list[Any]:
    """The maze_action for each ``(deployment, inputs)`` pair, with one policy call per actor id and round.

    ``inputs`` are the arguments of ``act``: a StepInput, a tuple ``(maze_state, reward, done, info[, events
    [, actor_id]])`` or a mapping of them by name. Every item is observed, the requests are grouped by actor
    id, ``policy.compute_actions`` runs once per group and every deployment is resumed with its action (a
    stack that asks again before its next maze_action gets another round). An exception in one item (bad
    input, a wrapper, the policy on its observation; a failed group call is retried one observation at a
    time) is returned in that item's place, with its traceback in ``__traceback__``; the other items still
    get their actions. Each deployment may appear at most once.

    ``actions_out``, when given, receives one list per item of the policy actions passed to ``resume`` (empty
    when the stack needed no policy): what a replay of the same inputs must feed to reproduce the step.
    ``observations_out`` and ``log_probs_out``, when given, receive alongside them the observation each of
    those actions was computed for and its log-probability (None where the policy cannot say: policies
    without ``reports_log_probs``); asked for nothing, the batch costs nothing extra.
    """
    items = list(deployments_and_inputs)
    results: list[Any] = [None] * len(items)
    if actions_out is not None:
        actions_out[:] = [[] for _ in items]
    if observations_out is not None:
        observations_out[:] = [[] for _ in items]
    if log_probs_out is not None:
        log_probs_out[:] = [[] for _ in items]
    pending: list[tuple[int, PolicyRequest]] = []
    try:
        for index, (deployment, inputs) in enumerate(items):
            try:
                if type(inputs) is tuple:  # the common case, without the dispatch below
                    if len(inputs) == 4:
                        # A plain call is cheaper than f(*args), which CPython runs as a nested C-level call.
                        state, reward, done, info = inputs
                        result = deployment.observe(state, reward, done, info)
                    else:
                        result = deployment.observe(*inputs)
                else:
                    result = _observe(deployment, inputs)
            except Exception as err:
                results[index] = err
                continue
            if type(result) is PolicyRequest:
                pending.append((index, result))
            else:
                results[index] = result
        while pending:
            pending = _round(pending, policy, deterministic, results, actions_out, observations_out,
                             log_probs_out)
    except BaseException:
        # KeyboardInterrupt and friends: leave no deployment of this batch waiting for an action.
        for deployment, _ in items:
            if deployment.request_pending:
                deployment.abort(MazeError("act_batch was interrupted"))
        raise
    return results


_NO_ACTOR = object()


def _round(pending: list[tuple[int, PolicyRequest]], policy: Any, deterministic: bool,
           results: list[Any], actions_out: list[list[Any]] | None = None,
           observations_out: list[list[Any]] | None = None,
           log_probs_out: list[list[float | None]] | None = None) -> list[tuple[int, PolicyRequest]]:
    """Answer every pending request (one policy call per actor id); returns the requests that follow."""
    groups: dict[ActorID, list[tuple[int, PolicyRequest]]] = {}
    last_id: Any = _NO_ACTOR  # never an actor id, so the first request opens its group
    group: list[tuple[int, PolicyRequest]] = []
    for entry in pending:
        actor_id = entry[1].actor_id
        # Requests in a row mostly carry the very same ActorID object: skip hashing it for each of them.
        if actor_id is not last_id:
            group = groups.setdefault(actor_id, [])
            last_id = actor_id
        group.append(entry)
    following: list[tuple[int, PolicyRequest]] = []
    for actor_id, group in groups.items():
        observations = [request.observation for _, request in group]
        log_probs: list[float | None] | None = None if log_probs_out is None else []
        try:
            actions: Sequence[Any] = _compute(policy, observations, actor_id, deterministic, log_probs)
        except Exception as err:
            # One observation the policy cannot handle must not fail the whole group: retry one at a time,
            # so only the items that fail on their own are aborted.
            actions = [err] if len(group) == 1 else \
                [_compute_one(policy, observation, actor_id, deterministic) for observation in observations]
            log_probs = None if log_probs is None else [None] * len(group)
        if observations_out is not None or log_probs is not None:
            _note(group, actions, observations, log_probs, observations_out, log_probs_out)
        for (index, request), action in zip(group, actions, strict=True):
            if isinstance(action, Exception):
                request.deployment.abort(action)
                results[index] = action
                continue
            if actions_out is not None:
                actions_out[index].append(action)
            try:
                result = request.deployment.resume(action)
            except Exception as err:
                results[index] = err
                continue
            if type(result) is PolicyRequest:
                following.append((index, result))
            else:
                results[index] = result
    return following


def _note(group: list[tuple[int, PolicyRequest]], actions: Sequence[Any], observations: list[Any],
          log_probs: list[float | None] | None, observations_out: list[list[Any]] | None,
          log_probs_out: list[list[float | None]] | None) -> None:
    """Record each item's observation and log-probability beside its action (failed items get none)."""
    for position, (index, _) in enumerate(group):
        if isinstance(actions[position], Exception):
            continue
        if observations_out is not None:
            observations_out[index].append(observations[position])
        if log_probs_out is not None and log_probs is not None:
            log_probs_out[index].append(log_probs[position])
