"""The ingest fast path (one validation call per batch, one serialization per batch)
changes nothing a client or a reader can see: on a mixed corpus it gives the records,
bytes for bytes, and the verdicts of the full path, which checks item by item."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from typing import Any

import orjson
import pytest

from adaptd.daemon import ingest
from adaptd.daemon.dead_letter_limit import DeadLetterLimiter
from adaptd.daemon.ingest import Limits, Prepared, parse_items, prepare, serialize
from adaptd.daemon.ingest_fast import fast_refusals, fast_validator
from adaptd.streams.events import DEFAULTS, new_id

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def nested(levels: int) -> dict[str, object]:
    inner: dict[str, object] = {}
    for _ in range(levels - 1):
        inner = {"a": inner}
    return inner


def corpus() -> list[Any]:
    """Items of every sort the fast path must treat as the full path does."""
    eid = str(new_id())
    ts = "2026-11-22T10:00:00.123456Z"
    base = {"id": eid, "ts": ts}
    items: list[Any] = [
        # valid, each client kind, with and without optional fields
        {**base, "kind": "execution", "program": "qa", "module": "predict", "route": "r1", "model": "m",
         "duration_ms": 12.5, "status": "error", "tokens_in": 10, "tokens_out": 3, "cost_usd": 0.001,
         "inputs": {"question": {"type": "str", "len": 42}}, "outputs": None, "error_type": None},
        {"kind": "execution", "program": "qa", **base},
        {**base, "kind": "lm_call", "model": "openai/gpt", "cache_hit": False, "program": "qa", "attrs": {"k": [1, 2.5]}},
        {**base, "kind": "feedback", "execution_id": eid, "metric": "em", "score": 1},
        {**base, "kind": "route_decision", "program": "qa", "route": "r2", "policy_version": 3, "probability": 0.25},
        {**base, "kind": "optimizer_run", "job_id": "j", "program": "qa", "optimizer": "mipro", "status": "running",
         "details": {"trials": [{"score": 0.5}]}},
        # coercions the contract allows (lax mode), same either way
        {**base, "kind": "execution", "program": "qa", "duration_ms": "12.5", "tokens_in": 12.0, "v": 1},
        # the tenant from the payload is overridden, whatever its type or length
        {**base, "kind": "execution", "program": "qa", "tenant": "evil"},
        {**base, "kind": "execution", "program": "qa", "tenant": 7},
        {**base, "kind": "execution", "program": "qa", "tenant": "x" * 1000},
        # unknown fields are folded into attrs (full path)
        {**base, "kind": "execution", "program": "qa", "region": "eu", "attrs": {"a": 1}},
        {**base, "kind": "lm_call", "model": "m", "nested_extra": {"x": {"y": 1}}},
        # timestamps: naive, offset, far future, out of range once in UTC
        {**base, "ts": "2026-11-22T10:00:00", "kind": "feedback", "execution_id": eid},
        {**base, "ts": "2026-11-22T12:00:00+02:00", "kind": "feedback", "execution_id": eid},
        {**base, "ts": "2026-11-22T12:00:00-00:00", "kind": "feedback", "execution_id": eid},
        {**base, "ts": "2030-01-01T00:00:00Z", "kind": "feedback", "execution_id": eid},
        {**base, "ts": "0001-01-01T00:00:00+01:00", "kind": "feedback", "execution_id": eid},
        {**base, "ts": "9999-12-31T23:00:00-05:00", "kind": "feedback", "execution_id": eid},
        # refused: derived kinds, reserved source, invalid fields, non-objects, no kind
        {**base, "kind": "window", "window_size": "1m", "window_start": ts, "window_end": ts},
        {**base, "kind": "signal", "signal_type": "drift"},
        {**base, "kind": "execution", "program": "qa", "source": "adaptd.optimize"},
        {**base, "kind": "execution", "program": "qa", "source": "adaptd"},
        {**base, "kind": "execution", "program": "qa", "source": None},
        {**base, "kind": "execution", "program": "qa", "tokens_in": -1},
        {**base, "kind": "execution", "program": "qa", "status": "maybe", "attrs": None},
        {**base, "kind": "nope"},
        {"ts": ts, "program": "qa"},
        7, "text", None, [1, 2],
        # nesting: at the limit, beyond it, beyond it with another fault too
        {**base, "kind": "execution", "program": "qa", "inputs": nested(7)},
        {**base, "kind": "execution", "program": "qa", "inputs": nested(8)},
        {**base, "kind": "execution", "program": "qa", "attrs": {"l": [[[[[[[1]]]]]]]}},
        {**base, "kind": "execution", "program": "qa", "attrs": {"l": [[[[[[1]]]]]]}},
        {**base, "ts": "2030-01-01T00:00:00Z", "kind": "execution", "program": "qa", "inputs": nested(9)},
        {**base, "kind": "execution", "program": "qa", "inputs": nested(9), "extra": 1},
        # many brackets in strings (the byte bound is exceeded, the event is shallow)
        {**base, "kind": "execution", "program": "qa", "error_message": "{[" * 40},
        # size
        {**base, "kind": "execution", "program": "qa", "error_message": "x" * 3000},
        # values only the full path turns into records (NaN is written as null by orjson)
        {**base, "kind": "feedback", "execution_id": eid, "score": float("nan")},
        {**base, "kind": "lm_call", "model": "m", "attrs": {"nan": float("nan"), "when": NOW, "id": uuid.uuid4()}},
        {**base, "kind": "lm_call", "model": "m", "attrs": {"big": 2**70}},
        # a string no client can know: the batch is serialized one event at a time then
        {**base, "kind": "lm_call", "model": "m", "attrs": {"cut": [ingest._CUT, ingest._CUT]}},
        {**base, "kind": "execution", "program": "qa", "error_message": "\x00 nul and \ud7ff and emoji \U0001f600"},
    ]
    return items


def full_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "fast_validator", lambda kinds: None)
    monkeypatch.setattr(ingest, "serialize", lambda events: [_dumps_or_reason(e) for e in events])


def _dumps_or_reason(event: dict[str, Any]) -> bytes | str:
    try:
        return orjson.dumps(event)
    except TypeError as exc:
        return f"event cannot be stored: {exc}"


def comparable(out: Prepared) -> tuple[Any, ...]:
    """Everything but a dead letter's fresh id."""
    records = []
    for r in out.records:
        value = orjson.loads(r)
        if value["kind"] == "dead_letter":
            value.pop("id")
            records.append(value)
        else:
            records.append(r)
    return records, out.accepted, out.rejected, out.suppressed, out.future


