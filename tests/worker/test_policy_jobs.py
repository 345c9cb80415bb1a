"""From training to serving against the real broker: a training job with ``publish_policy`` publishes and
announces a version, and an agent worker serving that name answers new episodes with it."""

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from job_harness import TINY_TRAINING, RecordingClient, job_settings, job_worker  # noqa: E402
from policy_harness import NAME, metric, serving, version_of  # noqa: E402
from worker_harness import Producer, wait_until  # noqa: E402

from worker.jobs.codec import new_job  # noqa: E402
from worker.jobs.schema import JobStatus  # noqa: E402

pytestmark = pytest.mark.integration


def train_and_publish(client: RecordingClient, job_id: str, force: bool = False) -> int:
    job = new_job(job_id, "train", TINY_TRAINING, publish_policy=NAME, force_publish=force)
    client.submit(job)
    result = client.result(job.job_id, timeout=300)
    assert result.status is JobStatus.FINISHED, result
    assert result.policy is not None and result.policy["name"] == NAME
    return int(result.policy["version"])


def test_a_trained_and_published_policy_is_served_by_the_agent_workers(
        amqp_url: str, prefix: str, tmp_path: Path, broker_cleanup: Any) -> None:
    client = RecordingClient(amqp_url, prefix)
    producer: Producer | None = None
    try:
        with job_worker(job_settings(amqp_url, prefix, tmp_path), broker_cleanup):
            assert train_and_publish(client, "train-v1") == 1
            with serving(amqp_url, prefix, tmp_path) as service:
                producer = Producer(amqp_url, prefix)
                assert version_of(producer, "before", 0) == 1
                # forced: the gate would keep version 1 should this run's evaluation come out worse
                assert train_and_publish(client, "train-v2", force=True) == 2
                wait_until(lambda: metric(service, "maze_worker_policy_version") == 2,
                           "the agent worker does not serve version 2")
                assert version_of(producer, "after", 0) == 2
                assert version_of(producer, "before", 1) == 1
    finally:
        if producer is not None:
            producer.close()
        client.close()
