"""A recorded episode handed off between worker processes stays one coherent record.

Two ``maze-worker`` processes record every episode (small chunks) under a closed-loop load; one is stopped
with SIGTERM mid-episode and hands its episodes, with their unpublished steps, to the other. Read back, every
finished run joins without gaps from seq 0, some hold chunks of both workers, and each recorded observation
is the wrapper stack's (``StepPatternWrapper`` writes the step count's pattern into it, so an observation
recorded from a stack that lost its state would show).
"""

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cluster_harness import ClosedLoop, ClusterWorker, pattern, start_worker  # noqa: E402
from conftest import BrokerCleanup  # noqa: E402

from worker.experience.reader import RecordedEpisode, Stitcher, read_episodes  # noqa: E402
from worker.settings import BrokerSettings  # noqa: E402

SHARDS = 4
RECORDING = ("experience.record=true", "experience.chunk_steps=3")


@pytest.mark.integration
def test_an_episode_handed_off_by_sigterm_stays_one_coherent_record(amqp_url: str, prefix: str,
                                                                    broker_cleanup: BrokerCleanup) -> None:
    broker_cleanup.queue(f"{prefix}.experience")
    workers: list[ClusterWorker] = [start_worker(amqp_url, prefix, *RECORDING, shards=SHARDS)
                                    for _ in range(2)]
    load = ClosedLoop(amqp_url, prefix, episodes=12, length=40)
    try:
        load.run_until(lambda: len({a.worker for a in load.answers if a.at > time.monotonic() - 1}) == 2,
                       timeout=60)
        load.run(1.5)
        leaving = workers.pop()
        assert leaving.terminate() == 0, leaving.log()
        assert "handed" in leaving.log()
        load.run(3.0)
        assert not [answer for answer in load.answers if not answer.right or answer.code is not None]
        load.close()
        # Alone, it parks its open episodes (and their unpublished steps) in the hand-off queues.
        assert workers[0].terminate() == 0, workers[0].log()
    finally:
        load.close()
        for worker in workers:
            worker.stop()

    stitcher = Stitcher()
    episodes = list(read_episodes(BrokerSettings(url=amqp_url, prefix=prefix), idle_s=1.0,
                                  stitcher=stitcher))
    assert stitcher.broken == 0 and episodes
    assert stitcher.unfinished <= 12  # at most the episodes in flight at the end, parked for the next worker
    moved = [episode for episode in episodes if len(set(episode.workers)) == 2]
    assert moved, "no recorded episode spans the hand-off"
    for episode in episodes:
        check_coherent(episode)
    finished = [episode for episode in episodes if episode.end == "done"]
    assert finished and all(episode.steps == 39 for episode in finished)


def check_coherent(episode: RecordedEpisode) -> None:
    """Seqs 0, 1, 2... without gaps, and every observation the one the episode's own stack made."""
    columns = episode.columns
    assert columns is not None and episode.resumed_at is None
    seqs = columns["seq"].tolist()
    assert seqs == list(range(len(seqs))), (episode.episode, seqs)
    firsts = columns["observation"]["observation"][:, 0]
    np.testing.assert_array_equal(firsts, np.array([pattern(seq) for seq in seqs], dtype=np.float32),
                                  err_msg=f"episode {episode.episode}: an observation not of its stack")
    assert columns["applied_reported"].sum() == 0  # the load reports none: the proposals stand in
    np.testing.assert_array_equal(columns["applied_action"]["action"], columns["action"]["action"])
