"""Alert sinks: signals in the log reach webhooks, commands and files; failures are counted.

Real parts only: a ``FileLog`` in ``tmp_path``, a real ``http.server`` on a free loopback
port as the webhook receiver, a real ``sh`` for the command sink.  Waits poll with
``wait_until``; the only clock injected is the one ``max_age_s`` compares event time to.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from adaptd.daemon.alerts import AlertDispatcher, AlertSettings, FileDelivery, FileSink
from adaptd.streams.events import Signal
from adaptd.streams.log.file import FileLog

try:
    from conftest import free_port, wait_until
except ImportError:  # tests/ imported as a package
    from tests.conftest import free_port, wait_until

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def now() -> float:
    return NOW.timestamp()


def signal(n: int, state: str = "open", *, age_s: float = 30.0, severity: str = "warning", **fields: Any) -> dict:
    """A signal event as the anomaly processors write it."""
    event = {
        "id": f"00000000-0000-5000-8000-{n:012d}", "ts": (NOW - dt.timedelta(seconds=age_s)).isoformat(), "v": 1,
        "kind": "signal", "tenant": "acme", "source": "adaptd.error_burst", "attrs": {}, "signal_type": "anomaly",
        "state": state, "program": "qa", "module": None, "route": "a", "model": None, "metric": "error_rate",
        "score": 0.8, "severity": "info" if state == "resolved" else severity, "window_start": None,
        "window_end": None, "incident_id": "00000000-0000-5000-8000-999999999999",
        "explanation": {"observed": 0.3, "expected": [0.0, 0.05]}, **fields,
    }
    Signal.model_validate(event)
    return event


def other_record(n: int) -> dict:
    return {"id": f"00000000-0000-7000-8000-{n:012d}", "ts": NOW.isoformat(), "kind": "execution", "tenant": "acme",
            "program": "qa", "status": "error"}


def append(log: FileLog, events: list[dict]) -> None:
    log.append([orjson.dumps(e) for e in events])


class Receiver:
    """A webhook receiver: records every POST and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[FileLog]:
    file_log = FileLog(tmp_path / "log")
    yield file_log
    file_log.close()


def dispatcher(log: FileLog, **settings: Any) -> AlertDispatcher:
    d = AlertDispatcher(log, AlertSettings(**settings), clock=now)
    d.start()
    return d


# ---------------------------------------------------------------- the three sinks


def test_webhook_sink_posts_each_open_and_resolved_signal_as_json(log, receiver) -> None:
    append(log, [signal(0)])  # before the first start: not sent (only new signals are)
    d = dispatcher(log, webhooks=[{"url": receiver.url, "headers": {"x-team": "llm"}}])
    sent = [signal(1), signal(3, "resolved")]
    append(log, [other_record(1), sent[0], signal(2, "update"), other_record(2), sent[1]])
    wait_until(lambda: len(receiver.requests) == 2)
    assert receiver.bodies() == sent
    headers = receiver.requests[0][0]
    assert headers["content-type"] == "application/json" and headers["x-team"] == "llm"
    wait_until(lambda: d.committed == log.end_offset())  # delivered: the position is committed
    d.stop()
    (sink,) = d.stats()["sinks"]
    assert (sink["delivered"], sink["failed"], sink["retries"], d.stats()["filtered"]) == (2, 0, 0, 1)
    assert log.committed("alerts") == log.end_offset()


def test_file_sink_appends_one_json_line_per_signal(log, tmp_path) -> None:
    path = tmp_path / "alerts" / "signals.ndjson"
    d = dispatcher(log, files=[{"path": str(path)}])
    sent = [signal(1), signal(2, "resolved")]
    append(log, sent)
    wait_until(lambda: path.exists() and len(path.read_bytes().splitlines()) == 2)
    d.stop()
    assert [json.loads(line) for line in path.read_bytes().splitlines()] == sent


def test_command_sink_gives_the_signal_json_to_the_command_on_stdin(log, tmp_path) -> None:
    out = tmp_path / "from-command.ndjson"
    d = dispatcher(log, commands=[{"argv": ["sh", "-c", f"cat >> '{out}'"]}])
    sent = [signal(1), signal(2, "resolved")]
    append(log, sent)
    wait_until(lambda: d.stats()["sinks"][0]["delivered"] == 2)
    d.stop()
    assert [json.loads(line) for line in out.read_bytes().splitlines()] == sent


# ---------------------------------------------------------------- failures


