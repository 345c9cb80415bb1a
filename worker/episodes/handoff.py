"""Moving open episodes between workers: the history of an episode, its encoding, and its replay.

An episode's wrapper stack holds state no message carries (frame stacks, time-limit counters, statistics).
Rather than serialising wrappers, each open episode records its *inputs*: every state it stepped, with its
reward, info and actor, and the policy actions that step was resumed with. A new owner rebuilds the stack by
replaying the history through a fresh deployment (``observe``, then ``resume`` with the recorded actions
instead of asking the policy), which leaves every wrapper exactly where the old one was. The last replies
travel too, so redelivered states are answered from the replay window on the new owner as on the old.

Records of one shard travel together in a hand-off message on ``<prefix>.handoff.NN``. Encoding keeps
numpy values exact (arrays, scalars and tuples have their own msgpack extensions) and refuses anything
else it cannot represent, so a record is either faithful or not sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack
import numpy as np

from maze_engine.core.actor_id import ActorID
from maze_engine.deployment.agent_deployment import AgentDeployment, PolicyRequest
from worker.errors import WorkerError
from worker.wire.ndarray_codec import NDARRAY_EXT_TYPE, NdarrayCodecError, decode_ndarray, encode_ndarray

logger = logging.getLogger(__name__)

HANDOFF_VERSION = 1
SCALAR_EXT_TYPE = 43
"""A numpy scalar: the 0-d ndarray encoding of its value, decoded back to the scalar type."""
TUPLE_EXT_TYPE = 44
"""A tuple: its items as a msgpack array (plain msgpack would turn it into a list)."""


class HandoffError(WorkerError, ValueError):
    """A record that cannot be encoded, decoded or replayed; the message says which episode and why."""


class Step(NamedTuple):
    """One stepped state of an episode and the policy actions its stack was resumed with."""

    state: Any
    reward: Any
    info: dict | None
    actor: tuple[int | str, int] | None
    actions: Sequence[Any]


class History:
    """The steps of an open episode, recorded cheaply and out of the garbage collector's way.

    Every full collection walks every tracked object, so a history of per-step lists and NamedTuples made
    each one walk every step of every open episode: at 256 episodes that cost a quarter of the worker's time
    per state (benchmarks/worker_batch_step.py). Here the steps lie flat in one list, as ``state, reward,
    info, actor, action count, *actions``, and a list state is kept as a tuple, which the collector stops
    tracking at its first look. States off the wire are never tuples, so ``steps`` turns it back.
    """

    __slots__ = ("_items",)

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        self._items: list[Any] = []
        for step in steps:
            self.record(step.state, step.reward, step.info, step.actor, step.actions)

    def record(self, state: Any, reward: Any, info: dict | None, actor: tuple[int | str, int] | None,
               actions: Sequence[Any]) -> None:
        """Add one step: the state as received and the policy actions its stack was resumed with."""
        items = self._items
        items += (tuple(state) if type(state) is list else state, reward, info, actor, len(actions))
        items += actions

    def steps(self) -> list[Step]:
        """The recorded steps, in order."""
        items, steps, position = self._items, [], 0
        while position < len(items):
            state, reward, info, actor, count = items[position:position + 5]
            position += 5
            steps.append(Step(list(state) if type(state) is tuple else state, reward, info, actor,
                              items[position:position + count]))
            position += count
        return steps


@dataclass
class EpisodeRecord:
    """What a new owner needs to continue an episode: its steps, last seq and recent replies."""

    episode: str
    last_seq: int
    replies: dict[int, bytes] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    policy_version: int | None = None
    """The published policy version the episode acts with; the new owner continues on the same one."""
    experience: bytes | None = None
    """The episode's unpublished recorded steps (``worker/experience/``), None when it is not recorded."""


# ------------------------------------------------------------------------------------------------- encoding

def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return encode_ndarray(value)
    if isinstance(value, np.generic):
        return msgpack.ExtType(SCALAR_EXT_TYPE, encode_ndarray(np.asarray(value)).data)
    if isinstance(value, tuple):
        return msgpack.ExtType(TUPLE_EXT_TYPE, _packb(list(value)))
    raise TypeError(f"cannot encode {type(value).__name__} in a hand-off record")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == NDARRAY_EXT_TYPE:
        return decode_ndarray(data)
    if code == SCALAR_EXT_TYPE:
        return decode_ndarray(data)[()]
    if code == TUPLE_EXT_TYPE:
        return tuple(_unpackb(data))
    raise HandoffError(f"body: unknown msgpack extension type {code}")


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, default=_default, use_bin_type=True, strict_types=True)


def _unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False)


def encode_episode(record: EpisodeRecord) -> bytes:
    """One episode's entry of a hand-off message, encoded; HandoffError names the episode whose history
    holds a value the encoding cannot carry."""
    wire = {"episode": record.episode, "last_seq": record.last_seq,
            "replies": [[seq, body] for seq, body in sorted(record.replies.items())],
            "steps": [[step.state, step.reward, step.info,
                       None if step.actor is None else list(step.actor), list(step.actions)]
                      for step in record.steps],
            "policy_version": record.policy_version, "experience": record.experience}
    try:
        return _packb(wire)
    except (TypeError, ValueError, OverflowError, NdarrayCodecError) as err:
        raise HandoffError(f"episode {record.episode}: its history cannot be encoded ({err})") from err


