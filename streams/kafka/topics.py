"""Kafka topic names and the partition key of events (the scale-out layout).

Names live in a namespace (default ``adaptd``, set by ``kafka://HOST:PORT/NAMESPACE``):

- ``adaptd.events``: every ingested event, keyed by (tenant, program), so all events of
  one program, and the processor state of that program, live in one partition.
- ``adaptd.derived.<processor>``: what each processor emits (perf windows, signals...),
  keyed the same way; the daemon's single projector follows them into DuckDB.

Events without a program (an ``lm_call`` or ``feedback`` that leaves it out) are keyed by
tenant alone: give them their program if they must join their execution's partition.
"""

from __future__ import annotations

import orjson

#: Default namespace of topics and consumer groups (``kafka://HOST:PORT/NAMESPACE``).
DEFAULT_NAMESPACE = "adaptd"
#: Ingested events (what ``adaptd up --log kafka://...`` produces).
EVENTS_TOPIC = f"{DEFAULT_NAMESPACE}.events"
#: Processors whose outputs have a derived topic (``build_processors`` names).
DERIVED_PROCESSORS = ("history", "error_burst", "drift", "anomaly")


def events_topic(namespace: str = DEFAULT_NAMESPACE) -> str:
    """The topic ingested events go to."""
    return f"{namespace}.events"


def derived_topic(processor: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The topic the outputs of ``processor`` go to."""
    return f"{namespace}.derived.{processor}"


def event_key(value: bytes) -> bytes | None:
    """The partition key of an encoded event: ``tenant \\x00 program``.

    Returns None for a record that is not a JSON object (it goes to partition 0 and is
    dead-lettered by the projector like in embedded mode).
    """
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    return key_of_event(event)


def key_of_event(event: dict) -> bytes:
    """The partition key of a decoded event (same as ``event_key`` of its encoding)."""
    return f"{event.get('tenant') or 'default'}\x00{event.get('program') or ''}".encode()
