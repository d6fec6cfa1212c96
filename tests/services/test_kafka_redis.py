"""The real broker and the real Redis server answer and keep what they are given."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer


def test_produce_consume_round_trip(kafka_bootstrap, make_topic):
    topic = make_topic("roundtrip", partitions=2)
    payloads = {f"key-{i}".encode(): f'{{"n": {i}, "id": "{uuid.uuid4()}"}}'.encode() for i in range(20)}
    acked: list[str] = []
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for key, value in payloads.items():
        producer.produce(topic, value=value, key=key, on_delivery=lambda err, msg: acked.append(err or "ok"))
    assert producer.flush(30) == 0
    assert acked == ["ok"] * len(payloads)

    consumer = Consumer({
        "bootstrap.servers": kafka_bootstrap,
        "group.id": f"{topic}-group",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    received = {}
    try:
        for _ in range(300):
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            received[msg.key()] = msg.value()
            if len(received) == len(payloads):
                break
    finally:
        consumer.close()
    assert received == payloads


def test_redis_ping_write_read(redis_prefix):
    client, prefix = redis_prefix
    assert client.ping() is True
    key = prefix + "greeting"
    client.set(key, "你好 hello".encode())
    client.hincrby(prefix + "counts", "negative", 3)
    assert client.get(key).decode() == "你好 hello"
    assert client.hgetall(prefix + "counts") == {b"negative": b"3"}
