"""The daemon's HTTP contract, against a real ``adaptd up`` subprocess on loopback."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from conftest import DaemonProcess, wait_until

from adaptd.streams.events import new_id

TOKEN_A = "token-acme-0123456789"
TOKEN_B = "token-globex-0123456789"

CONFIG = f"""
[limits]
max_body_bytes = 200000
max_batch_events = 500
max_event_bytes = 20000

[[tenants]]
name = "acme"
tokens = ["{TOKEN_A}"]

[[tenants]]
name = "globex"
tokens = ["{TOKEN_B}"]
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("api")
    config = root / "adaptd.toml"
    config.write_text(CONFIG)
    d = DaemonProcess(root / "data", config=config, env={"ADAPTD_TEST_TOKEN": TOKEN_A}).start()
    yield d
    assert d.stop() == 0, d.output()[-3000:]


def client(daemon: DaemonProcess, token: str | None = TOKEN_A) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=daemon.url, headers=headers, timeout=10)


def execution(program: str = "qa", **fields: object) -> dict[str, object]:
    return {"id": str(new_id()), "ts": "2026-11-22T10:00:00Z", "kind": "execution", "program": program,
            "duration_ms": 12.0, **fields}


def executions_of(daemon: DaemonProcess, program: str, token: str = TOKEN_A, expect: int | None = None) -> list[dict]:
    """The executions of ``program`` once the projector has caught up (``expect`` rows)."""
    with client(daemon, token) as c:
        def rows() -> list[dict] | None:
            items = c.get("/v1/executions", params={"program": program, "limit": 1000}).json()["items"]
            return items if expect is None or len(items) >= expect else None

        return wait_until(rows, timeout=15) if expect else rows() or []


def test_json_array_is_acked_and_projected(daemon: DaemonProcess) -> None:
    events = [execution("p-array", route=f"r{i}") for i in range(3)]
    with client(daemon) as c:
        answer = c.post("/v1/events", json=events)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"accepted": 3, "rejected": []}
    rows = executions_of(daemon, "p-array", expect=3)
    assert sorted(r["id"] for r in rows) == sorted(e["id"] for e in events)
    assert {r["tenant"] for r in rows} == {"acme"}


