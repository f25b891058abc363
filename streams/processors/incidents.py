"""Incidents and the ``signal`` events that announce them (shared by the anomaly processors).

One incident is one alert: a key + metric that turns anomalous gets an incident with a
deterministic id and one ``open`` signal; while it stays open further anomalies of that
key + metric are folded into it (at most an ``update`` when the severity rises); once the
metric has been back in range long enough a ``resolved`` signal closes it.  Everything
here is pure: ids are UUIDv5 of what identifies the signal, times come from the caller.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from adaptd.streams.events import SCHEMA_VERSION, derived_id
from adaptd.streams.processors.base import iso_us
from adaptd.streams.processors.keys import Key

#: Namespace of incident and signal ids (see ``incident_id`` / ``signal_id``).
ANOMALY_NS = uuid.UUID("8d2b6c1e-5f0a-4c3e-9a7d-1b4e2f6a9c05")
SEVERITIES = ("info", "warning", "critical")


@dataclass(slots=True)
class Incident:
    """An open incident of one key + metric (plain data: pickled in snapshots)."""

    id: str
    #: Event time (µs) it opened at, and the severity of its last signal.
    opened_us: int
    severity: str
    #: Which detector path / window opened it (e.g. ``"10s"``, ``"burst:10s"``).
    opened_by: str
    #: Consecutive observations back in range (resolution needs ``resolve_after`` of them).
    calm: int = 0
    #: Observations since the last signal of this incident (rate-limits ``update``).
    since_signal: int = 0
    #: Signals emitted so far (part of the ``update`` ids).
    signals: int = 1
    #: Worst score and observation seen while open (reported when it resolves).
    peak_score: float = 0.0
    peak_observed: float | None = None
    #: Baseline frozen at the opening (resolution judges recovery against it).
    baseline: float | None = None
    #: The last event time (µs) the metric was observed at while open.
    last_seen_us: int = 0


def key_text(key: Key) -> str:
    """The key as one string (null parts as NUL, so None and "" differ)."""
    return "\x1f".join("\x00" if part is None else part for part in key)


def incident_id(processor: str, key: Key, metric: str, opened_us: int) -> str:
    """The id of the incident of ``key`` + ``metric`` opened at ``opened_us``."""
    return str(derived_id(ANOMALY_NS, "incident", processor, key_text(key), metric, iso_us(opened_us)))


def signal_id(source: str, incident: str, state: str, seq: int) -> str:
    """The id of the ``seq``-th signal (``state``) of an incident."""
    return str(derived_id(ANOMALY_NS, source, incident, state, seq))


def finite(value: float | None, digits: int = 6) -> float | None:
    """``value`` rounded to ``digits`` significant digits for explanations; None for
    None / NaN / infinity (event JSON carries no NaN)."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    if value == 0.0:
        return 0.0
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def signal_event(*, source: str, key: Key, metric: str, state: str, incident: Incident, ts_us: int,
                 window_start_us: int | None, score: float, explanation: dict[str, Any],
                 severity: str | None = None) -> dict[str, Any]:
    """A JSON-ready ``signal`` event (``adaptd.streams.events.Signal``) of ``incident``.

    ``ts`` and ``window_end`` are ``ts_us``; ``severity`` defaults to the incident's; the
    id is ``signal_id(source, incident.id, state, incident.signals)``, so the caller bumps
    ``incident.signals`` between signals.
    """
    return {
        "id": signal_id(source, incident.id, state, incident.signals),
        "ts": iso_us(ts_us), "v": SCHEMA_VERSION, "kind": "signal", "tenant": key[0], "source": source,
        "attrs": {}, "signal_type": "anomaly", "state": state,
        "program": key[1], "module": key[2], "route": key[3], "model": key[4], "metric": metric,
        "score": finite(score), "severity": severity or incident.severity,
        "window_start": None if window_start_us is None else iso_us(window_start_us), "window_end": iso_us(ts_us),
        "incident_id": incident.id, "explanation": explanation,
    }


def more_severe(a: str, b: str) -> bool:
    """True when severity ``a`` ranks above ``b``."""
    return SEVERITIES.index(a) > SEVERITIES.index(b)