def run_both(monkeypatch: pytest.MonkeyPatch, items: list[Any], **kw: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    limits = Limits(**{"max_depth": 8, "max_event_bytes": 2048, "dead_letters_per_s": 1e9, **kw.pop("limits", {})})
    fast = comparable(prepare(copy.deepcopy(items), received=NOW, limits=limits, **kw))
    with monkeypatch.context() as m:
        full_path_only(m)
        full = comparable(prepare(copy.deepcopy(items), received=NOW, limits=limits, **kw))
    return fast, full


@pytest.mark.parametrize("source", ["", "otlp"])
def test_the_fast_path_gives_the_records_and_verdicts_of_the_full_path(monkeypatch, source) -> None:
    items = corpus()
    fast, full = run_both(monkeypatch, items, tenant="acme", source=source)
    assert fast == full
    assert fast[1] > 10 and len(fast[2]) > 15  # the corpus has both sorts


@pytest.mark.parametrize("max_depth", [2, 3, 8, 64])
def test_the_same_holds_at_every_nesting_limit(monkeypatch, max_depth) -> None:
    fast, full = run_both(monkeypatch, corpus(), tenant="acme", limits={"max_depth": max_depth})
    assert fast == full


def test_the_same_holds_for_a_batch_of_valid_events_alone(monkeypatch) -> None:
    items = [i for i in corpus()[:8]] * 50
    fast, full = run_both(monkeypatch, items, tenant="t")
    assert fast == full and fast[1] == len(items)


def test_the_same_holds_for_a_body_through_parse_items(monkeypatch) -> None:
    body = orjson.dumps([i for i in corpus() if i is not None and not isinstance(i, list)
                         and "nan" not in str(i) and "big" not in str(i) and "when" not in str(i)])
    body = body[:-1] + b',{"kind":"execution","x":NaN}]'
    fast, full = run_both(monkeypatch, parse_items(body, "application/json"), tenant="acme")
    assert fast == full


def test_the_stored_record_is_the_event_merged_into_its_kinds_defaults() -> None:
    """What the projector reads: defaults first in DEFAULTS order, then the fields sent."""
    item = {"ts": "2026-11-22T10:00:00Z", "model": "m", "kind": "lm_call", "id": str(new_id()), "cache_hit": None}
    record = orjson.loads(prepare([item], tenant="acme", received=NOW, limits=Limits()).records[0])
    assert list(record)[: len(DEFAULTS["lm_call"])] == list(DEFAULTS["lm_call"])
    assert record["tenant"] == "acme" and record["cache_hit"] is None and record["attrs"] == {}


def test_the_dead_letter_rate_applies_to_the_fast_path_too() -> None:
    clock = [0.0]
    limits = Limits(dead_letters_per_s=2, dead_letter_limiter=DeadLetterLimiter(2, clock=lambda: clock[0]))
    items = [{"id": str(new_id()), "ts": "2030-01-01T00:00:00Z", "kind": "lm_call", "model": "m"}] * 5
    out = prepare(items, tenant="acme", received=NOW, limits=limits)
    assert out.accepted == 0 and len(out.rejected) == 5 and out.suppressed == 3 and out.future == 5
    assert len(out.records) == 2


def test_serialize_writes_each_event_as_orjson_does_and_names_what_it_cannot_write() -> None:
    events = [{"a": 1, "t": NOW}, {"cut": ingest._CUT}, {"b": [1.5, None, "x"]}]
    assert serialize(events) == [orjson.dumps(e) for e in events]  # the cut string: one at a time
    assert serialize(events[::2]) == [orjson.dumps(e) for e in events[::2]]
    assert serialize([]) == [] and serialize([{"a": 1}]) == [b'{"a":1}']
    out = serialize([{"a": 1}, {"big": 2**70}])
    assert out[0] == b'{"a":1}' and out[1].startswith("event cannot be stored")


def test_fast_refusals_name_unknown_fields_and_reserved_sources() -> None:
    validator = fast_validator(ingest.DERIVED_KINDS)
    assert validator is not None
    items = [{"id": str(new_id()), "ts": "2026-11-22T10:00:00Z", "kind": "lm_call", "model": "m", **extra}
             for extra in ({}, {"zone": "eu"}, {"source": "adaptd.x"}, {"source": "mine"})]
    events = validator.validate_python(items)
    assert fast_refusals(items, events, reserved_prefix="adaptd.") == [1, 2]
