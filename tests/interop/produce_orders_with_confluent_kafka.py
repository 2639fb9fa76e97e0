"""Writes orders, order cancels and product stock top-ups the way a
stranger's service would: Confluent's own Python client, configured as it
comes (librdkafka's DEFAULT partitioner, `consistent_random`: CRC32 of the
key, a random partition for no key — not the murmur2 Java clients and the
gateway use), and its AvroSerializer against the schema registry. Nothing
from surge.

usage: produce_orders_with_confluent_kafka.py BOOTSTRAP REGISTRY_URL RECORDS_JSON

RECORDS_JSON is a file holding a list of records, each
    {"id": str, "topic": str, "key": str | null, "type": "create" | "cancel" | "adjust", ...}
with, by type,
    create: "orderId", "userId", "currency", "requestedAt" (epoch ms),
            "items": [{"productId": str, "quantity": int, "unitPrice": "12.50"}]
    cancel: "requestId", "orderId", "userId", "reason" (str | null), "requestedAt"
    adjust: "requestId", "productId", "delta", "reason" (str | null), "requestedAt"
and each becomes one OrderCreate, OrderCancel or InventoryCommand
(AdjustStock) on its topic, with that record key (null: no key), and the
headers a service of its own would add: `x-sender` and `x-request-id` (the
record's "id"). The value's schema is the latest version registered under
the topic's subject (`<topic>-value`); nothing is registered.

Prints one JSON object per delivered record, in delivery order:
    {"id": str, "topic": str, "partition": int, "offset": int}
and exits non-zero if any record was not delivered.
"""
import json
import signal
import sys
from datetime import datetime, timezone
from decimal import Decimal

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

ADJUST = "dev.surge.inventory.AdjustStock"
CENT = Decimal("0.01")


def at(ms):
    # timestamp-millis: the serializer takes an aware datetime.
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def value_of(r):
    if r["type"] == "create":
        return {
            "orderId": r["orderId"],
            "userId": r["userId"],
            "items": [
                {
                    "productId": i["productId"],
                    "quantity": i["quantity"],
                    # decimal(18,2): a Decimal with the schema's scale.
                    "unitPrice": Decimal(i["unitPrice"]).quantize(CENT),
                }
                for i in r["items"]
            ],
            "currency": r["currency"],
            "couponId": None,
            "requestedAt": at(r["requestedAt"]),
        }
    if r["type"] == "cancel":
        return {
            "requestId": r["requestId"],
            "orderId": r["orderId"],
            "userId": r["userId"],
            "reason": r["reason"],
            "requestedAt": at(r["requestedAt"]),
        }
    if r["type"] == "adjust":
        return {
            "requestId": r["requestId"],
            "productId": r["productId"],
            "requestedAt": at(r["requestedAt"]),
            # (name, record): the union branch by its name, as the schema says.
            "command": (ADJUST, {"delta": r["delta"], "reason": r["reason"]}),
        }
    raise SystemExit(f"unknown record type {r['type']!r}")


def main():
    # Never outlive the test that runs us.
    signal.alarm(120)
    bootstrap, registry_url, records_path = sys.argv[1:4]
    with open(records_path, encoding="utf-8") as f:
        records = json.load(f)

    registry = SchemaRegistryClient({"url": registry_url, "timeout": 10})
    conf = {
        "auto.register.schemas": False,
        "use.latest.version": True,
        # TopicNameStrategy, `<topic>-value`: what the Java serializer
        # defaults to and what surge registers under.
        "subject.name.strategy": topic_subject_name_strategy,
    }
    # One serializer per topic: each caches its own subject's latest schema.
    serializers = {}
    # Deliberately nothing but the bootstrap servers: in particular no
    # `partitioner`, so librdkafka's default (consistent_random) places records.
    producer = Producer({"bootstrap.servers": bootstrap})

    failures = []
    delivered = []

    def report(record_id):
        def on_delivery(err, msg):
            if err is not None:
                failures.append(f"{record_id}: {err}")
            else:
                delivered.append(
                    {"id": record_id, "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}
                )
        return on_delivery

    for r in records:
        topic = r["topic"]
        if topic not in serializers:
            serializers[topic] = AvroSerializer(registry, None, conf=conf)  # latest version of the subject
        value = serializers[topic](value_of(r), SerializationContext(topic, MessageField.VALUE))
        key = r["key"].encode() if r["key"] is not None else None
        headers = [("x-sender", b"python-confluent-kafka"), ("x-request-id", r["id"].encode())]
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers, on_delivery=report(r["id"]))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    for d in delivered:
        print(json.dumps(d), flush=True)
    if left or failures or len(delivered) != len(records):
        raise SystemExit(
            f"{len(delivered)} of {len(records)} delivered, {left} still queued, failures: {failures[:5]}"
        )


if __name__ == "__main__":
    main()
