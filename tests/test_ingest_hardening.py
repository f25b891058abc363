"""Hostile input at ingest: nesting, non-JSON numbers, lone surrogates, clocks in the
future and floods of invalid items each cost only themselves, never a 500, never the
valid events beside them, never another tenant's live history."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import DaemonProcess, wait_until

from adaptd.daemon.dead_letter_limit import DeadLetterLimiter
from adaptd.daemon.ingest import IngestError, Limits, nesting_exceeds, parse_items, prepare
from adaptd.daemon.json_items import NotAnArray, split_array
from adaptd.streams.events import new_id

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def ev(**fields: object) -> dict[str, object]:
    return {"id": str(new_id()), "ts": "2026-11-22T10:00:00Z", "kind": "execution", "program": "qa", **fields}


def nested(levels: int) -> dict[str, object]:
    """``{"a": {"a": ... {}}}``: ``levels`` objects deep."""
    inner: dict[str, object] = {}
    for _ in range(levels - 1):
        inner = {"a": inner}
    return inner


def run(body: bytes, limits: Limits | None = None, tenant: str = "acme"):
    return prepare(parse_items(body, "application/json"), tenant=tenant, received=NOW, limits=limits or Limits())


def kinds(records: list[bytes]) -> list[str]:
    return [orjson.loads(r)["kind"] for r in records]


# ---------------------------------------------------------------- one bad item, alone


def test_a_nan_in_one_item_of_a_json_array_dead_letters_that_item_alone() -> None:
    body = b"[" + orjson.dumps(ev()) + b',{"kind":"execution","duration_ms":NaN},' + orjson.dumps(ev()) + b"]"
    out = run(body)
    assert out.accepted == 2 and [r["index"] for r in out.rejected] == [1]
    assert "NaN" in out.rejected[0]["reason"]
    assert kinds(out.records) == ["execution", "dead_letter", "execution"]
    assert "NaN" in orjson.loads(out.records[1])["payload"]  # the dead letter keeps the item's bytes


def test_a_lone_surrogate_or_invalid_utf8_in_one_item_dead_letters_that_item_alone() -> None:
    body = b"[" + orjson.dumps(ev()) + rb',{"kind":"execution","program":"\ud800"},' + \
        b'{"kind":"execution","program":"\xff"},' + orjson.dumps(ev()) + b"]"
    out = run(body)
    assert out.accepted == 2 and [r["index"] for r in out.rejected] == [1, 2]
    assert all(r["reason"].startswith(f"item {r['index']}: malformed JSON") for r in out.rejected)


def test_an_item_nested_beyond_orjsons_own_limit_is_dead_lettered_alone() -> None:
    body = b"[" + orjson.dumps(ev()) + b"," + b'{"a":' * 1100 + b"1" + b"}" * 1100 + b"," + orjson.dumps(ev()) + b"]"
    out = run(body)
    assert out.accepted == 2 and [r["index"] for r in out.rejected] == [1]
    assert "depth" in out.rejected[0]["reason"]


def test_an_event_nested_600_levels_deep_is_dead_lettered_with_the_reason_not_an_error() -> None:
    out = run(json.dumps([ev(), ev(attrs=nested(599)), ev()]).encode())  # orjson.dumps stops at 254
    assert out.accepted == 2 and [r["index"] for r in out.rejected] == [1]
    assert "nested more than 64 levels deep (limits.max_depth)" in out.rejected[0]["reason"]
    letter = orjson.loads(out.records[1])
    assert letter["kind"] == "dead_letter" and '"..."' in letter["payload"]  # a bounded excerpt


def test_the_nesting_limit_is_configurable_and_counts_the_event_as_level_one() -> None:
    limits = Limits(max_depth=3)
    out = run(orjson.dumps([ev(attrs={"a": 1}), ev(attrs={"a": {"b": 1}}), ev(attrs={"a": [{"b": 1}]})]), limits)
    assert out.accepted == 2 and [r["index"] for r in out.rejected] == [2]  # event, attrs, list, object
    assert not nesting_exceeds({"a": [1, 2]}, 2) and nesting_exceeds({"a": [[1]]}, 2)
    assert not nesting_exceeds(nested(5000), 5000) and nesting_exceeds(nested(5000), 4999)  # no recursion


def test_an_array_whose_items_cannot_be_told_apart_is_still_refused_whole() -> None:
    for body in (b"[1, 2", b'[{"a": "open]', b"[1}, 2]", b"[1] 2"):
        with pytest.raises(IngestError) as info:
            parse_items(body, None)
        assert info.value.status == 400


def test_split_array_follows_strings_escapes_and_nesting() -> None:
    body = b' [ {"a": "],\\"{"}, [1, [2]] ,"x,y", NaN,, 3 ] \n'
    assert split_array(body) == [b'{"a": "],\\"{"}', b"[1, [2]]", b'"x,y"', b"NaN", b"", b"3"]
    assert split_array(b"[]") == [] and split_array(b"[ 1 , ]") == [b"1", b""]
    with pytest.raises(NotAnArray):
        split_array(b'{"a": 1}')


# ---------------------------------------------------------------- clocks in the future


def test_an_event_too_far_in_the_future_is_dead_lettered_with_the_reason_and_counted() -> None:
    ahead = (NOW + dt.timedelta(seconds=400)).isoformat()
    near = (NOW + dt.timedelta(seconds=200)).isoformat()
    out = run(orjson.dumps([ev(ts=ahead), ev(ts=near), ev()]))
    assert out.accepted == 2 and out.future == 1 and [r["index"] for r in out.rejected] == [0]
    assert "400 s ahead" in out.rejected[0]["reason"] and "limits.max_future_s" in out.rejected[0]["reason"]
    assert run(orjson.dumps([ev(ts=ahead)]), Limits(max_future_s=None)).accepted == 1


# ---------------------------------------------------------------- dead-letter floods


def test_beyond_the_rate_invalid_items_are_answered_but_only_counted() -> None:
    clock = [100.0]
    limiter = DeadLetterLimiter(100, clock=lambda: clock[0])
    limits = Limits(dead_letter_limiter=limiter)
    flood = b"[" + b",".join([b"1"] * 10_000) + b"]"  # 20 KB
    out = run(flood, limits)
    assert len(out.rejected) == 10_000 and out.accepted == 0
    assert kinds(out.records) == ["dead_letter"] * 100 and out.suppressed == 9_900
    assert sum(len(r) for r in out.records) < 50_000
    assert limiter.suppressed == {"acme": 9_900}
    other = run(b"[1, 2]", limits, tenant="beta")  # one tenant's flood spends only its own allowance
    assert len(other.records) == 2 and other.suppressed == 0
    clock[0] += 0.5  # half a second gives half the rate back
    again = run(flood, limits)
    assert len(again.records) == 50 and again.suppressed == 9_950


def test_valid_events_are_never_rate_limited() -> None:
    limits = Limits(dead_letter_limiter=DeadLetterLimiter(0, clock=lambda: 0.0))
    out = run(orjson.dumps([ev(), 1, ev()]), limits)
    assert out.accepted == 2 and kinds(out.records) == ["execution", "execution"] and out.suppressed == 1


# ---------------------------------------------------------------- against a real daemon

ALPHA, BETA = "alpha-secret", "beta-secret"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """Tenants alpha and beta; 1 s windows and 1 s lateness so a window closes quickly."""
    root = tmp_path_factory.mktemp("ingest-hardening")
    config = f"""