def test_a_failing_webhook_is_retried_then_counted_and_never_raises(log, tmp_path) -> None:
    failing = Receiver(status=503)
    closed_port = f"http://127.0.0.1:{free_port()}/nobody-listens"
    path = tmp_path / "still.ndjson"
    try:
        d = dispatcher(log, webhooks=[{"url": failing.url, "retries": 2, "backoff_s": 0.01},
                                      {"url": closed_port, "retries": 1, "backoff_s": 0.01, "timeout_s": 2}],
                       files=[{"path": str(path)}])
        append(log, [signal(1)])
        wait_until(lambda: all(s["delivered"] + s["failed"] == 1 for s in d.stats()["sinks"]))
        assert len(failing.requests) == 3  # the first attempt and two retries
        first, second, file_sink = d.stats()["sinks"]
        assert (first["failed"], first["retries"], first["delivered"]) == (1, 2, 0)
        assert "HTTP 503 after 3 attempts" in first["last_error"]
        assert (second["failed"], second["retries"]) == (1, 1) and "Connect" in second["last_error"]
        assert file_sink["delivered"] == 1  # one sink failing does not hold the others
        append(log, [signal(2)])  # and the dispatcher keeps going
        wait_until(lambda: d.stats()["sinks"][2]["delivered"] == 2)
        d.stop()
    finally:
        failing.close()


def test_a_refused_signal_is_not_retried(log) -> None:
    refusing = Receiver(status=400)
    try:
        d = dispatcher(log, webhooks=[{"url": refusing.url, "retries": 3, "backoff_s": 0.01}])
        append(log, [signal(1)])
        wait_until(lambda: d.stats()["sinks"][0]["failed"] == 1)
        d.stop()
        assert len(refusing.requests) == 1 and d.stats()["sinks"][0]["retries"] == 0
    finally:
        refusing.close()


def test_a_command_that_fails_or_hangs_is_counted(log) -> None:
    d = dispatcher(log, commands=[{"argv": ["sh", "-c", "echo broken >&2; exit 3"]},
                                  {"argv": ["sh", "-c", "sleep 30"], "timeout_s": 0.3},
                                  {"argv": ["/nonexistent/alert-script"]}])
    append(log, [signal(1)])
    wait_until(lambda: all(s["failed"] == 1 for s in d.stats()["sinks"]), timeout=15)
    d.stop()
    errors = [s["last_error"] for s in d.stats()["sinks"]]
    assert "exit status 3: broken" in errors[0] and "timed out" in errors[1] and "cannot run" in errors[2]


def test_a_full_queue_drops_its_oldest_signal_and_counts_it(tmp_path) -> None:
    sink = FileDelivery(FileSink(path=tmp_path / "x.ndjson"), queue_size=2)  # worker not started
    for offset in (10, 11, 12):
        sink.offer(offset, signal(offset), b"{}")
    assert sink.stats()["dropped"] == 1 and sink.stats()["queued"] == 2
    assert sink.pending() == 11  # the commit position never passes what is still queued


# ---------------------------------------------------------------- what is (not) sent again


def test_repeated_and_stale_signals_are_not_sent(log, receiver) -> None:
    d = dispatcher(log, webhooks=[{"url": receiver.url}], min_severity="critical", max_age_s=600)
    append(log, [signal(1, severity="critical"), signal(1, severity="critical"),  # a re-emitted id
                 signal(2, age_s=3600, severity="critical"),  # an hour old: a processor rebuild replaying
                 signal(3, severity="warning"),  # below min_severity
                 signal(4, "resolved")])  # resolved always goes out
    wait_until(lambda: d.stats()["duplicates"] + d.stats()["filtered"] == 3 and len(receiver.requests) == 2)
    d.stop()
    assert [b["id"] for b in receiver.bodies()] == [signal(1)["id"], signal(4)["id"]]


def test_a_restart_resumes_after_the_last_delivered_signal(log, receiver) -> None:
    first = dispatcher(log, webhooks=[{"url": receiver.url}])
    append(log, [signal(1), signal(2)])
    wait_until(lambda: len(receiver.requests) == 2)
    first.stop()
    append(log, [signal(3)])  # while no dispatcher runs
    second = dispatcher(log, webhooks=[{"url": receiver.url}])
    wait_until(lambda: len(receiver.requests) == 3)
    second.stop()
    assert [b["id"] for b in receiver.bodies()] == [signal(n)["id"] for n in (1, 2, 3)]


def test_bad_alert_settings_say_what_to_fix() -> None:
    with pytest.raises(ValidationError, match="must start with http"):
        AlertSettings(webhooks=[{"url": "ftp://example.org/x"}])
    with pytest.raises(ValidationError, match="argv"):
        AlertSettings(commands=[{"argv": []}])
    assert not AlertSettings().has_sinks and AlertSettings(files=[{"path": "a.ndjson"}]).has_sinks
