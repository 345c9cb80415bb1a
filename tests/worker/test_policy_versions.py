"""Policy versions without a broker: the table serves episodes on the version they started on, the reloader
loads newer versions in the background and rejects unusable ones."""

import gc
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import msgpack
import pytest

from maze_engine.core.errors import ConfigError, SpaceMismatchError
from worker.episodes.table import EpisodeTable
from worker.metrics import WorkerMetrics
from worker.policy_store.announcements import encode_announcement
from worker.policy_store.reload import PolicyReloader, PolicyReloadMetrics
from worker.policy_store.store import publish_policy
from worker.policy_store.versioned import (
    VersionedFactory,
    published_policy_name,
    published_source,
    with_statistics,
)
from worker.serving.factory import build_factory
from worker.settings import EpisodeSettings
from worker.wire.protocol import StateMessage

sys.path.insert(0, str(Path(__file__).parent))
from policy_harness import policy_config, save_run, save_runs  # noqa: E402
from worker_harness import CARTPOLE, SignPolicy, state, wait_until  # noqa: E402


class Source:
    """A DeploymentSource with a policy version, over a SignPolicy that records its batch sizes."""

    def __init__(self, version: int | None) -> None:
        self.policy = SignPolicy()
        self.factory = build_factory(self.policy, CARTPOLE)
        self.policy_version = version

    def create(self) -> Any:
        return self.factory.create()


def msg(episode: str, seq: int, done: bool = False) -> StateMessage:
    return StateMessage(1, episode, seq, state(0.1), None if seq == 0 else 1.0, done, None)


def versions(answers: list[Any]) -> list[Any]:
    return [msgpack.unpackb(answer.body)["policy_version"] for answer in answers]


def test_running_episodes_keep_their_version_and_new_ones_get_the_new_one() -> None:
    old, new = Source(1), Source(2)
    released: list[Any] = []
    table = EpisodeTable(old, EpisodeSettings(), on_released=released.append)
    assert versions(table.handle([msg("a", 0), msg("b", 0)])) == [1, 1]
    table.set_factory(new)
    assert versions(table.handle([msg("a", 1), msg("c", 0), msg("b", 1)])) == [1, 2, 1]
    # One forward pass per version and batch.
    assert old.policy.batch_sizes == [2, 2] and new.policy.batch_sizes == [1]
    assert versions(table.handle([msg("a", 2, done=True)])) == [1]
    assert released == []
    assert versions(table.handle([msg("b", 2, done=True), msg("c", 1)])) == [1, 2]
    assert released == [old]
    assert versions(table.handle([msg("d", 0)])) == [2]
    # Released means let go: nothing in the table keeps the old version's policy alive.
    policy = weakref.ref(old.policy)
    del old
    released.clear()
    gc.collect()
    assert policy() is None


def test_a_replaced_source_without_episodes_is_released_at_once() -> None:
    old, new = Source(1), Source(2)
    released: list[Any] = []
    table = EpisodeTable(old, EpisodeSettings(), on_released=released.append)
    table.set_factory(new)
    assert released == [old]
    table.set_factory(new)
    assert released == [old]


def test_a_policy_that_is_not_published_answers_with_version_nil() -> None:
    table = EpisodeTable(build_factory(SignPolicy(), CARTPOLE), EpisodeSettings())
    answers = table.handle([msg("a", 0)])
    assert versions(answers) == [None]


# -------------------------------------------------------------------------------------------- the reloader


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return save_runs(tmp_path_factory.mktemp("runs"))


def wait_ready(reloader: PolicyReloader, timeout: float = 60.0) -> VersionedFactory:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = reloader.take_ready()
        if ready is not None:
            return ready
        time.sleep(0.02)
    raise AssertionError(f"no new version loaded within {timeout} s")


def sample(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels or None)