[[tenants]]
name = "alpha"
tokens = ["{ALPHA}"]

[[tenants]]
name = "beta"
tokens = ["{BETA}"]

[processors]
lateness_s = 1.0
history_windows = ["1s", "1m"]
"""
    process = DaemonProcess(root / "data", config_text=config, env={"ADAPTD_TEST_TOKEN": ALPHA}).start()
    yield process
    process.stop()


def client(daemon: DaemonProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=daemon.url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def now_ev(**fields: object) -> dict[str, object]:
    return ev(ts=dt.datetime.now(dt.UTC).isoformat(), **fields)


def test_a_deeply_nested_event_gets_a_reason_not_a_500_and_its_neighbours_are_stored(daemon) -> None:
    good = [now_ev(program="deep-ok"), now_ev(program="deep-ok")]
    body = json.dumps([good[0], now_ev(program="deep-bad", attrs=nested(600)), good[1]]).encode()
    with client(daemon, ALPHA) as c:
        answer = c.post("/v1/events", content=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == 2 and [r["index"] for r in answer.json()["rejected"]] == [1]
        stored = wait_until(lambda: len(c.get("/v1/executions", params={"program": "deep-ok"}).json()["items"]) == 2)
    assert stored


def test_a_nan_in_a_json_array_costs_only_that_item_over_http(daemon) -> None:
    body = b"[" + orjson.dumps(now_ev(program="nan-ok")) + b',{"kind":"execution","duration_ms":NaN}]'
    with client(daemon, ALPHA) as c:
        answer = c.post("/v1/events", content=body)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    assert [r["index"] for r in answer.json()["rejected"]] == [1]


def _log_bytes(daemon: DaemonProcess) -> int:
    return sum(p.stat().st_size for p in Path(daemon.data_dir, "log").rglob("*") if p.is_file())


def test_a_flood_of_invalid_items_writes_at_most_the_rate_of_dead_letters(daemon) -> None:
    flood = b"[" + b",".join([b"1"] * 10_000) + b"]"
    with client(daemon, BETA) as c:
        before = _log_bytes(daemon)
        answer = c.post("/v1/events", content=flood)
        assert answer.status_code == 200 and len(answer.json()["rejected"]) == 10_000
        grown = _log_bytes(daemon) - before
    assert grown < 100_000, grown  # 10,000 dead letters in full would be about 2 MB


def test_a_tenant_with_a_clock_290_s_ahead_does_not_make_other_tenants_live_events_late(daemon) -> None:
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=290)).isoformat()
    with client(daemon, ALPHA) as alpha, client(daemon, BETA) as beta:
        assert alpha.post("/v1/events", content=orjson.dumps([ev(ts=future, program="fast-clock")])
                          ).json()["accepted"] == 1

        def beta_window_closed() -> bool:
            # beta keeps sending live events; each moves time on until its first window closes
            assert beta.post("/v1/events", content=orjson.dumps([now_ev(program="live")])).json()["accepted"] == 1
            items = beta.get("/v1/history", params={"program": "live", "window": "1s"}).json()["items"]
            return any(w["count"] >= 1 for w in items)

        assert wait_until(beta_window_closed, timeout=20, interval=0.1)
