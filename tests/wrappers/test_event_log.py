"""EventLogWrapper and the event-log format: rows, flushing, value round trips, shared episode ids."""

import math
import multiprocessing

import numpy as np
import pytest

from maze_engine import (
    EventLogWrapper,
    EventRecord,
    TrajectoryRecordingWrapper,
    instantiate,
    read_event_logs,
    read_trajectories,
)
from maze_engine.core.env.gym_env import GymCoreEnv
from maze_engine.records.event_log import EventLogError, EventLogWriter, event_log_path


class EventCoreEnv(GymCoreEnv):
    """Raises ``tick`` on every step and ``even`` on steps whose count is even."""

    def get_step_events(self):
        t = self.env.unwrapped.t  # type: ignore[attr-defined]
        events = [EventRecord("tick", {"t": t, "label": f"step {t}", "position": np.array([t, -t])})]
        if t % 2 == 0:
            events.append(EventRecord("even", {"t": t}))
        return events


def _event_env(counter_env, **kwargs):
    env = counter_env(**kwargs)
    env.core_env = EventCoreEnv(env.core_env.env)
    return env


def _play(env, steps):
    env.reset()
    for _ in range(steps):
        env.step({"action": 0})


def test_rows_written_per_event_name(counter_env, tmp_path):
    env = EventLogWrapper.wrap(_event_env(counter_env, terminate_at=3), output_dir=tmp_path)
    _play(env, 3)
    episode = env.episode_id
    logs = read_event_logs(tmp_path)
    assert logs == {
        "tick": [{"episode_id": episode, "step": step, "t": step + 1, "label": f"step {step + 1}",
                  "position": [step + 1, -(step + 1)]} for step in range(3)],
        "even": [{"episode_id": episode, "step": 1, "t": 2}],
    }
    lines = (tmp_path / "tick.tsv").read_text().splitlines()
    assert lines[0] == "episode_id\tstep\tt\tlabel\tposition"
    assert lines[1] == f"{episode}\t0\t1\tstep 1\t[1, -1]"


def test_rows_are_flushed_at_episode_end_reset_and_close(counter_env, tmp_path):
    env = EventLogWrapper.wrap(_event_env(counter_env), output_dir=tmp_path)
    _play(env, 2)
    assert read_event_logs(tmp_path)["tick"] == []  # header only: still buffered
    first = env.episode_id
    _play(env, 1)  # the reset flushed the first episode
    assert [row["episode_id"] for row in read_event_logs(tmp_path)["tick"]] == [first, first]
    env.close()
    rows = read_event_logs(tmp_path)["tick"]
    assert [(row["episode_id"] == first, row["step"]) for row in rows] == [(True, 0), (True, 1), (False, 0)]


@pytest.mark.parametrize("value", [
    "", "plain text", "123", "true", "null", '"quoted"', "tab\there", "new\nline", " 7", "NaN", "[1]",
    None, True, False, 0, -12, 3.25, 1e-300, math.inf, -math.inf, [1, [2, "x"]], {"k": [1.5]},
])
def test_values_round_trip(tmp_path, value):
    writer = EventLogWriter(tmp_path)
    writer.add("e", 0, EventRecord("value", {"v": value}))
    writer.close()
    assert read_event_logs(tmp_path)["value"][0]["v"] == value


def test_numpy_values_and_nan(tmp_path):
    writer = EventLogWriter(tmp_path)
    writer.add("e", 4, EventRecord("np", {"f": np.float32(0.5), "i": np.int64(3), "b": np.bool_(True),
                                          "a": np.arange(3), "nan": math.nan}))
    writer.close()
    (row,) = read_event_logs(tmp_path)["np"]
    assert (row["f"], row["i"], row["b"], row["a"]) == (0.5, 3, True, [0, 1, 2])
    assert math.isnan(row["nan"]) and row["step"] == 4