def test_ndjson_and_gzip_bodies_are_accepted(daemon: DaemonProcess) -> None:
    events = [execution("p-ndjson") for _ in range(4)]
    ndjson = b"\n".join(orjson.dumps(e) for e in events[:2])
    with client(daemon) as c:
        a = c.post("/v1/events", content=ndjson, headers={"Content-Type": "application/x-ndjson"})
        b = c.post("/v1/events", content=gzip.compress(orjson.dumps(events[2:])),
                   headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert a.json()["accepted"] == 2 and b.json()["accepted"] == 2
    assert len(executions_of(daemon, "p-ndjson", expect=4)) == 4


def test_resent_event_is_stored_once(daemon: DaemonProcess) -> None:
    event = execution("p-dupe")
    with client(daemon) as c:
        for _ in range(3):
            assert c.post("/v1/events", json=[event]).json()["accepted"] == 1
        c.post("/v1/events", json=[execution("p-dupe")])
    rows = executions_of(daemon, "p-dupe", expect=2)
    assert [r["id"] for r in rows].count(event["id"]) == 1


def test_malformed_json_is_400_with_reason(daemon: DaemonProcess) -> None:
    with client(daemon) as c:
        answer = c.post("/v1/events", content=b'[{"id": ', headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "malformed JSON" in answer.json()["detail"]


def test_invalid_events_are_dead_lettered_and_valid_neighbours_kept(daemon: DaemonProcess) -> None:
    good = [execution("p-mixed"), execution("p-mixed")]
    batch = [good[0], {**execution("p-mixed"), "duration_ms": "slow"}, {"kind": "teleport", "id": str(uuid.uuid4())},
             "not an object", good[1]]
    with client(daemon) as c:
        before = c.get("/v1/stats").json()["dead_letters"]
        answer = c.post("/v1/events", json=batch).json()
        after = c.get("/v1/stats").json()["dead_letters"]
    assert answer["accepted"] == 2
    reasons = {r["index"]: r["reason"] for r in answer["rejected"]}
    assert set(reasons) == {1, 2, 3}
    assert "duration_ms" in reasons[1]
    assert "teleport" in reasons[2]
    assert "JSON object" in reasons[3]
    assert after - before == 3
    assert sorted(r["id"] for r in executions_of(daemon, "p-mixed", expect=2)) == sorted(e["id"] for e in good)


def test_derived_kinds_cannot_be_forged_by_clients(daemon: DaemonProcess) -> None:
    now = "2026-11-22T10:00:00Z"
    forged = [
        {"kind": "signal", "id": str(uuid.uuid4()), "ts": now, "signal_type": "anomaly", "program": "p-forge"},
        {"kind": "window", "id": str(uuid.uuid4()), "ts": now, "window_size": "1m", "window_start": now,
         "window_end": now, "program": "p-forge"},
        {"kind": "adaptation", "id": str(uuid.uuid4()), "ts": now, "action": "routing_table", "program": "p-forge"},
        execution("p-forge"),
    ]
    with client(daemon) as c:
        answer = c.post("/v1/events", json=forged).json()
    assert answer["accepted"] == 1
    reasons = {r["index"]: r["reason"] for r in answer["rejected"]}
    assert set(reasons) == {0, 1, 2} and all("made by the daemon itself" in r for r in reasons.values())


def test_oversized_body_is_413(daemon: DaemonProcess) -> None:
    big = [execution("p-big", error_message="x" * 10_000) for _ in range(30)]
    with client(daemon) as c:
        answer = c.post("/v1/events", json=big)
    assert answer.status_code == 413
    assert "max_body_bytes" in answer.json()["detail"]


def test_too_many_events_is_413_and_oversized_event_rejected(daemon: DaemonProcess) -> None:
    with client(daemon) as c:
        many = c.post("/v1/events", json=[{"kind": "execution"}] * 501)
        one = c.post("/v1/events", json=[execution("p-fat", inputs={"blob": "y" * 15_000, "b2": "z" * 6000})])
    assert many.status_code == 413 and "max_batch_events" in many.json()["detail"]
    assert one.status_code == 200
    assert one.json()["accepted"] == 0 and "max_event_bytes" in one.json()["rejected"][0]["reason"]


def test_field_too_long_is_rejected_with_reason(daemon: DaemonProcess) -> None:
    with client(daemon) as c:
        answer = c.post("/v1/events", json=[execution("p" * 300)]).json()
    assert answer["accepted"] == 0
    assert "program" in answer["rejected"][0]["reason"]


def test_missing_or_wrong_token_is_401(daemon: DaemonProcess) -> None:
    with client(daemon, token=None) as c:
        missing = c.post("/v1/events", json=[execution()])
        health = c.get("/v1/health")
    with client(daemon, token="nope") as c:
        wrong = c.post("/v1/events", json=[execution()])
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["detail"]
    assert health.status_code == 401
    assert wrong.status_code == 401 and "unknown bearer token" in wrong.json()["detail"]


def test_tenant_comes_from_the_token_never_the_payload(daemon: DaemonProcess) -> None:
    spoof = execution("p-tenant", tenant="globex")
    with client(daemon, TOKEN_A) as c:
        assert c.post("/v1/events", json=[spoof]).json()["accepted"] == 1
    rows = executions_of(daemon, "p-tenant", TOKEN_A, expect=1)
    assert rows[0]["tenant"] == "acme"
    # Another tenant's token sees none of acme's executions.
    with client(daemon, TOKEN_B) as c:
        assert c.post("/v1/events", json=[execution("p-tenant")]).json()["accepted"] == 1
    other = executions_of(daemon, "p-tenant", TOKEN_B, expect=1)
    assert [r["tenant"] for r in other] == ["globex"]
    assert spoof["id"] not in {r["id"] for r in other}


def test_unknown_fields_are_kept_in_attrs(daemon: DaemonProcess) -> None:
    event = execution("p-attrs", shard="eu-1", attrs={"team": "search"})
    with client(daemon) as c:
        c.post("/v1/events", json=[event])
    row = executions_of(daemon, "p-attrs", expect=1)[0]
    attrs = row["attrs"] if isinstance(row["attrs"], dict) else orjson.loads(row["attrs"])
    assert attrs == {"team": "search", "shard": "eu-1"}


def test_executions_filters_and_pagination(daemon: DaemonProcess) -> None:
    events = [execution("p-page", status="error" if i % 3 == 0 else "ok", error_type="Timeout" if i % 3 == 0 else None,
                        ts=f"2026-11-22T11:00:{i:02d}Z") for i in range(25)]
    with client(daemon) as c:
        c.post("/v1/events", json=events)
        executions_of(daemon, "p-page", expect=25)
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            params = {"program": "p-page", "limit": 10, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v1/executions", params=params).json()
            seen += [r["id"] for r in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        errors = c.get("/v1/executions", params={"program": "p-page", "status": "error"}).json()["items"]
        window = c.get("/v1/executions", params={"program": "p-page", "since": "2026-11-22T11:00:10Z",
                                                 "until": "2026-11-22T11:00:19Z"}).json()["items"]
        bad = c.get("/v1/executions", params={"status": "maybe"})
    assert sorted(seen) == sorted(e["id"] for e in events) and len(seen) == 25
    assert len(errors) == 9 and {r["status"] for r in errors} == {"error"}
    assert 9 <= len(window) <= 10
    assert bad.status_code == 422


def test_program_summary_and_stats(daemon: DaemonProcess) -> None:
    with client(daemon) as c:
        c.post("/v1/events", json=[execution("p-sum", status="error"), execution("p-sum"), execution("p-sum")])
        executions_of(daemon, "p-sum", expect=3)
        summary = {p["program"]: p for p in c.get("/v1/programs").json()["items"]}
        stats = c.get("/v1/stats").json()
    assert summary["p-sum"]["executions"] == 3
    assert summary["p-sum"]["errors"] == 1
    # A tenant's stats are its own counters: nothing of the shared log or other tenants.
    assert stats["scope"] == "tenant" and stats["events_acked"] >= 3
    for key in ("dead_letters", "dropped", "caught_up"):
        assert key in stats
    assert "log_end_offset" not in stats and "tenants" not in stats


def test_openapi_is_published(daemon: DaemonProcess) -> None:
    with client(daemon) as c:  # tenants are configured: the spec needs a token
        spec = c.get("/openapi.json").json()
    assert "/v1/events" in spec["paths"] and "/v1/executions" in spec["paths"]


def test_stream_tails_this_tenants_events(daemon: DaemonProcess) -> None:
    mine = execution("p-tail")
    with client(daemon) as c, client(daemon, TOKEN_B) as other:
        other.post("/v1/events", json=[execution("p-tail")])
        c.post("/v1/events", json=[mine])
        # From the log's start: the other tenant's event with the same program is skipped.
        with c.stream("GET", "/v1/stream", params={"from_offset": 0, "max_events": 1, "program": "p-tail"}) as r:
            data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert [orjson.loads(d)["id"] for d in data] == [mine["id"]]