def test_the_reloader_loads_announced_and_missed_versions_and_rejects_bad_ones(
        tmp_path: Path, runs: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    publish_policy(tmp_path, "cartpole", runs["one"])
    current = published_source(policy_config(tmp_path), CARTPOLE, None, build_factory)
    assert current.policy_version == 1 and current.create().policy is current.policy
    metrics = WorkerMetrics()
    reloader = PolicyReloader(current, PolicyReloadMetrics(metrics.registry))
    try:
        assert sample(metrics, "maze_worker_policy_version") == 1
        two = publish_policy(tmp_path, "cartpole", runs["two"])
        reloader.on_announcement(encode_announcement(publish_policy(tmp_path, "other", runs["one"])))
        reloader.on_announcement(b"\x93garbage")
        reloader.on_announcement(encode_announcement(two))
        loaded = wait_ready(reloader)
        assert loaded.policy_version == 2 and reloader.current is loaded
        assert sample(metrics, "maze_worker_policy_version") == 2
        assert sample(metrics, "maze_worker_policy_reloads_total", outcome="loaded") == 1
        assert "ignoring a policy announcement" in caplog.text
        reloader.on_announcement(encode_announcement(two))  # already served: nothing to do
        # Version 3 does not fit the served env: rejected, version 2 serves on.
        three = publish_policy(tmp_path, "cartpole", runs["acrobot"])
        reloader.on_announcement(encode_announcement(three))
        wait_until(lambda: sample(metrics, "maze_worker_policy_reloads_total", outcome="rejected") == 1,
                   "the version was not rejected", interval=0.02)
        assert reloader.take_ready() is None and reloader.current is loaded and 3 in reloader.rejected
        assert ("policy 'cartpole' version 3 rejected, version 2 keeps serving: SpaceMismatchError"
                in caplog.text)
        # Version 4 appears without an announcement (missed while disconnected): found by check_latest.
        publish_policy(tmp_path, "cartpole", runs["one"])
        reloader.check_latest()
        assert wait_ready(reloader).policy_version == 4
        assert sample(metrics, "maze_worker_policy_version") == 4
    finally:
        reloader.close()


def test_a_worker_refuses_to_start_without_a_published_version(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^policy.name: no version of policy 'cartpole' is published"):
        published_source(policy_config(tmp_path), CARTPOLE, None, build_factory)
    with pytest.raises(ConfigError, match=r"^policy.name: expected 1-64"):
        published_policy_name(policy_config(tmp_path, name=""))
    assert published_policy_name({"_target_": "maze_engine.RandomPolicy"}) is None
    assert published_policy_name(policy_config(tmp_path)) == "cartpole"


def test_normalization_wrappers_read_the_statistics_of_the_version(tmp_path: Path,
                                                                   runs: dict[str, Path]) -> None:
    run = save_run(tmp_path / "run")
    (run / "statistics.json").write_text("{}")
    published = publish_policy(tmp_path, "cartpole", run)
    wrappers: dict[str, Any] = {
        "maze_engine.ObservationNormalizationWrapper": {"statistics_dump": None, "exclude": []},
        "maze_engine.LogStatsWrapper": {}}
    pointed = with_statistics(wrappers, published)
    assert pointed["maze_engine.ObservationNormalizationWrapper"] == {
        "statistics_dump": str(published.path / "statistics.json"), "exclude": []}
    assert pointed["maze_engine.LogStatsWrapper"] == {}
    listed = with_statistics([{"_target_": "maze_engine.ObservationNormalizationWrapper"}], published)
    assert listed == [{"_target_": "maze_engine.ObservationNormalizationWrapper",
                       "statistics_dump": str(published.path / "statistics.json")}]
    without = publish_policy(tmp_path, "cartpole", runs["one"])
    assert with_statistics(wrappers, without) is wrappers


def test_an_unusable_latest_version_at_start_falls_back_to_the_one_before(
        tmp_path: Path, runs: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    publish_policy(tmp_path, "cartpole", runs["one"])
    publish_policy(tmp_path, "cartpole", runs["acrobot"])
    current = published_source(policy_config(tmp_path), CARTPOLE, None, build_factory)
    assert current.policy_version == 1 and current.rejected_at_start == {2}
    assert "policy 'cartpole' version 2 rejected at start, trying version 1" in caplog.text
    metrics = WorkerMetrics()
    reloader = PolicyReloader(current, PolicyReloadMetrics(metrics.registry))
    try:
        reloader.check_latest()  # version 2 is known to be unusable: not loaded again
        publish_policy(tmp_path, "cartpole", runs["two"])
        reloader.check_latest()
        assert wait_ready(reloader).policy_version == 3
        assert sample(metrics, "maze_worker_policy_reloads_total", outcome="rejected") is None
    finally:
        reloader.close()
    with pytest.raises(SpaceMismatchError):  # nothing older to fall back to, or a pinned version: an error
        published_source({**policy_config(tmp_path), "version": 2}, CARTPOLE, None, build_factory)
    publish_policy(tmp_path / "only", "cartpole", runs["acrobot"])
    with pytest.raises(SpaceMismatchError):
        published_source(policy_config(tmp_path / "only"), CARTPOLE, None, build_factory)


def test_a_versioned_factory_builds_other_published_versions(tmp_path: Path, runs: dict[str, Path]) -> None:
    publish_policy(tmp_path, "cartpole", runs["one"])
    publish_policy(tmp_path, "cartpole", runs["two"])
    current = published_source(policy_config(tmp_path), CARTPOLE, None, build_factory)
    assert current.policy_version == 2 and current.at_version(2) is current
    older = current.at_version(1)
    assert older.policy_version == 1 and older.policy is not current.policy
    assert older.create().policy is older.policy
    with pytest.raises(Exception, match="3"):
        current.at_version(3)
