"""Reads surge records with nothing from surge: Confluent's own Python client
and its AvroDeserializer against the schema registry. This is what a data
team does; if it works, any Confluent-compatible client does.

usage: read_with_confluent_kafka.py BOOTSTRAP REGISTRY_URL TOPIC COUNT

Prints one JSON object per record (value decoded by the registry's schema).
"""
import json
import sys
import uuid
from datetime import datetime
from decimal import Decimal

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def plain(value):
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"unexpected {type(value)}")


def main():
    bootstrap, registry_url, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
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
            value = deserializer(msg.value(), SerializationContext(topic, MessageField.VALUE))
            print(json.dumps({"key": msg.key().decode(), "value": value}, default=plain), flush=True)
            seen += 1
    finally:
        consumer.close()
    if seen < count:
        raise SystemExit(f"only {seen} of {count} records arrived")


if __name__ == "__main__":
    main()
