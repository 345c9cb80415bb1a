"""The publishing gate: a trained policy becomes the next version only when it is not worse than the last.

"Worse" compares best evaluation returns: the run's (the training job's summary) against the one recorded in
the manifest of the latest published version. The comparison is made right before the version number is
claimed (``publish_policy``'s ``check_predecessor``), so two jobs publishing at once each compare against the
version they would follow. ``force`` publishes regardless. Nothing to compare (no version yet, or none with a
recorded return) publishes; a run without a return of its own does not replace a version that has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.errors import WorkerError
from worker.policy_store.store import PublishedPolicy, publish_policy


@dataclass(frozen=True)
class PublishOutcome:
    """What the gate did: published ``policy`` as a new version, or kept ``policy``, the current one."""

    published: bool
    policy: PublishedPolicy
    message: str
    """One line saying which happened and why, with both returns."""

    def to_plain(self) -> dict[str, Any]:
        """The job result's ``policy`` map: ``{name, version, published, best_eval_return, message}``."""
        return {"name": self.policy.name, "version": self.policy.version, "published": self.published,
                "best_eval_return": self.policy.best_eval_return, "message": self.message}


class PolicyKept(WorkerError):
    """Raised inside ``publish_policy`` to call a publication off; ``current`` stays the latest version."""

    def __init__(self, current: PublishedPolicy, message: str) -> None:
        super().__init__(message)
        self.current = current
        self.message = message


def _text(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f}"


def verdict(current: PublishedPolicy | None, run_return: float | None, force: bool = False) -> str | None:
    """None to publish after ``current`` (the latest version, None if none), else why it is kept."""
    if force or current is None or current.best_eval_return is None:
        return None
    if run_return is not None and run_return >= current.best_eval_return:
        return None
    return (f"kept version {current.version}: its recorded return {_text(current.best_eval_return)} beats "
            f"this run's {_text(run_return)} (force_publish publishes anyway)")


def publish_if_not_worse(artifact_root: str | Path, name: str, run_dir: str | Path,
                         best_eval_return: float | None, force: bool = False) -> PublishOutcome:
    """Publish ``run_dir`` as the next version of ``name`` unless the latest version's recorded return is
    better than ``best_eval_return`` (``force``: publish anyway); raises what ``publish_policy`` raises."""
    compared: list[PublishedPolicy | None] = []

    def check(current: PublishedPolicy | None) -> None:
        compared.append(current)
        reason = verdict(current, best_eval_return, force)
        if reason is not None:
            assert current is not None
            raise PolicyKept(current, reason)

    try:
        published = publish_policy(artifact_root, name, run_dir, best_eval_return, check_predecessor=check)
    except PolicyKept as kept:
        return PublishOutcome(False, kept.current, kept.message)
    previous = compared[-1] if compared else None
    if previous is None:
        why = "the first version"
    elif force and verdict(previous, best_eval_return) is not None:
        why = (f"forced: this run's best evaluation return {_text(best_eval_return)} is below version "
               f"{previous.version}'s {_text(previous.best_eval_return)}")
    elif previous.best_eval_return is None:
        why = f"version {previous.version} has no recorded return to compare"
    else:
        why = (f"this run's best evaluation return {_text(best_eval_return)} is not worse than version "
               f"{previous.version}'s {_text(previous.best_eval_return)}")
    return PublishOutcome(True, published, f"published version {published.version}: {why}")
