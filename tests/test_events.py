"""The event contract: the union, unknown fields, wire validation agreeing with the models."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from pydantic import ValidationError

from adaptd.streams.events import (
    DEFAULTS,
    KINDS,
    Execution,
    Signal,
    derived_id,
    fold_unknown,
    json_schema,
    new_id,
    parse_event,
    wire_list_adapter,
)

SAMPLES = [
    {"kind": "execution", "program": "qa", "module": "cot", "status": "error", "error_type": "Timeout",
     "duration_ms": 3.5, "tokens_in": 10, "inputs": {"q": {"len": 3}}},
    {"kind": "lm_call", "model": "openai/gpt-4o-mini", "tokens_in": 5, "cost_usd": 0.001, "cache_hit": True},
    {"kind": "feedback", "execution_id": str(uuid.uuid4()), "score": 0.5, "metric": "em"},
    {"kind": "route_decision", "program": "qa", "route": "r1", "policy_version": 3, "probability": 0.25},
    {"kind": "signal", "signal_type": "drift", "metric": "psi", "score": 0.3, "explanation": {"top": ["len"]}},
    {"kind": "adaptation", "action": "routing_table", "version": 2, "caused_by": [str(uuid.uuid4())]},
    {"kind": "optimizer_run", "job_id": "j1", "program": "qa", "optimizer": "MIPROv2", "status": "running"},
    {"kind": "window", "program": "qa", "window_size": "1m", "window_start": "2026-11-22T10:00:00Z",
     "window_end": "2026-11-22T10:01:00Z", "count": 3, "errors_by_type": {"Timeout": 1}, "p95_ms": 12.5},
]


def _full(sample: dict) -> dict:
    return {"id": str(new_id()), "ts": "2026-11-22T10:00:00Z", **sample}


def test_every_kind_has_a_sample() -> None:
    assert {s["kind"] for s in SAMPLES} == set(KINDS)


@pytest.mark.parametrize("sample", SAMPLES, ids=[s["kind"] for s in SAMPLES])
def test_wire_validation_agrees_with_the_models(sample: dict) -> None:
    raw = _full(sample)
    (wire,) = wire_list_adapter.validate_python([dict(raw)])
    canonical = {**DEFAULTS[raw["kind"]], **wire}
    assert parse_event(canonical) == parse_event(raw)


def test_unknown_fields_are_kept_in_attrs() -> None:
    event = parse_event({**_full(SAMPLES[0]), "region": "eu", "attrs": {"team": "x"}})
    assert event.attrs == {"team": "x", "region": "eu"}
    assert fold_unknown({"kind": "nope", "a": 1}) == {"kind": "nope", "a": 1}


def test_invalid_events_name_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        parse_event({**_full(SAMPLES[0]), "tokens_in": -3})
    assert "tokens_in" in str(info.value)
    with pytest.raises(ValidationError):
        parse_event({"kind": "teleport", "id": str(new_id()), "ts": "2026-11-22T10:00:00Z"})


def test_an_event_from_the_first_schema_version_still_validates() -> None:
    # The oldest shape we ever wrote: envelope plus the required fields only.
    old = {"id": str(uuid.uuid4()), "ts": "2026-01-01T00:00:00", "kind": "execution", "program": "p"}
    event = parse_event(old)
    assert isinstance(event, Execution) and event.v == 1 and event.status == "ok"


def test_ids_are_uuid7_and_derived_ids_deterministic() -> None:
    assert new_id().version == 7
    ns = uuid.UUID("00000000-0000-0000-0000-000000000001")
    assert derived_id(ns, "a", 1) == derived_id(ns, "a", 1) != derived_id(ns, "a", 2)


def test_json_schema_covers_every_kind() -> None:
    text = str(json_schema())
    assert all(kind in text for kind in KINDS)


def test_signal_defaults() -> None:
    signal = Signal(id=new_id(), ts=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), signal_type="anomaly")
    assert signal.state == "open" and signal.severity == "warning"
