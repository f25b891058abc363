"""Ingest's pure core: body decoding, validation verdicts and dead letters."""

from __future__ import annotations

import datetime as dt
import gzip

import orjson
import pytest

from adaptd.daemon.ingest import IngestError, Limits, decompress, parse_items, prepare
from adaptd.streams.events import new_id

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def ev(**fields: object) -> dict[str, object]:
    return {"id": str(new_id()), "ts": "2026-11-22T10:00:00Z", "kind": "execution", "program": "qa", **fields}


def run(items: list[object], **limits: int):
    return prepare(items, tenant="acme", received=NOW, limits=Limits(**limits))


def test_valid_events_become_records_with_the_tenant_forced() -> None:
    out = run([ev(tenant="evil"), ev()])
    assert out.accepted == 2 and out.rejected == []
    assert [orjson.loads(r)["tenant"] for r in out.records] == ["acme", "acme"]


def test_timestamps_are_stored_in_utc() -> None:
    out = run([ev(ts="2026-11-22T12:00:00+02:00"), ev(ts="2026-11-22T10:00:00")])
    assert [orjson.loads(r)["ts"] for r in out.records] == ["2026-11-22T10:00:00+00:00"] * 2


def test_each_invalid_item_gets_its_index_and_reason_and_a_dead_letter() -> None:
    out = run([ev(), ev(tokens_in=-1), {"kind": "nope"}, 7, ev()])
    assert out.accepted == 2
    assert [r["index"] for r in out.rejected] == [1, 2, 3]
    assert "tokens_in" in out.rejected[0]["reason"]
    kinds = [orjson.loads(r)["kind"] for r in out.records]
    assert kinds == ["execution", "dead_letter", "dead_letter", "dead_letter", "execution"]
    letter = orjson.loads(out.records[1])
    assert letter["tenant"] == "acme" and "tokens_in" in letter["reason"] and '"tokens_in":-1' in letter["payload"]


def test_unknown_fields_fold_into_attrs() -> None:
    record = orjson.loads(run([ev(region="eu", attrs={"a": 1})]).records[0])
    assert record["attrs"] == {"a": 1, "region": "eu"} and "region" not in record


def test_batch_over_the_limit_is_refused_whole() -> None:
    with pytest.raises(IngestError) as info:
        run([ev()] * 3, max_batch_events=2)
    assert info.value.status == 413 and "max_batch_events" in info.value.reason


def test_event_over_the_size_limit_is_dead_lettered() -> None:
    out = run([ev(error_message="x" * 2000), ev()], max_event_bytes=1000)
    assert out.accepted == 1 and "max_event_bytes" in out.rejected[0]["reason"]


def test_ndjson_bad_line_is_dead_lettered_alone() -> None:
    body = orjson.dumps(ev()) + b"\n{oops\n" + orjson.dumps(ev())
    out = run(parse_items(body, "application/x-ndjson"))
    assert out.accepted == 2 and out.rejected[0]["index"] == 1 and "line 2" in out.rejected[0]["reason"]


def test_malformed_json_body_is_400() -> None:
    with pytest.raises(IngestError) as info:
        parse_items(b"[1, 2", "application/json")
    assert info.value.status == 400


def test_empty_body_is_400_and_empty_array_is_fine() -> None:
    with pytest.raises(IngestError):
        parse_items(b"  ", None)
    assert run(parse_items(b"[]", None)).records == []


def test_gzip_is_inflated_and_bombs_are_refused() -> None:
    assert decompress(gzip.compress(b"[1]"), "gzip", 100) == b"[1]"
    with pytest.raises(IngestError) as info:
        decompress(gzip.compress(b"0" * 10_000), "gzip", 1000)
    assert info.value.status == 413
    with pytest.raises(IngestError) as corrupt:
        decompress(b"not gzip", "gzip", 1000)
    assert corrupt.value.status == 400
    with pytest.raises(IngestError) as other:
        decompress(b"x", "br", 1000)
    assert other.value.status == 415
