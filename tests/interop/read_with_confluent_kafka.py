"""Reads surge records with nothing from surge: Confluent's own Python client
and its AvroDeserializer against the schema registry. This is what a data
team does; if it works, any Confluent-compatible client does.

usage: read_with_confluent_kafka.py BOOTSTRAP REGISTRY_URL TOPIC COUNT

Prints one JSON object per record (value decoded by the registry's schema):
{"key": ..., "value": {...}}, timestamp-millis as epoch milliseconds and
decimals as plain strings, as the Java reader (java/) prints them.
"""
import json
import signal
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def plain(value):
    if isinstance(value, datetime):
        # Exact: value.timestamp() * 1000 is a float and can round a millisecond off.
        return (value - EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"unexpected {type(value)}")


def deserialize(registry_url, payload, topic):
    """Decodes with a fresh registry client per attempt: a registry call that
    stalls (seen once: a response that never came on a kept-alive connection)
    times out and is retried instead of hanging the reader."""
    last = None
    for attempt in range(5):
        try:
            client = SchemaRegistryClient({"url": registry_url, "timeout": 10})
            return AvroDeserializer(client)(payload, SerializationContext(topic, MessageField.VALUE))
        except Exception as e:  # noqa: BLE001 - report the last one
            last = e
            print(f"registry attempt {attempt + 1} failed: {e!r}", file=sys.stderr, flush=True)
            time.sleep(1)
    raise SystemExit(f"could not decode with the registry: {last!r}")


def main():
    # Never outlive the test that runs us.
    signal.alarm(150)
    bootstrap, registry_url, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"interop-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    seen = 0
    idle_polls = 0
    try:
        while seen < count and idle_polls < 60:
            msg = consumer.poll(0.5)
            if msg is None:
                idle_polls += 1
                continue
            if msg.error():
                raise SystemExit(f"consume error: {msg.error()}")
            value = deserialize(registry_url, msg.value(), topic)
            print(json.dumps({"key": msg.key().decode(), "value": value}, default=plain), flush=True)
            seen += 1
    finally:
        consumer.close()
    if seen < count:
        raise SystemExit(f"only {seen} of {count} records arrived")


if __name__ == "__main__":
    main()
