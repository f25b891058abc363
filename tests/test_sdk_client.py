"""Specs of the SDK's batching client: queueing, batching, flush/shutdown, fork, HTTP."""

from __future__ import annotations

import datetime
import gzip
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

import adaptd.adapters as adapters
from adaptd.adapters import Client, ExportResult, InMemoryExporter


class GateExporter(InMemoryExporter):
    """Blocks every export until ``gate`` is set; ``entered`` tells an export started."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def export(self, events: Any) -> ExportResult:
        self.entered.set()
        self.gate.wait(10)
        return super().export(events)


class RaisingExporter:
    calls = 0

    def export(self, events: Any) -> ExportResult:
        self.calls += 1
        raise RuntimeError("exporter is broken")

    def shutdown(self) -> None:
        raise RuntimeError("and so is its shutdown")


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def make(**kw: Any) -> Client:
        kw.setdefault("spill_dir", False)
        kw.setdefault("schedule_delay_ms", 20)
        client = Client(**kw)
        clients.append(client)
        return client

    yield make
    for client in clients:
        gate = getattr(client._exporter, "gate", None)
        if gate is not None:
            gate.set()
        client.shutdown(timeout=2)


def seqs(exporter: InMemoryExporter) -> list[int]:
    return [e["seq"] for e in exporter.events]


def test_emitted_events_are_exported_in_batches_no_larger_than_max_batch_size(make_client):
    ex = InMemoryExporter()
    client = make_client(exporter=ex, max_batch_size=10)
    for i in range(25):
        client.emit("execution", program="qa", seq=i)
    assert client.flush(5)
    assert sorted(seqs(ex)) == list(range(25))
    assert all(1 <= len(b) <= 10 for b in ex.batches) and len(ex.batches) >= 3
    st = client.stats()
    assert (st["enqueued"], st["exported"], st["queue_len"]) == (25, 25, 0)


def test_a_full_batch_is_exported_without_waiting_for_the_schedule_delay(make_client):
    ex = InMemoryExporter()
    client = make_client(exporter=ex, max_batch_size=10, schedule_delay_ms=60_000)
    for i in range(10):
        client.emit("execution", program="qa", seq=i)
    assert wait_until(lambda: len(ex.events) == 10), client.stats()


def test_worker_fills_in_uuid7_id_iso_ts_and_source_but_keeps_given_ones(make_client):
    ex = InMemoryExporter()
    epoch = datetime.datetime(2026, 11, 22, 10, tzinfo=datetime.UTC).timestamp()
    t_ns = int(epoch) * 1_000_000_000 + 123_456_789  # 2026-11-22T10:00:00.123456789Z
    client = make_client(exporter=ex, time_ns=lambda: t_ns, source="svc")
    client.emit("execution", program="qa")
    given = str(uuid.uuid4())
    client.emit("execution", program="qa", id=given, ts="2026-01-02T03:04:05Z", source="other")
    client.emit("feedback", execution_id=given, score=1.0, ts=t_ns + 1_000_000_000)
    assert client.flush(5)
    first, second, third = ex.events
    assert uuid.UUID(first["id"]).version == 7
    assert first["ts"] == "2026-11-22T10:00:00.123456Z" and first["source"] == "svc"
    assert (second["id"], second["ts"], second["source"]) == (given, "2026-01-02T03:04:05Z", "other")
    assert third["ts"] == "2026-11-22T10:00:01.123456Z" and third["kind"] == "feedback"


def test_unknown_fields_are_sent_along_for_the_daemon_to_keep_in_attrs(make_client):
    ex = InMemoryExporter()
    client = make_client(exporter=ex)
    client.emit("execution", program="qa", customer_tier="gold", nested={"a": [1, 2]})
    assert client.flush(5)
    assert ex.events[0]["customer_tier"] == "gold" and ex.events[0]["nested"] == {"a": [1, 2]}


def test_queue_overflow_drops_the_oldest_events_and_counts_them(make_client):
    ex = GateExporter()
    client = make_client(exporter=ex, max_queue_size=5, max_batch_size=100)
    client.emit("execution", program="qa", seq=-1)
    assert wait_until(ex.entered.is_set)  # the worker is now stuck exporting seq -1
    for i in range(8):
        client.emit("execution", program="qa", seq=i)
    assert client.stats()["dropped_queue_full"] == 3
    ex.gate.set()
    assert client.flush(5)
    assert seqs(ex) == [-1, 3, 4, 5, 6, 7]
    st = client.stats()
    assert (st["enqueued"], st["exported"], st["dropped_queue_full"]) == (9, 6, 3)


def test_flush_returns_false_once_its_timeout_expires(make_client):
    ex = GateExporter()
    client = make_client(exporter=ex)
    client.emit("execution", program="qa")
    t0 = time.monotonic()
    assert client.flush(timeout=0.2) is False
    assert time.monotonic() - t0 < 2
    ex.gate.set()
    assert client.flush(5) is True


def test_shutdown_honours_its_timeout_and_later_emits_are_dropped_and_counted(make_client):
    ex = GateExporter()
    client = make_client(exporter=ex)
    client.emit("execution", program="qa")
    assert wait_until(ex.entered.is_set)
    t0 = time.monotonic()
    assert client.shutdown(timeout=0.2) is False
    assert time.monotonic() - t0 < 2
    client.emit("execution", program="qa")
    assert client.stats()["dropped_shutdown"] == 1
    ex.gate.set()
    assert client.shutdown(timeout=5) is True  # the second call reports the first's end


def test_telemetry_flushed_before_shutdown_and_dropped_after_shutdown(make_client):
    ex = InMemoryExporter()
    client = make_client(exporter=ex, schedule_delay_ms=60_000)
    for i in range(3):
        client.emit("execution", program="qa", seq=i)
    assert client.shutdown(timeout=5) is True
    assert seqs(ex) == [0, 1, 2] and ex.shut_down
    client.emit("execution", program="qa", seq=3)
    client.emit("execution", program="qa", seq=4)
    assert seqs(ex) == [0, 1, 2]
    st = client.stats()
    assert (st["dropped_shutdown"], st["exported"], st["queue_len"]) == (2, 3, 0)
    assert client.flush(1) is True  # nothing pending


def test_exporter_exceptions_never_reach_the_caller_and_the_batch_is_spilled(make_client, tmp_path):
    ex = RaisingExporter()
    client = make_client(exporter=ex, spill_dir=tmp_path, max_retries=2, retry_backoff_s=0.001)
    client.emit("execution", program="qa")
    assert client.flush(5) is True
    st = client.stats()
    assert (st["export_errors"], st["spilled"], st["exported"]) == (3, 1, 0)
    assert ex.calls == 3
    assert client.shutdown(timeout=5) is True  # the exporter's broken shutdown is contained


def test_failed_batches_are_dropped_and_counted_when_spilling_is_disabled(make_client):
    ex = InMemoryExporter(result=ExportResult("transient", reason="down"))
    client = make_client(exporter=ex, max_retries=0)
    client.emit("execution", program="qa")
    assert client.flush(5)
    assert client.stats()["dropped_unsent"] == 1


def test_invalid_events_are_dropped_counted_and_logged_once_per_reason(make_client, caplog):
    ex = InMemoryExporter()
    client = make_client(exporter=ex, max_event_bytes=2000)
    with caplog.at_level(logging.WARNING, logger="adaptd.sdk"):
        client.emit("execution")  # program missing
        client.emit("execution")
        client.emit("no_such_kind", program="qa")
        client.emit("execution", program="qa", duration_ms=-1.0)
        client.emit("execution", program="qa", blob="x" * 5000)  # too large
        client.emit("execution", program="qa", seq=1)
        assert client.flush(5)
    assert seqs(ex) == [1]
    assert client.stats()["dropped_invalid"] == 5
    messages = [r.getMessage() for r in caplog.records if "invalid" in r.getMessage()]
    assert len(messages) == 4, messages
    assert any("program: missing" in m for m in messages)
    assert any("unknown kind 'no_such_kind'" in m for m in messages)


def test_invalid_events_among_more_than_one_validation_chunk_are_dropped_and_the_rest_keep_their_order(make_client):
    from adaptd.adapters.encode import VALIDATE_CHUNK

    ex = InMemoryExporter()
    client = make_client(exporter=ex, max_batch_size=1000, schedule_delay_ms=60_000)
    n = 3 * VALIDATE_CHUNK + 5
    bad = {0, VALIDATE_CHUNK - 1, VALIDATE_CHUNK, 2 * VALIDATE_CHUNK + 3, n - 1}
    for i in range(n):
        if i in bad:
            client.emit("execution", seq=i)  # program missing
        else:
            client.emit("execution", program="qa", seq=i)
    assert client.flush(5)
    assert seqs(ex) == [i for i in range(n) if i not in bad]
    assert client.stats()["dropped_invalid"] == len(bad)


def test_built_events_skip_the_sdks_validation_and_keep_their_place_among_checked_ones(make_client):
    ex = InMemoryExporter()
    client = make_client(exporter=ex)
    client.emit("execution", program="qa", seq=0)
    client.emit_built("execution", {"program": "qa", "seq": 1})
    client.emit("execution", seq=2)  # invalid: dropped by the SDK
    # An integration's bug is not caught here: the daemon validates and dead-letters it.
    client.emit_built("execution", {"seq": 3})
    client.emit("execution", program="qa", seq=4)
    assert client.flush(5)
    assert seqs(ex) == [0, 1, 3, 4]
    assert client.stats()["dropped_invalid"] == 1


class Record:
    """A queued event that builds itself (``adaptd.adapters.encode.Record``)."""

    def __init__(self, seq: int, fail: bool = False, pad: int = 0) -> None:
        self.seq, self.fail, self.pad = seq, fail, pad

    def to_json(self, source: str) -> bytes:
        if self.fail:
            raise KeyError("broken record")
        return json.dumps({"kind": "execution", "program": "qa", "seq": self.seq, "source": source,
                           "pad": "x" * self.pad}).encode()  # fmt: skip


def test_records_build_themselves_on_the_worker_and_keep_their_place_in_the_queue(make_client):
    ex = InMemoryExporter()
    client = make_client(exporter=ex, max_event_bytes=1000)
    client.emit("execution", program="qa", seq=0)
    client.emit_record(Record(1))
    client.emit_record(Record(2, fail=True))  # to_json raises: dropped and counted, never raised
    client.emit_record(Record(3, pad=2000))  # larger than max_event_bytes: dropped and counted
    client.emit_built("execution", {"program": "qa", "seq": 4})
    client.emit_record(Record(5))
    assert client.flush(5)
    assert seqs(ex) == [0, 1, 4, 5]
    assert {e["source"] for e in ex.events} == {"adaptd-python"}
    stats = client.stats()
    assert stats["dropped_invalid"] == 2 and stats["exported"] == 4 and stats["enqueued"] == 6


def test_records_obey_the_bounded_queue_oldest_dropped_and_counted(make_client):
    ex = GateExporter()
    client = make_client(exporter=ex, max_queue_size=3, max_batch_size=1)
    client.emit_record(Record(0))
    assert ex.entered.wait(5)  # the worker holds record 0 in an export; the queue is empty
    for i in range(1, 6):
        client.emit_record(Record(i))
    ex.gate.set()
    assert client.flush(5)
    assert seqs(ex) == [0, 3, 4, 5] and client.stats()["dropped_queue_full"] == 2
    client.shutdown(2)
    client.emit_record(Record(6))
    assert client.stats()["dropped_shutdown"] == 1


def test_batches_are_split_to_respect_max_request_bytes(make_client):
    ex = InMemoryExporter()
    client = make_client(exporter=ex, max_request_bytes=1000)
    for i in range(20):
        client.emit("execution", program="qa", seq=i, pad="p" * 200)
    assert client.flush(5)
    assert sorted(seqs(ex)) == list(range(20)) and all(len(b) <= 3 for b in ex.batches)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_restarts_the_worker_with_a_fresh_queue_in_the_child(make_client):
    ex = InMemoryExporter()
    client = make_client(exporter=ex, schedule_delay_ms=60_000)
    client.emit("execution", program="qa", seq=0)  # pending in the parent at fork time
    parent_worker = client._thread
    pid = os.fork()
    if pid == 0:  # child: report through the exit status, never return into pytest
        code = 1
        try:
            client.emit("execution", program="qa", seq=100)
            ok = client.flush(5)
            st = client.stats()
            fresh = st["enqueued"] == 1 and client._thread is not parent_worker
            code = 0 if ok and fresh and seqs(ex) == [100] else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("child did not exit")
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.flush(5) and seqs(ex) == [0]  # the parent kept its own event


def test_default_client_reads_the_environment_and_module_functions_use_it(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAPTD_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ADAPTD_SPILL_DIR", str(tmp_path))
    monkeypatch.setattr(adapters, "_default", None)
    try:
        assert adapters.get_client().url == "http://127.0.0.1:9"
        ex = InMemoryExporter()
        client = adapters.configure(exporter=ex, spill_dir=False)
        assert adapters.get_client() is client
        adapters.emit("execution", program="qa", seq=7)
        assert adapters.flush(5) and seqs(ex) == [7]
        assert adapters.stats()["exported"] == 1
        assert adapters.shutdown(5)
        adapters.emit("execution", program="qa")
        assert adapters.stats()["dropped_shutdown"] == 1
    finally:
        if adapters._default is not None:
            adapters._default.shutdown(1)


# -- against a real HTTP server -------------------------------------------------------------


class Recorder:
    def __init__(self, statuses: list[int] | None = None) -> None:
        self.lock = threading.Lock()
        self.statuses = list(statuses or [])  # answers to give, in order; then 200
        self.ids: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.reject_first = False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        rec: Recorder = self.server.rec  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        events = json.loads(body)
        with rec.lock:
            status = rec.statuses.pop(0) if rec.statuses else 200
            rec.requests.append({"path": self.path, "status": status, "headers": dict(self.headers)})
            rejected = [{"index": 0, "reason": "bad"}] if rec.reject_first and status == 200 else []
            if status == 200:
                rec.ids.update(e["id"] for i, e in enumerate(events) if not (rejected and i == 0))
        answer: dict[str, Any] = {"detail": "no"}
        if status == 200:
            answer = {"accepted": len(events) - len(rejected), "rejected": rejected}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def http_server(port: int = 0, statuses: list[int] | None = None) -> Iterator[tuple[str, Recorder]]:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.rec = Recorder(statuses)  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.rec  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


FAST_RETRY = {"retry_backoff_s": 0.005, "retry_max_backoff_s": 0.01, "offline_max_backoff_s": 0.1}


def test_spilled_events_are_resent_when_the_daemon_comes_up_each_exactly_once(make_client, tmp_path):
    port = free_port()  # closed: connections are refused
    client = make_client(url=f"http://127.0.0.1:{port}", spill_dir=tmp_path, max_batch_size=50,
                         max_retries=1, **FAST_RETRY)  # fmt: skip
    for i in range(120):
        client.emit("execution", program="qa", seq=i)
    assert client.flush(10)
    st = client.stats()
    assert st["spilled"] == 120 and st["exported"] == 0 and st["export_errors"] >= 2
    assert list(tmp_path.glob("*.ndjson"))
    with http_server(port) as (_, rec):
        client.emit("execution", program="qa", seq=120)  # a live event meanwhile
        assert wait_until(lambda: client.stats()["resent"] == 120, timeout=15), client.stats()
        assert client.flush(5)
        assert wait_until(lambda: len(rec.ids) == 121)
        assert set(rec.ids.values()) == {1}  # every id exactly once
        assert client.stats()["exported"] == 121
        assert wait_until(lambda: not any(p.stat().st_size for p in tmp_path.glob("*.ndjson")))


def test_permanent_4xx_answers_are_not_retried_nor_spilled(make_client, tmp_path):
    with http_server(statuses=[422]) as (url, rec):
        client = make_client(url=url, spill_dir=tmp_path, max_retries=3, **FAST_RETRY)
        for i in range(5):
            client.emit("execution", program="qa", seq=i)
        assert client.flush(5)
        st = client.stats()
        assert (st["rejected"], st["spilled"], st["exported"], st["export_errors"]) == (5, 0, 0, 0)
        assert len(rec.requests) == 1


def test_transient_5xx_answers_are_retried_then_delivered(make_client, tmp_path):
    with http_server(statuses=[503, 429]) as (url, rec):
        client = make_client(url=url, spill_dir=tmp_path, max_retries=3, **FAST_RETRY)
        client.emit("execution", program="qa")
        assert client.flush(5)
        st = client.stats()
        assert (st["exported"], st["export_errors"], st["spilled"]) == (1, 2, 0)
        assert [r["status"] for r in rec.requests] == [503, 429, 200]


def test_events_rejected_inside_an_accepted_batch_are_counted(make_client, tmp_path):
    with http_server() as (url, rec):
        rec.reject_first = True
        client = make_client(url=url, spill_dir=tmp_path)
        for i in range(3):
            client.emit("execution", program="qa", seq=i)
        assert client.flush(5)
        st = client.stats()
        assert (st["exported"], st["rejected"]) == (2, 1)


def test_requests_carry_the_bearer_token_and_may_be_gzipped(make_client, tmp_path: Path):
    with http_server() as (url, rec):
        client = make_client(url=url, token="s3cret", compression="gzip", spill_dir=tmp_path)
        for i in range(50):
            client.emit("execution", program="qa", seq=i, pad="x" * 50)
        assert client.flush(5)
        req = rec.requests[0]
        assert req["path"] == "/v1/events"
        assert req["headers"]["Authorization"] == "Bearer s3cret"
        assert req["headers"]["Content-Encoding"] == "gzip"
        assert req["headers"]["Content-Type"] == "application/json"
        assert len(rec.ids) == 50


def test_values_are_validated_as_the_json_the_daemon_receives(make_client):
    import uuid_utils

    ex = InMemoryExporter()
    client = make_client(exporter=ex)
    eid = uuid_utils.uuid7()  # not a uuid.UUID: valid once serialized
    client.emit("feedback", execution_id=eid, score=0.5, id=uuid.uuid4(), when=datetime.date(2026, 11, 22))
    assert client.flush(5)
    (ev,) = ex.events
    assert ev["execution_id"] == str(eid) and ev["when"] == "2026-11-22"
    assert client.stats()["dropped_invalid"] == 0


def test_emit_names_exactly_the_fields_the_worker_unpacks():
    import inspect

    from adaptd.adapters.encode import NAMED_FIELDS

    params = list(inspect.signature(Client.emit).parameters.values())
    named = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"]
    assert tuple(named) == NAMED_FIELDS and all(p.default is None for p in params[3:-1])


def test_fields_passed_by_position_are_dropped_as_invalid(make_client):
    ex = InMemoryExporter()
    client = make_client(exporter=ex)
    client.emit("execution", "qa")  # type: ignore[misc]
    client.emit("execution", program="qa", status=None, route=None)  # None: not given
    assert client.flush(5)
    assert client.stats()["dropped_invalid"] == 1
    (ev,) = ex.events
    assert ev["program"] == "qa" and "route" not in ev and "status" not in ev


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "ok"), (202, "ok"), (400, "permanent"), (401, "permanent"), (403, "permanent"),
     (404, "permanent"), (413, "permanent"), (415, "permanent"), (422, "permanent"),
     (408, "transient"), (429, "transient"), (500, "transient"), (503, "transient")],
)  # fmt: skip
def test_http_statuses_are_classified_per_the_ingest_contract(status, outcome):
    from adaptd.adapters.exporter import classify_status

    assert classify_status(status, b"", 3, None).outcome == outcome


def test_acks_and_retry_after_are_parsed_defensively():
    from adaptd.adapters.exporter import classify_status, parse_ack

    ack = parse_ack(b'{"accepted": 2, "rejected": [{"index": 1, "reason": "bad"}, {"index": 9}]}', 3)
    assert (ack.accepted, ack.rejected) == (2, ((1, "bad"),))
    assert parse_ack(b"not json", 3).accepted == 3
    assert classify_status(429, b"", 1, "2.5").retry_after == 2.5
    assert classify_status(503, b"", 1, "Wed, 21 Oct 2026 07:28:00 GMT").retry_after is None
    assert classify_status(503, b"", 1, "99999").retry_after == 60.0


def test_a_retry_after_longer_than_the_backoff_cap_spills_instead_of_waiting(make_client, tmp_path):
    ex = InMemoryExporter(result=ExportResult("transient", reason="HTTP 503", retry_after=30.0))
    client = make_client(exporter=ex, spill_dir=tmp_path, max_retries=5)
    client.emit("execution", program="qa")
    t0 = time.monotonic()
    assert client.flush(5)
    assert time.monotonic() - t0 < 3
    st = client.stats()
    assert (st["export_errors"], st["spilled"]) == (1, 1)
