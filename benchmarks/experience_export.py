"""Export throughput: recorded episodes from the experience stream to a Minari dataset, in steps per second.

Fills a fresh stream ``<prefix>.experience`` with the records workers publish for CartPole episodes (the
worker's own buffers and codec: policy observation dicts, proposals with log-probabilities, applied actions,
chunks of ``experience.chunk_steps``), then measures, in the same run:

- ``export``: ``maze-worker experience export``'s code path (read, decode, stitch, Minari's
  ``MinariStorage.update_episodes``), stopping at ``--episodes`` (no idle wait at the end);
- ``read_only``: reading and decoding the same records without writing anything (the stream's ceiling);
- ``write_only``: Minari writing the same episodes from memory (the dataset's ceiling).

Prints one JSON line; the target is >= 100,000 steps/s for the export.

    .venv/bin/python benchmarks/experience_export.py [--episodes 2000] [--mean-length 200] [--repeats 3]

Needs the broker (MAZE_AMQP_URL or amqp://guest:guest@127.0.0.1:5672/%2F).
"""

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from worker.broker.probe import delete_prefix
from worker.broker.stream import StreamPublisher, stream_arguments
from worker.episodes.spaces import ServedSpaces
from worker.experience.buffer import Chunk, RunBuffer
from worker.experience.export import export, to_buffer
from worker.experience.reader import Stitcher, read_records
from worker.experience.record import encode_record
from worker.serving.factory import build_factory
from worker.settings import BrokerSettings
from worker.wire import topology

URL = os.environ.get("MAZE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
TARGET_STEPS_PER_S = 100_000.0
CARTPOLE = {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"}


def recorded_chunks(episodes: int, mean_length: int, chunk_steps: int, seed: int = 0) -> list[Chunk]:
    """The chunks a worker's RunBuffers emit for ``episodes`` CartPole episodes (lengths around the mean)."""
    rng = np.random.default_rng(seed)
    chunks: list[Chunk] = []
    now = time.time()
    for number in range(episodes):
        buffer = RunBuffer(chunks.append, chunk_steps, uuid.uuid4().hex, f"episode-{number}", 3, None)
        length = int(rng.integers(mean_length // 2, mean_length * 3 // 2 + 1))
        observations = rng.normal(size=(length + 1, 4)).astype(np.float32)
        actions = rng.integers(0, 2, size=length)
        for seq in range(length):
            buffer.act(seq, {"observation": observations[seq]}, {"action": np.int64(actions[seq])},
                       -0.6931, None if seq == 0 else 1.0, None, now + seq * 0.01)
        buffer.finish(1.0, None, False, {"observation": observations[length]}, now + length * 0.01)
    return chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--mean-length", type=int, default=200, help="CartPole steps per episode, on average")
    parser.add_argument("--chunk-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each")
    args = parser.parse_args()

    prefix = f"bench-export-{uuid.uuid4().hex[:8]}"
    broker = BrokerSettings(url=URL, prefix=prefix)
    stream = topology.experience_stream(prefix)
    spaces = ServedSpaces.of(build_factory({"_target_": "maze_engine.RandomPolicy"}, CARTPOLE))
    assert spaces is not None
    chunks = recorded_chunks(args.episodes, args.mean_length, args.chunk_steps)
    bodies = [encode_record(chunk.record("bench-worker", "TorchPolicy", "act", time.time()))
              for chunk in chunks]
    steps = sum(chunk.steps for chunk in chunks)
    out = Path(tempfile.mkdtemp(prefix="maze-export-"))
    publisher = StreamPublisher(broker, "maze benchmark experience_export")
    try:
        publisher.connect()
        publisher.declare_stream(stream, stream_arguments(10 * 1024 ** 3, "1h"))
        for body in bodies:
            publisher.publish(stream, body)
        publisher.close()
        results: dict[str, list[float]] = {"export": [], "read_only": [], "write_only": []}
        for repeat in range(args.repeats):  # alternately, so machine load hits all three alike
            started = time.perf_counter()
            summary = export(broker, f"bench/export-v{repeat}", out, spaces, start="first",
                             episodes=args.episodes, progress=False)
            results["export"].append(summary.steps / (time.perf_counter() - started))
            assert summary.steps == steps, (summary.steps, steps)

            started = time.perf_counter()
            stitcher, joined, read_steps = Stitcher(), [], 0
            for record in read_records(broker, "first", idle_s=0.5):
                episode = stitcher.add(record)
                if episode is not None:
                    joined.append(episode)
                    read_steps += episode.steps
                    if len(joined) == args.episodes:
                        break
            results["read_only"].append(read_steps / (time.perf_counter() - started))

            from minari.dataset.minari_storage import MinariStorage

            buffers = [to_buffer(episode, spaces.observations[0]) for episode in joined]
            storage = MinariStorage.new(out / f"write-only-{repeat}",
                                        observation_space=spaces.observations[0],
                                        action_space=spaces.policy_actions[0], data_format="hdf5",
                                        jpeg_encoding=False)
            started = time.perf_counter()
            for start in range(0, len(buffers), 256):
                storage.update_episodes(buffers[start:start + 256])
            results["write_only"].append(steps / (time.perf_counter() - started))
    finally:
        publisher.close()
        shutil.rmtree(out, ignore_errors=True)
        delete_prefix(URL, prefix, queues=(stream,))

    best = {name: max(values) for name, values in results.items()}
    print(json.dumps({
        "benchmark": "experience_export", "episodes": args.episodes, "steps": steps,
        "records": len(bodies), "mean_length": args.mean_length, "chunk_steps": args.chunk_steps,
        "repeats": args.repeats,
        "export_steps_per_s": round(best["export"]), "read_only_steps_per_s": round(best["read_only"]),
        "minari_write_only_steps_per_s": round(best["write_only"]),
        "export_steps_per_s_all": [round(value) for value in results["export"]],
        "target_steps_per_s": TARGET_STEPS_PER_S, "meets_target": best["export"] >= TARGET_STEPS_PER_S,
    }))


if __name__ == "__main__":
    main()
