"""From deliveries to states: what is answered at once, dead-lettered, held back, or goes to the table.

A describe request (``{"v": 1, "describe": true}``, docs/protocol.md) is answered with the worker's
description. Nothing here raises for a delivery, whatever its bytes or properties: a state that cannot be
used is answered ``bad_message`` (also when its body is not msgpack at all, as long as it has a
``reply_to``), a delivery without ``reply_to`` is dead-lettered, and a state delivered
``SHARD_DELIVERY_LIMIT`` times is answered ``internal`` and dead-lettered as ``poison`` without being handled
again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from worker.broker.delivery import Delivery
from worker.episodes.answers import Answer, error_answer
from worker.wire.checks import DecodeError
from worker.wire.protocol import (
    CONTENT_TYPE,
    ErrorCode,
    StateMessage,
    decode_state,
    is_describe_request,
    valid_episode,
)
from worker.wire.topology import DELIVERY_COUNT_HEADER, SHARD_DELIVERY_LIMIT, DeadReason


@dataclass(frozen=True)
class DeadLetter:
    """A delivery to dead-letter: why, the offending field, and a readable detail."""

    delivery: Delivery
    reason: str
    field: str
    detail: str


@dataclass
class Admitted:
    """A chunk of deliveries sorted: states for the table (with their deliveries), answers to send now,
    deliveries to dead-letter, and the tags of deliveries held back (not answered, not acknowledged yet)."""

    messages: list[StateMessage] = field(default_factory=list)
    targets: list[Delivery] = field(default_factory=list)
    answers: list[tuple[Delivery, Answer]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    held: set[int] = field(default_factory=set)


HoldCheck = Callable[[Delivery, str], bool]
"""Whether to hold back a state (seq > 0) of an episode the table does not hold while it is claimed."""


def admit(chunk: Sequence[Delivery], held_here: Callable[[str], bool], hold: HoldCheck,
          describe: Callable[[], bytes] | None = None) -> Admitted:
    """Sort ``chunk``; ``held_here`` tells whether the table holds an episode, ``describe`` gives the answer
    to a describe request."""
    admitted = Admitted()
    taken: set[str] = set()
    for delivery in chunk:
        if not delivery.reply_to:
            admitted.dead.append(DeadLetter(delivery, DeadReason.NO_REPLY_TO, "reply_to",
                                            "the message has no reply_to property, so no reply can be sent"))
            continue
        poison = _poison(delivery)
        if poison is not None:
            admitted.answers.append((delivery, poison.answer))
            admitted.dead.append(poison.dead)
            continue
        try:
            message = decode_state(delivery.body)
        except DecodeError as err:
            if describe is not None and err.field == "episode" and is_describe_request(delivery.body):
                admitted.answers.append((delivery, Answer(describe(), None)))
                continue
            episode = err.episode
            if err.field == "body" and valid_episode(delivery.routing_key):
                episode = delivery.routing_key  # the routing key is the episode id: the producer knows it
            admitted.answers.append((delivery, error_answer(episode, err.seq, ErrorCode.BAD_MESSAGE,
                                                            err.message)))
            continue
        problem = _property_problem(delivery)
        if problem is not None:
            admitted.answers.append((delivery, error_answer(message.episode, message.seq,
                                                            ErrorCode.BAD_MESSAGE, problem)))
            continue
        # A state of an episode with an earlier state in this chunk going to the table is never held back.
        if message.seq and message.episode not in taken and not held_here(message.episode) \
                and hold(delivery, message.episode):
            admitted.held.add(delivery.tag)
            continue
        taken.add(message.episode)
        admitted.messages.append(message)
        admitted.targets.append(delivery)
    return admitted


@dataclass(frozen=True)
class _Poison:
    answer: Answer
    dead: DeadLetter


def _poison(delivery: Delivery) -> _Poison | None:
    """The refusal of a state on its last allowed delivery, else None."""
    headers = getattr(delivery.properties, "headers", None)
    count = headers.get(DELIVERY_COUNT_HEADER) if isinstance(headers, dict) else None
    if type(count) is not int or count + 1 < SHARD_DELIVERY_LIMIT:
        return None
    detail = (f"the state was delivered {count + 1} times without being answered (it may crash workers); "
              "it is dead-lettered instead of being handled again")
    episode = delivery.routing_key if valid_episode(delivery.routing_key) else None
    return _Poison(error_answer(episode, None, ErrorCode.INTERNAL, detail),
                   DeadLetter(delivery, DeadReason.POISON, "body", detail))


def _property_problem(delivery: Delivery) -> str | None:
    """Why the properties of an answerable message are unusable, or None."""
    if delivery.content_type is not None and delivery.content_type != CONTENT_TYPE:
        return f"content_type: expected {CONTENT_TYPE}, got {delivery.content_type!r:.80}"
    if not delivery.correlation_id:
        return "correlation_id: expected a non-empty string to match the reply to its request, got nothing"
    return None
