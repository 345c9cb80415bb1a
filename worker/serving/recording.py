"""What the service builds for applied actions, shadow mode and recorded experience, and its description.

``build_recording`` gives the episode table its ``Recording`` (the served spaces, the agreement metric, and
with ``experience.record`` a recorder whose chunks go to an ``ExperiencePublisher`` thread).
``description`` is the answer to a describe request (docs/protocol.md): the spaces, the serving mode, the
policy and whether experience is recorded.
"""

from __future__ import annotations

from typing import Any

from worker.episodes.recording import Recording
from worker.episodes.sources import DeploymentSource, version_of
from worker.episodes.spaces import ServedSpaces
from worker.experience.publisher import ExperiencePublisher
from worker.experience.recorder import Recorder
from worker.metrics import WorkerMetrics
from worker.settings import WorkerSettings
from worker.wire import topology


def policy_name(settings: WorkerSettings, factory: Any) -> str:
    """The name records carry: ``experience.policy_name``, else the published name, else the class name."""
    if settings.experience.policy_name:
        return settings.experience.policy_name
    published = getattr(factory, "name", None)
    return published if isinstance(published, str) else type(factory.policy).__name__


def build_recording(settings: WorkerSettings, factory: DeploymentSource, worker_id: str,
                    metrics: WorkerMetrics) -> tuple[Recording, ExperiencePublisher | None]:
    """The table's Recording and, with ``experience.record``, the publisher thread (not started yet)."""
    publisher = None
    recorder = None
    if settings.experience.record:
        publisher = ExperiencePublisher(settings.broker, settings.experience, worker_id,
                                        policy_name(settings, factory), settings.serving.mode, metrics)
        recorder = Recorder(settings.experience, publisher.offer)
    return Recording(ServedSpaces.of(factory), recorder, metrics.count_applied,
                     settings.serving.mode == "shadow"), publisher


def description(settings: WorkerSettings, spaces: ServedSpaces | None, current: DeploymentSource,
                worker_id: str | None) -> dict[str, Any]:
    """The describe map: the spaces (``ServedSpaces.describe``) plus how this worker serves them."""
    described: dict[str, Any] = spaces.describe() if spaces is not None else {"state": None, "action": None}
    described.update({
        "serving_mode": settings.serving.mode,
        "policy": {"name": policy_name(settings, current), "version": version_of(current)},
        "experience": {"record": settings.experience.record, "sample": settings.experience.sample,
                       "stream": topology.experience_stream(settings.broker.prefix)},
        "worker": worker_id,
    })
    return described