def handoff_message(shard: int, worker: str, episodes: Sequence[bytes]) -> bytes:
    """The hand-off message of ``shard`` from ``worker`` holding the ``encode_episode`` entries, joined as
    they are (each episode is encoded once, however the episodes are cut into messages)."""
    packer = msgpack.Packer(use_bin_type=True)
    head = b"".join(packer.pack(item) for item in ("v", HANDOFF_VERSION, "shard", shard, "worker", worker,
                                                   "episodes"))
    return packer.pack_map_header(4) + head + packer.pack_array_header(len(episodes)) + b"".join(episodes)


def encode_records(shard: int, worker: str, records: Sequence[EpisodeRecord]) -> bytes:
    """One hand-off message body for ``records`` of ``shard``, sent by ``worker``; raises HandoffError
    naming the episode whose history holds a value the encoding cannot carry."""
    return handoff_message(shard, worker, [encode_episode(record) for record in records])


def encodable_episodes(records: Sequence[EpisodeRecord]) -> list[tuple[EpisodeRecord, bytes]]:
    """The records that can be encoded, with their entries; each one that cannot is logged, and its episode
    will be handled as lost by the new owner."""
    encoded = []
    for record in records:
        try:
            encoded.append((record, encode_episode(record)))
        except HandoffError as err:
            logger.error("%s; the new owner will handle it as lost", err)
    return encoded


def encode_encodable_records(shard: int, worker: str, records: Sequence[EpisodeRecord]) -> bytes | None:
    """``encode_records`` of the records that can be encoded (None when none can); see
    ``encodable_episodes``."""
    episodes = [entry for _, entry in encodable_episodes(records)]
    return handoff_message(shard, worker, episodes) if episodes else None


@dataclass(frozen=True)
class HandoffMessage:
    """A decoded hand-off message."""

    shard: int
    worker: str
    records: list[EpisodeRecord]


def decode_records(body: bytes) -> HandoffMessage:
    """Decode a hand-off message body; raises HandoffError naming the field that is wrong."""
    try:
        obj = _unpackb(body)
    except HandoffError:
        raise
    except Exception as err:  # msgpack raises several unrelated types for corrupt input
        raise HandoffError(f"body: expected a msgpack map, got undecodable bytes ({err})") from None
    if type(obj) is not dict or obj.get("v") != HANDOFF_VERSION:
        raise HandoffError(f"v: expected hand-off version {HANDOFF_VERSION}")
    shard, worker, episodes = obj.get("shard"), obj.get("worker"), obj.get("episodes")
    if type(shard) is not int or shard < 0:
        raise HandoffError(f"shard: expected a non-negative integer, got {shard!r:.60}")
    if type(worker) is not str or type(episodes) is not list:
        raise HandoffError("worker, episodes: expected a string and an array")
    records = []
    for index, wire in enumerate(episodes):
        try:
            replies = {int(seq): bytes(reply) for seq, reply in wire["replies"]}
            steps = [Step(state, reward, info, None if actor is None else (actor[0], int(actor[1])),
                          list(actions)) for state, reward, info, actor, actions in wire["steps"]]
            version = wire.get("policy_version")
            if version is not None and (type(version) is not int or version < 1):
                raise TypeError(f"policy_version: expected nil or an integer >= 1, got {version!r:.40}")
            experience = wire.get("experience")
            if experience is not None and type(experience) is not bytes:
                raise TypeError(f"experience: expected nil or bytes, got {type(experience).__name__}")
            record = EpisodeRecord(str(wire["episode"]), int(wire["last_seq"]), replies, steps, version,
                                   experience)
        except (KeyError, TypeError, ValueError) as err:
            raise HandoffError(f"episodes[{index}]: expected episode, last_seq, replies and steps "
                               f"({err!r})") from None
        records.append(record)
    return HandoffMessage(shard, worker, records)


# --------------------------------------------------------------------------------------------------- replay

def step_inputs(state: Any, reward: Any, info: dict | None, actor: tuple[int | str, int] | None) -> tuple:
    """The positional arguments of ``AgentDeployment.observe`` for one step (not done)."""
    if actor is None:
        return (state, reward, False, info)
    return (state, reward, False, info, None, ActorID(actor[0], actor[1]))


def replay(record: EpisodeRecord, deployment: AgentDeployment) -> AgentDeployment:
    """Step ``deployment`` (a fresh one) through ``record``'s history, resuming with the recorded actions.

    Raises HandoffError when the history does not fit (a stack that asks for more actions than recorded,
    or a wrapper or state check that raises).
    """
    for number, step in enumerate(record.steps):
        actions = iter(step.actions)
        try:
            result = deployment.observe(*step_inputs(step.state, step.reward, step.info, step.actor))
            while type(result) is PolicyRequest:
                action = next(actions, None)
                if action is None:
                    raise HandoffError(f"episode {record.episode}: step {number} needs more policy actions "
                                       f"than the {len(step.actions)} recorded")
                result = deployment.resume(action)
        except HandoffError:
            deployment.reset()
            raise
        except Exception as err:  # noqa: BLE001 - any failure means the stack cannot be rebuilt
            deployment.reset()
            raise HandoffError(f"episode {record.episode}: replaying step {number} failed "
                               f"({type(err).__name__}: {err})") from err
    return deployment
