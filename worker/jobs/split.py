"""Distributed rollouts: planning the chunk jobs of a split rollout and merging their statistics exactly.

A rollout of ``n`` episodes split into ``k`` chunks becomes ``k`` ordinary rollout jobs
(``<id>_chunk-<i>-of-<k>``) with ``runner.n_episodes`` set to their share and a seed of their own, published
to the same rollout queue so that any job worker takes them. Each chunk's statistics (mean, std, min, max,
count per metric) are turned back into the sums they came from and merged with ``RunningStats.merge``: the
merged mean and std are those of all episodes together, exactly (up to floating-point rounding), as the
parallel rollout runner merges its processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from maze_engine.core.stats.running import RunningStats
from maze_engine.rollout.runner import derive_seeds
from worker.jobs.codec import JobDecodeError
from worker.jobs.schema import ChunkOf, JobKind, JobMessage

EPISODES_KEY = "runner.n_episodes"
SEED_KEY = "seed"


def chunk_id(parent: str, index: int, count: int) -> str:
    """Job id of chunk ``index`` (0-based) of ``count``: ``<parent>_chunk-<index+1>-of-<count>``."""
    return f"{parent}_chunk-{index + 1}-of-{count}"


def share_episodes(n_episodes: int, chunks: int) -> list[int]:
    """``n_episodes`` spread over ``chunks`` as evenly as possible (the first ones get one more)."""
    if n_episodes < 1 or chunks < 1:
        raise ValueError(f"chunks: expected n_episodes >= 1 and chunks >= 1, got {n_episodes}, {chunks}")
    chunks = min(chunks, n_episodes)
    base, extra = divmod(n_episodes, chunks)
    return [base + (1 if index < extra else 0) for index in range(chunks)]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


@dataclass(frozen=True)
class ChunkPlan:
    """The chunk jobs of one split rollout, in index order."""

    parent: str
    jobs: tuple[JobMessage, ...]


def plan_chunks(job: JobMessage, n_episodes: int, seed: int | None) -> ChunkPlan:
    """The chunk jobs of rollout ``job`` whose composed config has ``n_episodes`` and ``seed``.

    Each chunk's overrides are the job's, with ``runner.n_episodes`` replaced by its share and ``seed`` by a
    seed derived from the job's (so a seeded split rollout is reproducible; an unseeded one stays unseeded).
    """
    if job.kind is not JobKind.ROLLOUT or not job.chunks:
        raise JobDecodeError("chunks", f"chunks: only a rollout job with chunks >= 1 is split, got "
                                       f"{job.kind} with chunks={job.chunks}", job.job_id)
    shares = share_episodes(n_episodes, job.chunks)
    seeds: Sequence[int | None] = (derive_seeds(seed, len(shares)) if seed is not None
                                   else [None] * len(shares))
    kept = [item for item in job.overrides if _key(item) not in (EPISODES_KEY, SEED_KEY)]
    jobs = []
    for index, (episodes, chunk_seed) in enumerate(zip(shares, seeds, strict=True)):
        seed_text = "null" if chunk_seed is None else str(chunk_seed)
        overrides = [*kept, f"{EPISODES_KEY}={episodes}", f"{SEED_KEY}={seed_text}"]
        jobs.append(JobMessage(job_id=chunk_id(job.job_id, index, len(shares)), kind=JobKind.ROLLOUT,
                               config=job.config, overrides=tuple(overrides), time_limit_s=job.time_limit_s,
                               chunk_of=ChunkOf(job.job_id, index, len(shares))))
    return ChunkPlan(job.job_id, tuple(jobs))


def stats_from_summary(summary: Mapping[str, float]) -> RunningStats:
    """The RunningStats a ``{mean, std, min, max, count}`` summary came from (sums recovered exactly)."""
    count = int(summary.get("count") or 0)
    if count == 0:
        return RunningStats()
    mean, std = float(summary["mean"]), float(summary["std"])
    total = mean * count
    return RunningStats(count=count, total=total, total_sq=(std * std + mean * mean) * count,
                        minimum=float(summary["min"]), maximum=float(summary["max"]))


def merge_statistics(parts: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Merge several rollouts' ``{metric: {mean, std, min, max, count}}`` into those of all of them."""
    merged: dict[str, RunningStats] = {}
    for part in parts:
        for metric, summary in part.items():
            if isinstance(summary, Mapping) and "count" in summary:
                merged.setdefault(metric, RunningStats()).merge(stats_from_summary(summary))
    return {metric: stats.summary() for metric, stats in merged.items()}