def test_attributes_must_match_the_columns(tmp_path):
    writer = EventLogWriter(tmp_path)
    writer.add("e", 0, EventRecord("event", {"a": 1, "b": 2}))
    writer.add("e", 1, EventRecord("event", {"a": 3}))  # missing: empty cell, read back as None
    with pytest.raises(EventLogError, match="attribute 'c'"):
        writer.add("e", 2, EventRecord("event", {"a": 1, "c": 3}))
    writer.close()
    assert [row["b"] for row in read_event_logs(tmp_path)["event"]] == [2, None]


def test_existing_files_are_appended_with_their_header(tmp_path):
    for episode in ("one", "two"):
        writer = EventLogWriter(tmp_path)
        writer.add(episode, 0, EventRecord("event", {"a": episode}))
        writer.close()
    assert [row["a"] for row in read_event_logs(tmp_path)["event"]] == ["one", "two"]
    assert (tmp_path / "event.tsv").read_text().count("episode_id") == 1
    (tmp_path / "bad.tsv").write_text("x\ty\n")
    with pytest.raises(EventLogError, match="bad.tsv"):
        read_event_logs(tmp_path)


def test_unsafe_event_names_and_subfolders(tmp_path):
    for folder in ("a", "b"):
        writer = EventLogWriter(tmp_path / folder)
        writer.add(folder, 0, EventRecord("Inventory/piece discarded", {"n": 1}))
        writer.close()
    path = event_log_path(tmp_path / "a", "Inventory/piece discarded")
    assert path.name == "Inventory%2Fpiece%20discarded.tsv"
    rows = read_event_logs(tmp_path)["Inventory/piece discarded"]
    assert [row["episode_id"] for row in rows] == ["a", "b"]


def _write_rows(directory, worker, count):
    writer = EventLogWriter(directory, max_buffered_rows=7)
    for step in range(count):
        writer.add(f"worker{worker}", step, EventRecord("shared", {"payload": "x" * 50, "step": step}))
    writer.close()


def test_processes_appending_to_one_directory(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_rows, args=(tmp_path, worker, 300)) for worker in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=30)
        assert process.exitcode == 0
    rows = read_event_logs(tmp_path)["shared"]
    assert len(rows) == 900
    for worker in range(3):
        assert [row["step"] for row in rows if row["episode_id"] == f"worker{worker}"] == list(range(300))


@pytest.mark.parametrize("event_log_inside", [True, False])
def test_episode_id_shared_with_trajectory_recording(counter_env, tmp_path, event_log_inside):
    env = _event_env(counter_env, terminate_at=2)
    if event_log_inside:
        env = TrajectoryRecordingWrapper.wrap(EventLogWrapper.wrap(env, output_dir=tmp_path / "events"),
                                              output_dir=tmp_path / "trajectories")
    else:
        env = EventLogWrapper.wrap(TrajectoryRecordingWrapper.wrap(env, output_dir=tmp_path / "trajectories"),
                                   output_dir=tmp_path / "events")
    _play(env, 2)
    env.set_episode_id("chosen-id")  # from the outermost wrapper: names the next episode everywhere
    _play(env, 2)
    trajectory_ids = [t.episode_id for t in read_trajectories(tmp_path / "trajectories")]
    event_ids = sorted({row["episode_id"] for row in read_event_logs(tmp_path / "events")["tick"]})
    assert sorted(trajectory_ids) == event_ids
    assert trajectory_ids[1] == "chosen-id"


def test_output_dir_exists_before_any_event(counter_env, tmp_path):
    env = EventLogWrapper.wrap(counter_env(), output_dir=tmp_path / "events")
    _play(env, 2)
    env.close()
    assert read_event_logs(tmp_path / "events") == {}


def test_instantiate_from_config(counter_env, tmp_path):
    config = {"_target_": "maze_engine.EventLogWrapper", "output_dir": str(tmp_path)}
    env = instantiate(config, env=_event_env(counter_env, terminate_at=1))
    assert isinstance(env, EventLogWrapper)
    _play(env, 1)
    assert len(read_event_logs(tmp_path)["tick"]) == 1
