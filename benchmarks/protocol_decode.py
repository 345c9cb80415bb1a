"""Cost of decoding and validating states (worker.wire.protocol.decode_state) against a bare msgpack.unpackb.

Two bodies: a CartPole state as a list of four floats, and an 84x84x4 uint8 image in the binary ndarray
encoding. Baseline and candidate run interleaved in the same process over several rounds (so load from other
processes hits both alike) and the best round of each is reported. Prints one JSON line with microseconds per
decode and the ratio to the bare unpackb.

    .venv/bin/python benchmarks/protocol_decode.py [--count 50000] [--rounds 5]
"""

import argparse
import json
import time
from collections.abc import Callable
from functools import partial

import msgpack
import numpy as np

from worker.wire.protocol import StateMessage, decode_state, encode_state


def _best_us(function: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        function()
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    bodies = {
        "cartpole_list": encode_state(StateMessage(1, "episode-0001", 17, [0.02, -0.01, 0.03, 0.04], 1.0)),
        "image_ndarray": encode_state(StateMessage(1, "episode-0001", 17,
                                                   np.zeros((84, 84, 4), dtype=np.uint8), 1.0)),
    }
    result: dict[str, object] = {"benchmark": "protocol_decode", "count": args.count}
    for name, body in bodies.items():
        count = args.count if name == "cartpole_list" else max(1, args.count // 10)
        baseline = candidate = float("inf")
        for _ in range(args.rounds):
            baseline = min(baseline, _best_us(partial(msgpack.unpackb, body), count))
            candidate = min(candidate, _best_us(partial(decode_state, body), count))
        result[f"{name}_unpackb_us"] = round(baseline, 3)
        result[f"{name}_decode_state_us"] = round(candidate, 3)
        result[f"{name}_ratio"] = round(candidate / baseline, 2)
    # What the binary encoding saves: the same image sent as nested lists, decoded by a bare unpackb.
    lists = msgpack.packb({"v": 1, "episode": "episode-0001", "seq": 17, "done": False,
                           "state": np.zeros((84, 84, 4), dtype=np.uint8).tolist()})
    count = max(1, args.count // 100)
    result["image_lists_unpackb_us"] = round(min(_best_us(partial(msgpack.unpackb, lists), count)
                                                 for _ in range(args.rounds)), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
