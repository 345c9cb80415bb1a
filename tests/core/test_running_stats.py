"""RunningStats: summaries against numpy, and merging equals adding everything to one aggregate."""

import math
import pickle

import numpy as np
import pytest

from maze_engine import RunningStats

VALUES = [3.0, -1.5, 0.0, 7.25, 2.0, 2.0, -4.0, 11.0, 0.5]


def _stats(values):
    stats = RunningStats()
    for value in values:
        stats.add(value)
    return stats


def test_summary_matches_numpy():
    summary = _stats(VALUES).summary()
    assert summary["count"] == len(VALUES)
    assert summary["mean"] == pytest.approx(np.mean(VALUES))
    assert summary["std"] == pytest.approx(np.std(VALUES))  # population std, like numpy's default
    assert (summary["min"], summary["max"]) == (-4.0, 11.0)


@pytest.mark.parametrize("splits", [[0], [1], [4], [4, 6], [2, 5, 8], [9]])
def test_merge_equals_direct(splits):
    parts, start = [], 0
    for end in [*splits, len(VALUES)]:
        parts.append(_stats(VALUES[start:end]))
        start = end
    merged = RunningStats()
    for part in parts:
        merged.merge(part)
    direct = _stats(VALUES).summary()
    for name, value in merged.summary().items():
        assert value == pytest.approx(direct[name])


def test_empty_summary_and_merge_with_empty():
    summary = RunningStats().summary()
    assert summary["count"] == 0
    assert all(math.isnan(summary[name]) for name in ("mean", "std", "min", "max"))
    stats = _stats([1.0, 3.0])
    stats.merge(RunningStats())
    assert stats.summary() == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0, "count": 2}


def test_single_value_and_constant_values_have_zero_std():
    assert _stats([5.0]).summary()["std"] == 0.0
    assert _stats([0.1] * 1000).summary()["std"] == pytest.approx(0.0, abs=1e-6)


def test_survives_pickling_for_worker_processes():
    stats = _stats(VALUES)
    assert pickle.loads(pickle.dumps(stats)).summary() == stats.summary()
