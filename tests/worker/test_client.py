"""MazeClient against a real broker and a tiny in-test consumer bound the way maze-worker binds its shards."""

import sys
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pika
import pytest

from worker.client import (
    BadMessage,
    ClientTimeout,
    ConnectionFailed,
    EpisodeLost,
    InternalError,
    MazeClient,
    OutOfOrder,
    Overloaded,
    ReplyError,
    TopologyMissing,
    UnknownEpisode,
    Unroutable,
)
from worker.wire import topology
from worker.wire.protocol import CONTENT_TYPE, DecodeError, ErrorCode, decode_state
from worker.wire.replies import ErrorInfo, Reply, encode_reply

sys.path.insert(0, str(Path(__file__).parents[1]))
from support.worker_topology import declare_worker_topology  # noqa: E402

pytestmark = pytest.mark.integration

SHARDS = 4


def connect(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


class EchoConsumer:
    """Consumes every shard and answers each state with {"episode", "seq", "state"} (nil when done).

    A state {"cmd": ...} asks for something else: "error:<code>" an error reply, "ignore" no reply,
    "delay:<seconds>" a late reply, "garbage" a reply body that is not msgpack.
    """

    def __init__(self, url: str, prefix: str, shards: int = SHARDS) -> None:
        self.url, self.prefix, self.shards = url, prefix, shards
        # episode, seq, queue, properties, routing key of every state consumed
        self.seen: list[tuple[str, int, str, pika.BasicProperties, str]] = []
        self.shards_of: dict[str, set[str]] = defaultdict(set)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="echo-consumer", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            raise RuntimeError(f"echo consumer did not start: {self._failure!r}")

    def _run(self) -> None:
        try:
            self._connection = connect(self.url)
            channel = self._connection.channel()
            declare_worker_topology(channel, self.prefix, self.shards)
            channel.basic_qos(prefetch_count=64)
            for queue in topology.shard_queues(self.prefix, self.shards):
                channel.basic_consume(queue, lambda ch, m, p, b, q=queue: self._on_message(ch, m, p, b, q))
            self._channel = channel
        except BaseException as err:  # reported to the test thread
            self._failure = err
            self._ready.set()
            return
        self._ready.set()
        channel.start_consuming()
        self._connection.close()

    def _on_message(self, channel: Any, method: Any, properties: pika.BasicProperties, body: bytes,
                    queue: str) -> None:
        try:
            message = decode_state(body)
        except DecodeError as err:
            reply = Reply(err.episode, err.seq, None, ErrorInfo(err.code, err.message))
            self._answer(channel, properties, encode_reply(reply))
            channel.basic_ack(method.delivery_tag)
            return
        self.seen.append((message.episode, message.seq, queue, properties, method.routing_key))
        self.shards_of[message.episode].add(queue)
        command = message.state.get("cmd", "") if isinstance(message.state, dict) else ""
        body_out: bytes | None
        if command.startswith("error:"):
            code = ErrorCode(command.removeprefix("error:"))
            error = ErrorInfo(code, f"you asked for {code}")
            body_out = encode_reply(Reply(message.episode, message.seq, None, error))
        elif command == "garbage":
            body_out = b"\xc1 not msgpack"
        elif command == "ignore":
            body_out = None
        else:
            action = None if message.done else {"episode": message.episode, "seq": message.seq,
                                                 "state": message.state}
            body_out = encode_reply(Reply(message.episode, message.seq, action))
        if command.startswith("delay:"):
            delay = float(command.removeprefix("delay:"))
            self._connection.call_later(delay, lambda: self._answer(channel, properties, body_out))
        elif body_out is not None:
            self._answer(channel, properties, body_out)
        channel.basic_ack(method.delivery_tag)

    def _answer(self, channel: Any, properties: pika.BasicProperties, body: bytes | None) -> None:
        channel.basic_publish("", properties.reply_to, body,
                              pika.BasicProperties(correlation_id=properties.correlation_id,
                                                   content_type=CONTENT_TYPE))

    def stop(self) -> None:
        self._connection.add_callback_threadsafe(self._channel.stop_consuming)
        self._thread.join(10)


@pytest.fixture
def echo(amqp_url: str, prefix: str) -> Iterator[EchoConsumer]:
    consumer = EchoConsumer(amqp_url, prefix)
    yield consumer
    consumer.stop()


@pytest.fixture
def client(amqp_url: str, prefix: str, echo: EchoConsumer) -> Iterator[MazeClient]:
    with MazeClient(amqp_url, prefix=prefix, timeout=5.0) as maze_client:
        yield maze_client


def test_act_returns_the_action_and_publishes_the_documented_properties(
        client: MazeClient, echo: EchoConsumer) -> None:
    action = client.act("episode-a", 0, {"x": [1.0, 2.0]})
    assert action == {"episode": "episode-a", "seq": 0, "state": {"x": [1.0, 2.0]}}
    episode, seq, queue, properties, routing_key = echo.seen[-1]
    assert (episode, seq, routing_key) == ("episode-a", 0, "episode-a")
    assert queue in topology.shard_queues(client.prefix, SHARDS)
    assert properties.content_type == CONTENT_TYPE and properties.delivery_mode == 2
    assert properties.reply_to and properties.correlation_id


def test_ndarray_states_travel_in_the_binary_encoding(client: MazeClient) -> None:
    state = {"image": np.arange(12, dtype=np.uint8).reshape(3, 4), "vector": np.array([0.5, -1.5])}
    action = client.act("episode-nd", 0, state)
    # the consumer decoded real arrays and echoed them back as plain lists
    assert action["state"] == {"image": state["image"].tolist(), "vector": [0.5, -1.5]}


def test_episode_helper_numbers_steps_and_closes(client: MazeClient, echo: EchoConsumer) -> None:
    episode = client.episode()
    assert episode.step([0.0]) == {"episode": episode.id, "seq": 0, "state": [0.0]}
    assert episode.step([1.0], reward=1.0)["seq"] == 1
    assert episode.step([2.0], reward=1.0)["seq"] == 2
    episode.close([3.0], reward=0.0)
    assert episode.closed and episode.seq == 4
    assert [seq for ep, seq, *_ in echo.seen if ep == episode.id] == [0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="is closed"):
        episode.step([4.0])
    other = client.episode("named-episode")
    other.step([0.0])
    assert other.step([1.0], reward=1.0, done=True) is None  # done is answered with action nil
    assert other.closed


def test_one_thread_drives_many_episodes_with_send_and_poll(client: MazeClient, echo: EchoConsumer) -> None:
    episodes, steps = 40, 5
    next_seq = {f"ep-{i}": 0 for i in range(episodes)}
    for name in next_seq:
        client.send(name, 0, {"who": name})
    answered = 0
    deadline = time.monotonic() + 30
    while client.pending and time.monotonic() < deadline:
        for reply in client.poll(timeout=1.0):
            episode, seq = reply.episode, reply.seq
            assert reply.error is None and episode is not None
            assert reply.action == {"episode": episode, "seq": seq, "state": {"who": episode}}
            assert seq == next_seq[episode]
            answered += 1
            next_seq[episode] += 1
            if next_seq[episode] < steps:
                client.send(episode, next_seq[episode], {"who": episode}, reward=1.0)
    assert answered == episodes * steps
    # consistent hashing: every state of an episode went to the same shard, and the load is spread out
    assert all(len(queues) == 1 for queues in echo.shards_of.values())
    assert len(set().union(*echo.shards_of.values())) > 1


def test_wait_collects_the_replies_of_many_states(client: MazeClient) -> None:
    ids = {client.send(f"w-{i}", 0, [i]): i for i in range(25)}
    replies = client.wait(ids)
    assert set(replies) == set(ids)
    for correlation_id, reply in replies.items():
        assert reply.action["state"] == [ids[correlation_id]] and reply.episode == f"w-{ids[correlation_id]}"
    assert client.pending == 0 and client.poll() == []


@pytest.mark.parametrize(("code", "exception"), [
    (ErrorCode.BAD_MESSAGE, BadMessage), (ErrorCode.OUT_OF_ORDER, OutOfOrder),
    (ErrorCode.UNKNOWN_EPISODE, UnknownEpisode), (ErrorCode.OVERLOADED, Overloaded),
    (ErrorCode.INTERNAL, InternalError), (ErrorCode.EPISODE_LOST, EpisodeLost),
])
def test_error_replies_raise_the_matching_exception(client: MazeClient, code: ErrorCode,
                                                    exception: type[ReplyError]) -> None:
    with pytest.raises(exception) as info:
        client.act("episode-e", 7, {"cmd": f"error:{code}"})
    error = info.value
    assert isinstance(error, ReplyError) and error.code == code
    assert (error.episode, error.seq, error.message) == ("episode-e", 7, f"you asked for {code}")
    assert str(error) == f"{code}: you asked for {code}"


def test_error_replies_are_returned_not_raised_by_wait(client: MazeClient) -> None:
    correlation_id = client.send("episode-e", 0, {"cmd": "error:overloaded"})
    reply = client.wait([correlation_id])[correlation_id]
    assert reply.error is not None and reply.error.code == ErrorCode.OVERLOADED and reply.action is None


def test_episode_seq_stays_after_an_error_so_the_step_can_be_retried(client: MazeClient) -> None:
    episode = client.episode("retry-me")
    with pytest.raises(Overloaded):
        episode.step({"cmd": "error:overloaded"})
    assert episode.seq == 0
    assert episode.step({"ok": True})["seq"] == 0


def test_undecodable_reply_raises_internal_error(client: MazeClient) -> None:
    with pytest.raises(InternalError, match="undecodable reply"):
        client.act("episode-g", 0, {"cmd": "garbage"})


def test_act_times_out_and_a_late_reply_is_dropped(client: MazeClient) -> None:
    started = time.monotonic()
    with pytest.raises(ClientTimeout) as info:
        client.act("episode-t", 0, {"cmd": "delay:0.5"}, timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1.5
    assert "episode episode-t seq 0" in str(info.value)
    assert client.pending == 0
    client.sleep(1.0)
    assert client.stale_replies == 1 and client.poll() == []


def test_act_without_any_reply_times_out(client: MazeClient) -> None:
    with pytest.raises(ClientTimeout):
        client.act("episode-i", 0, {"cmd": "ignore"}, timeout=0.3)


def test_wait_can_be_repeated_after_a_timeout(client: MazeClient) -> None:
    fast = client.send("episode-fast", 0, [1])
    slow = client.send("episode-slow", 0, {"cmd": "delay:0.6"})
    with pytest.raises(ClientTimeout) as info:
        client.wait([fast, slow], timeout=0.2)
    assert info.value.missing == [slow] and list(info.value.received) == [fast]
    assert client.wait([slow], timeout=5.0)[slow].action["episode"] == "episode-slow"


def test_wait_rejects_unknown_ids(client: MazeClient) -> None:
    with pytest.raises(ValueError, match="^correlation_ids: expected"):
        client.wait(["never-sent"])


@pytest.mark.parametrize(("episode", "seq", "field"), [
    ("", 0, "episode"), ("x" * 129, 0, "episode"), ("é" * 128, 0, "episode"), (7, 0, "episode"),
    ("ok", -1, "seq"), ("ok", 1.0, "seq"),
])
def test_send_rejects_bad_episode_or_seq_before_publishing(client: MazeClient, episode: Any, seq: Any,
                                                           field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        client.send(episode, seq, [0])
    assert client.pending == 0


def test_missing_topology_is_reported_clearly(amqp_url: str, prefix: str) -> None:
    expected = f"^no maze-worker has declared {prefix}.states; start maze-worker first"
    with pytest.raises(TopologyMissing, match=expected):
        MazeClient(amqp_url, prefix=prefix)


def test_unbound_exchange_returns_the_state_as_unroutable(amqp_url: str, prefix: str) -> None:
    connection = connect(amqp_url)
    declare_worker_topology(connection.channel(), prefix, 1, bind=False)
    connection.close()
    with MazeClient(amqp_url, prefix=prefix) as client, pytest.raises(Unroutable, match="could not route"):
        client.act("episode-u", 0, [0], timeout=5.0)


def test_wrong_password_fails_without_showing_it(amqp_url: str) -> None:
    parts = urllib.parse.urlsplit(amqp_url)
    netloc = f"{parts.username}:not-the-S3cret@{parts.hostname}:{parts.port or 5672}"
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    with pytest.raises(ConnectionFailed) as info:
        MazeClient(url)
    assert "not-the-S3cret" not in str(info.value) and "****" in str(info.value)


def test_unreachable_broker_fails_without_showing_the_password() -> None:
    with pytest.raises(ConnectionFailed) as info:
        MazeClient("amqp://user:hunter2secret@127.0.0.1:1/%2F")
    assert "hunter2secret" not in str(info.value) and "amqp://user:****@127.0.0.1:1/%2F" in str(info.value)


def test_repr_masks_the_password(client: MazeClient) -> None:
    password = urllib.parse.urlsplit(client.url).password
    if password:
        assert f":{password}@" not in repr(client) and ":****@" in repr(client)


def test_plain_pika_producer_in_the_docs_works(amqp_url: str, prefix: str, echo: EchoConsumer) -> None:
    """Runs the producer example of docs/protocol.md section 9 as written, with this test's URL and prefix."""
    text = (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    section = text[text.index("## 9. A minimal producer"):]
    start = section.index("```python\n") + len("```python\n")
    code = section[start:section.index("\n```", start)]
    assert "amqp://guest:guest@localhost:5672/%2F" in code and '"maze.states"' in code
    code = code.replace("amqp://guest:guest@localhost:5672/%2F", amqp_url)
    code = code.replace('"maze.states"', f'"{prefix}.states"')
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/protocol.md", "exec"), namespace)
    assert namespace["action"] == {"episode": "episode-1", "seq": 1, "state": [0.03, 0.18, 0.02, -0.26]}
    assert [(episode, seq) for episode, seq, *_ in echo.seen] == [("episode-1", 0), ("episode-1", 1),
                                                                   ("episode-1", 2)]
