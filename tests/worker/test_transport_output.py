"""A batch of replies leaves the agent transport in one write: the frames pika buffers (three per reply) are
joined before the flush, and arrive intact and in order against the real broker."""

import pika
import pytest

from worker.broker.agent_transport import Transport, coalesce_output
from worker.settings import BrokerSettings

pytestmark = pytest.mark.integration


def test_buffered_frames_are_joined_and_every_reply_arrives_in_order(amqp_url: str, prefix: str) -> None:
    transport = Transport(BrokerSettings(url=amqp_url, prefix=prefix, shards=1))
    transport.connect()
    producer = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = producer.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        for number in range(20):
            transport.publish_reply(queue, f"c{number}", f"reply {number}".encode())
        # pika's own buffers: one per frame. This is what coalesce_output relies on; if a pika release
        # changes it, this fails rather than the worker silently going back to a system call per frame.
        buffers = transport._connection._impl._transport._tx_buffers  # type: ignore[union-attr]
        assert len(buffers) == 60
        before = b"".join(buffers)
        coalesce_output(transport._connection)
        assert list(buffers) == [before]
        transport.flush()
        received = []
        for _ in range(200):
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                producer.sleep(0.02)
                continue
            received.append((properties.correlation_id, body))
            if len(received) == 20:
                break
        assert received == [(f"c{number}", f"reply {number}".encode()) for number in range(20)]
    finally:
        producer.close()
        transport.close()
