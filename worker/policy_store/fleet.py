"""The agent worker's side of a release: serve what the reloader loaded, count for the automatic gate, and
carry the gate's verdict out for the whole fleet.

``ReleaseFollower.tick`` runs between batches on the service thread. It takes a newly loaded release plan
(``PolicyReloader.take_plan``) or version (``take_ready``) and hands it to the episode table's sources; with a
canary under the automatic gate it starts a ``CanaryGate`` for that release generation, which
``on_closed`` feeds with the returns of this worker's finished episodes. Once the gate has a verdict, the
follower writes it to the release state, but only if the state is still at the generation counted
(``releases.decide``): the first worker with enough episodes decides for the fleet, and the others drop their
count when the announcement of the new state reaches them. The decision then goes out as two notices the
service publishes (and keeps until it can): the event ``policy.<name>.promoted|rolled_back`` on
``<prefix>.events`` with the figures behind it, and the release announcement on ``<prefix>.policies``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.policy_store.announcements import (
    encode_release_announcement,
    encode_release_event,
    release_event_routing_key,
)
from worker.policy_store.canary_gate import CanaryGate
from worker.policy_store.releases import decide
from worker.policy_store.reload import PolicyReloader, ReleasePlan
from worker.wire import topology

logger = logging.getLogger(__name__)

EVENT_OF_ACTION = {"promote": "promoted", "rollback": "rolled_back"}


@dataclass(frozen=True)
class Notice:
    """A message to publish at once: ``body`` to ``exchange`` (declared durable, of ``exchange_type``)."""

    exchange: str
    exchange_type: str
    routing_key: str
    body: bytes


Serve = Callable[[Any, Any, float, Any], None]
"""``(stable source, canary source or None, canary share, shadow source or None)``: what new episodes get
from now on."""


class ReleaseFollower:
    """See the module docstring; ``serve`` is the episode table's ``sources.serve``."""

    def __init__(self, reloader: PolicyReloader, serve: Serve, prefix: str, worker_id: str) -> None:
        self.reloader = reloader
        self.serve = serve
        self.prefix = prefix
        self.worker_id = worker_id
        self.gate: CanaryGate | None = None
        self.generation = 0
        """The release generation the gate counts for."""
        self.notices: list[Notice] = []
        """Decisions to publish; the service sends them and removes what went out."""

    def tick(self) -> None:
        """Between batches: serve a newly loaded plan or version, and act on the gate's verdict."""
        plan = self.reloader.take_plan()
        if plan is not None:
            self._serve_plan(plan)
        loaded = self.reloader.take_ready()
        if loaded is not None:
            self.serve(loaded, None, 0.0, None)
        if self.gate is not None:
            verdict = self.gate.verdict()
            if verdict is not None:
                self.gate = None
                self._decide(verdict.action, verdict.reason, verdict.figures)

    def on_closed(self, policy_version: int | None, episode_return: float) -> None:
        """An episode finished (done) on ``policy_version`` with ``episode_return``."""
        if self.gate is not None:
            self.gate.observe(policy_version, episode_return)

    def _serve_plan(self, plan: ReleasePlan) -> None:
        state = plan.state
        self.serve(plan.stable, plan.canary, state.share, plan.shadow)
        self.gate = None
        if plan.canary is not None and state.auto is not None:
            self.gate = CanaryGate(plan.stable.policy_version, plan.canary.policy_version,
                                   state.auto.min_episodes, state.auto.confidence)
            self.generation = state.generation

    def _decide(self, action: str, reason: str, figures: dict[str, Any]) -> None:
        name = self.reloader.name
        by = f"worker {self.worker_id}"
        try:
            state = decide(self.reloader.artifact_root, name, self.generation, action, by, reason, figures)
        except Exception:  # noqa: BLE001 - a failed write leaves the release as it is; an operator can act
            logger.exception("policy %r: writing the canary gate's decision (%s) failed", name, action)
            return
        if state is None:
            logger.info("policy %r: the canary gate's verdict (%s) came after the release changed; dropped",
                        name, action)
            return
        logger.info("policy %r: canary gate decided to %s (%s); generation %d", name, action, reason,
                    state.generation)
        event = encode_release_event(EVENT_OF_ACTION[action], name, generation=state.generation,
                                     stable=state.stable, by=by, reason=reason, figures=figures)
        self.notices.append(Notice(topology.events_exchange(self.prefix), topology.events_exchange_type(),
                                   release_event_routing_key(name, EVENT_OF_ACTION[action]), event))
        self.notices.append(Notice(topology.policies_exchange(self.prefix), topology.policies_exchange_type(),
                                   "", encode_release_announcement(name, state.generation)))
