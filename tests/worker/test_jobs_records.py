"""Job records in the artifact root, chunk planning and the exact merge of chunk statistics."""

import json
import math
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from maze_engine.core.stats.running import RunningStats
from worker.jobs.codec import new_job
from worker.jobs.records import JobRecords, claim, write_json_atomic
from worker.jobs.schema import JobKind, JobResult, JobStatus
from worker.jobs.split import chunk_id, merge_statistics, plan_chunks, share_episodes, stats_from_summary


def test_records_results_and_cancellation_marks(tmp_path: Path) -> None:
    records = JobRecords(tmp_path)
    assert records.record("j") is None and records.result("j") is None
    records.update_record("j", status="running", attempts=1)
    records.update_record("j", attempts=2)
    record = records.record("j")
    assert record is not None and (record["status"], record["attempts"]) == ("running", 2)
    first = JobResult("j", "train", JobStatus.FINISHED, "out", summary={"epochs": 1})
    assert records.store_result(first) == first
    second = JobResult("j", "train", JobStatus.FAILED, "out")
    assert records.store_result(second).status is JobStatus.FINISHED, "the first result stays"
    assert records.result("j") == first
    assert (records.record("j") or {})["status"] == "finished"
    records.mark_cancelled("k", "first")
    records.mark_cancelled("k", "second")
    assert (records.cancellation("k") or {})["reason"] == "first"


def test_job_ids_never_leave_the_root(tmp_path: Path) -> None:
    records = JobRecords(tmp_path)
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(ValueError, match="job_id"):
            records.job_dir(bad)


def test_a_damaged_result_reads_as_none(tmp_path: Path) -> None:
    records = JobRecords(tmp_path)
    path = records.job_dir("j") / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert records.result("j") is None


def test_atomic_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "b.json", {"x": math.nan})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def _race(path: str, queue: "multiprocessing.Queue[bool]") -> None:
    queue.put(claim(Path(path), "racer"))


def test_exactly_one_process_wins_a_claim(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[bool] = context.Queue()
    processes = [context.Process(target=_race, args=(str(tmp_path / "x.claim"), queue)) for _ in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
    assert sorted(queue.get(timeout=5) for _ in processes) == [False] * 5 + [True]


@pytest.mark.parametrize(("episodes", "chunks", "expected"), [
    (10, 3, [4, 3, 3]), (4, 4, [1, 1, 1, 1]), (2, 5, [1, 1]), (7, 1, [7])])
def test_episodes_are_shared_evenly(episodes: int, chunks: int, expected: list[int]) -> None:
    assert share_episodes(episodes, chunks) == expected


def test_chunk_plans_replace_episodes_and_seed() -> None:
    job = new_job("roll", "rollout", ["runner=sequential", "runner.n_episodes=9", "seed=5", "env.name=X"],
                  chunks=3)
    plan = plan_chunks(job, 9, 5)
    assert [chunk.job_id for chunk in plan.jobs] == [chunk_id("roll", i, 3) for i in range(3)]
    assert plan.jobs[0].job_id == "roll_chunk-1-of-3"
    for index, chunk in enumerate(plan.jobs):
        assert chunk.kind is JobKind.ROLLOUT and chunk.chunk_of is not None
        assert (chunk.chunk_of.parent, chunk.chunk_of.index, chunk.chunk_of.count) == ("roll", index, 3)
        assert [o for o in chunk.overrides if o.startswith("runner.n_episodes")] == ["runner.n_episodes=3"]
        assert "env.name=X" in chunk.overrides and "seed=5" not in chunk.overrides
    seeds = {next(o for o in chunk.overrides if o.startswith("seed=")) for chunk in plan.jobs}
    assert len(seeds) == 3, "each chunk gets a seed of its own"
    assert plan_chunks(job, 9, 5) == plan, "a seeded split is reproducible"
    assert all("seed=null" in chunk.overrides for chunk in plan_chunks(job, 9, None).jobs)


def test_merged_statistics_equal_those_of_all_values() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=n) * 10 + 3 for n in (5, 1, 12)]
    summaries: list[dict[str, dict[str, float]]] = []
    for values in parts:
        stats = RunningStats()
        for value in values:
            stats.add(float(value))
        summaries.append({"episode_return": stats.summary(), "episode_length": {"count": 0}})
    merged = merge_statistics(summaries)
    everything = np.concatenate(parts)
    got = merged["episode_return"]
    assert got["count"] == len(everything)
    assert got["mean"] == pytest.approx(everything.mean(), rel=1e-12)
    assert got["std"] == pytest.approx(everything.std(), rel=1e-9)
    assert (got["min"], got["max"]) == (everything.min(), everything.max())
    assert merged["episode_length"]["count"] == 0


def test_a_summary_gives_back_its_sums() -> None:
    stats = RunningStats()
    for value in (1.0, 2.0, 6.0):
        stats.add(value)
    again = stats_from_summary(stats.summary())
    assert again.count == 3
    assert again.total == pytest.approx(9.0) and again.total_sq == pytest.approx(41.0)


@pytest.mark.parametrize("answered", [True, False])
def test_a_leftover_copy_answers_only_when_the_result_may_be_lost(tmp_path: Path, answered: bool) -> None:
    from worker.broker.job_transport import JobDelivery
    from worker.jobs.codec import encode_job
    from worker.jobs.intake import JobIntake, Rejected
    from worker.wire import topology

    records = JobRecords(tmp_path)
    stored = records.store_result(JobResult("leftover", "rollout", JobStatus.FINISHED, "out"))
    if answered:
        records.update_record("leftover", answered=True)
    # A lease copy come back to the queue: it carries the attempts header a worker adds.
    delivery = JobDelivery(tag=1, body=encode_job(new_job("leftover", "rollout")), queue="q", reply_to="r",
                           correlation_id="c", headers={topology.JOB_ATTEMPTS_HEADER: 1}, redelivered=False,
                           properties=None)
    decision = JobIntake(records).check(delivery, delivery_limit=3)
    assert isinstance(decision, Rejected)
    # Answered: the client has its result. Not answered (the reply was lost with a connection): send it.
    assert decision.result == (None if answered else stored)
