"""Writes coupon issue requests the way a stranger's service would: Confluent's
own Python client, configured as it comes (librdkafka's DEFAULT partitioner,
`consistent_random`: CRC32 of the key, a random partition for no key — not
the murmur2 Java clients and the gateway use), and its AvroSerializer
against the schema registry. Nothing from surge.

usage: produce_with_confluent_kafka.py BOOTSTRAP REGISTRY_URL TOPIC REQUESTS_JSON

REQUESTS_JSON is a file holding a list of
    {"requestId": str, "couponId": str, "userId": str, "key": str | null}
and each becomes one IssueRequest on TOPIC, with that record key (null: no
key), and the headers a service of its own would add: `x-sender` and
`x-request-id`. The value's schema is the latest version registered under
the topic's subject (`<TOPIC>-value`); nothing is registered.

Prints one JSON object per delivered record, in delivery order:
    {"requestId": str, "partition": int, "offset": int}
and exits non-zero if any record was not delivered.
"""
import json
import signal
import sys
from datetime import datetime, timezone

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

ISSUE = "dev.surge.coupon.IssueRequest"


def main():
    # Never outlive the test that runs us.
    signal.alarm(120)
    bootstrap, registry_url, topic, requests_path = sys.argv[1:5]
    with open(requests_path, encoding="utf-8") as f:
        requests = json.load(f)

    registry = SchemaRegistryClient({"url": registry_url, "timeout": 10})
    serializer = AvroSerializer(
        registry,
        None,  # the writer schema is the subject's latest version
        conf={
            "auto.register.schemas": False,
            "use.latest.version": True,
            # TopicNameStrategy, `<topic>-value`: what the Java serializer
            # defaults to and what surge registers under.
            "subject.name.strategy": topic_subject_name_strategy,
        },
    )
    # Deliberately nothing but the bootstrap servers: in particular no
    # `partitioner`, so librdkafka's default (consistent_random) places records.
    producer = Producer({"bootstrap.servers": bootstrap})

    failures = []
    delivered = []

    def report(request_id):
        def on_delivery(err, msg):
            if err is not None:
                failures.append(f"{request_id}: {err}")
            else:
                delivered.append({"requestId": request_id, "partition": msg.partition(), "offset": msg.offset()})
        return on_delivery

    context = SerializationContext(topic, MessageField.VALUE)
    for r in requests:
        value = {
            "requestId": r["requestId"],
            "couponId": r["couponId"],
            "requestedAt": datetime.now(timezone.utc),
            # (name, record): the union branch by its name, as the schema says.
            "command": (ISSUE, {"userId": r["userId"]}),
        }
        key = r["key"].encode() if r["key"] is not None else None
        headers = [("x-sender", b"python-confluent-kafka"), ("x-request-id", r["requestId"].encode())]
        while True:
            try:
                producer.produce(
                    topic,
                    key=key,
                    value=serializer(value, context),
                    headers=headers,
                    on_delivery=report(r["requestId"]),
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    for d in delivered:
        print(json.dumps(d), flush=True)
    if left or failures or len(delivered) != len(requests):
        raise SystemExit(
            f"{len(delivered)} of {len(requests)} delivered, {left} still queued, failures: {failures[:5]}"
        )


if __name__ == "__main__":
    main()
