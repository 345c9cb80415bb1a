"""The worker's edge to RabbitMQ: the only service-side modules that import pika.

pika's errors are translated here into ``worker.broker.link``'s; nothing above this package sees AMQP.
"""
