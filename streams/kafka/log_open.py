"""The daemon's Kafka log: appends to the events topic, follows the derived topics."""

from __future__ import annotations

from adaptd.streams.kafka.log import KafkaLog, parse_kafka_url
from adaptd.streams.kafka.topics import DEFAULT_NAMESPACE, DERIVED_PROCESSORS, derived_topic, event_key, events_topic


def open_kafka_log(url: str) -> KafkaLog:
    """The log ``adaptd up --log kafka://HOST:PORT[/NAMESPACE]`` uses.

    Partitions ``0..n-1`` are the events topic (appends keyed by (tenant, program)); the
    derived topics' partitions follow, so the projector reads the workers' outputs too.
    Consumer groups are named ``<namespace>.<group>``.  Appends are packed: one Kafka
    message per (tenant, program) of a batch (``streams.kafka.packing``), which is what
    lets the workers fold tens of thousands of events a second.

    Raises:
        LogError: bad url, cluster unreachable, or a topic missing.
    """
    servers, namespace = parse_kafka_url(url)
    ns = namespace or DEFAULT_NAMESPACE
    return KafkaLog(servers, events_topic(ns), follow=[derived_topic(p, ns) for p in DERIVED_PROCESSORS],
                    key_of=event_key, group_prefix=f"{ns}.", pack=True)
