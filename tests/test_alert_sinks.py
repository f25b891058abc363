"""Slack, PagerDuty and Apprise alert sinks: what each service receives, retries, secrets.

Real parts only: a real ``http.server`` on a free loopback port stands in for Slack's
incoming webhook, PagerDuty's Events API v2 and an Apprise ``json://`` endpoint (Apprise
itself sends there); it answers a scripted list of statuses (500s and 429s first).  The
end-to-end test runs a real daemon process fed an error burst, so the signals are the
processors' own.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from adaptd.daemon.alerts import AlertDispatcher, AlertSettings, build_sinks, redacted_stats
from adaptd.streams.events import Signal, new_id
from adaptd.streams.log.file import FileLog

try:
    from conftest import free_port, wait_until
except ImportError:  # tests/ imported as a package
    from tests.conftest import free_port, wait_until

ROUTING_KEY = "R0UT1NGKEY-secret-0123456789abcdef"
SLACK_SECRET = "T000/B000/XXXXsecretXXXX"


class Service:
    """A loopback HTTP service: per path, the statuses to answer in turn (then ``ok``).

    Every request is recorded as ``(path, headers, body, status answered)``.
    """

    def __init__(self, script: dict[str, list[int | tuple[int, dict[str, str]]]] | None = None,
                 ok: int = 200) -> None:
        self.script = {path: list(answers) for path, answers in (script or {}).items()}
        self.ok = ok
        self.requests: list[tuple[str, dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                path = self.path.split("?", 1)[0]
                with service.lock:
                    answers = service.script.get(path)
                    answer = answers.pop(0) if answers else service.ok
                    status, headers = answer if isinstance(answer, tuple) else (answer, {})
                    service.requests.append((path, {k.lower(): v for k, v in self.headers.items()}, body, status))
                reply = b'{"status":"invalid event","message":"bad key ' + ROUTING_KEY.encode() + b'"}' \
                    if status == 400 else b"ok"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_port
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def got(self, path: str, *, ok_only: bool = True) -> list[dict]:
        """The JSON bodies POSTed to ``path`` (by default only those answered 2xx)."""
        with self.lock:
            return [json.loads(body) for p, _, body, status in self.requests
                    if p == path and (200 <= status < 300 or not ok_only)]

    def attempts(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, *_ in self.requests if p == path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[FileLog]:
    file_log = FileLog(tmp_path / "log")
    yield file_log
    file_log.close()


def signal(n: int, state: str = "open", severity: str = "critical", incident: int = 9) -> dict:
    """A signal as the error-burst processor writes it, dated now."""
    event = {
        "id": f"00000000-0000-5000-8000-{n:012d}", "ts": dt.datetime.now(dt.UTC).isoformat(), "v": 1,
        "kind": "signal", "tenant": "acme", "source": "adaptd.error_burst", "attrs": {}, "signal_type": "anomaly",
        "state": state, "program": "qa", "module": "answer", "route": "a", "model": None, "metric": "error_rate",
        "score": 0.8, "severity": "info" if state == "resolved" else severity, "window_start": None,
        "window_end": None, "incident_id": f"00000000-0000-5000-8000-{incident:012d}",
        "explanation": {"observed": 0.3, "expected": [0.0, 0.05]} if state != "resolved" else {"reason": "back in range"},
    }  # fmt: skip
    Signal.model_validate(event)
    return event


def dispatch(log: FileLog, signals: list[dict], **settings: Any) -> AlertDispatcher:
    d = AlertDispatcher(log, AlertSettings(**settings))
    d.start()
    log.append([orjson.dumps(s) for s in signals])
    return d


# ---------------------------------------------------------------- Slack


def test_slack_gets_text_and_blocks_and_a_500_is_retried_and_counted(log) -> None:
    slack = Service({"/services/" + SLACK_SECRET: [500, 200]})
    try:
        d = dispatch(log, [signal(1)], slack=[{"url": slack.base + "/services/" + SLACK_SECRET, "backoff_s": 0.01}])
        wait_until(lambda: d.stats()["sinks"][0]["delivered"] == 1)
        d.stop()
        (message,) = slack.got("/services/" + SLACK_SECRET)
        assert slack.attempts("/services/" + SLACK_SECRET) == 2
        assert message["text"].startswith("adaptd anomaly opened: error_rate on qa / answer / a (critical)")
        kinds = [b["type"] for b in message["blocks"]]
        assert kinds[:2] == ["header", "section"] and kinds[-1] == "context"
        fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in message["blocks"][2]["fields"]}
        assert fields["*Program*"] == "qa" and fields["*Route*"] == "a" and fields["*Severity*"] == "critical"
        assert signal(1)["incident_id"] in message["blocks"][-1]["elements"][0]["text"]
        (sink,) = redacted_stats(d.stats())["sinks"]
        assert (sink["sink"], sink["delivered"], sink["retries"], sink["failed"]) == ("slack", 1, 1, 0)
        assert SLACK_SECRET not in json.dumps(redacted_stats(d.stats()))
    finally:
        slack.close()


def test_a_429_retry_after_is_honoured_then_counted_as_a_retry(log) -> None:
    slack = Service({"/hook": [(429, {"retry-after": "0.3"}), 200]})
    try:
        d = dispatch(log, [signal(1)], slack=[{"url": slack.base + "/hook", "backoff_s": 0.0}])
        wait_until(lambda: d.stats()["sinks"][0]["delivered"] == 1)
        d.stop()
        assert d.stats()["sinks"][0]["retries"] == 1 and len(slack.got("/hook")) == 1
    finally:
        slack.close()


# ---------------------------------------------------------------- PagerDuty


def test_pagerduty_triggers_on_open_and_resolves_the_same_dedup_key(log) -> None:
    pd = Service({"/v2/enqueue": [429, 502, 202]}, ok=202)
    try:
        d = dispatch(log, [signal(1, severity="warning"), signal(2, "resolved")],
                     pagerduty=[{"routing_key": ROUTING_KEY, "url": pd.base + "/v2/enqueue", "backoff_s": 0.01,
                                 "severity": {"warning": "error"}, "source": "adaptd-prod"}])
        wait_until(lambda: d.stats()["sinks"][0]["delivered"] == 2)
        d.stop()
        trigger, resolve = pd.got("/v2/enqueue")
        incident = signal(1)["incident_id"]
        assert (trigger["event_action"], trigger["dedup_key"], trigger["routing_key"]) == ("trigger", incident,
                                                                                           ROUTING_KEY)
        assert trigger["payload"]["severity"] == "error" and trigger["payload"]["source"] == "adaptd-prod"
        assert d.settings.pagerduty[0].severity == {"info": "info", "warning": "error", "critical": "critical"}
        assert trigger["payload"]["summary"].startswith("adaptd anomaly opened: error_rate on qa")
        assert trigger["payload"]["custom_details"]["explanation"] == {"observed": 0.3, "expected": [0.0, 0.05]}
        assert resolve == {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": incident}
        (sink,) = d.stats()["sinks"]
        assert (sink["sink"], sink["delivered"], sink["retries"], sink["failed"]) == ("pagerduty", 2, 2, 0)
    finally:
        pd.close()


def test_a_refused_pagerduty_event_is_not_retried_and_no_view_shows_the_routing_key(log) -> None:
    pd = Service({"/v2/enqueue": [400, 400]})
    try:
        d = dispatch(log, [signal(1)], pagerduty=[{"routing_key": ROUTING_KEY, "url": pd.base + "/v2/enqueue"}])
        wait_until(lambda: d.stats()["sinks"][0]["failed"] == 1)
        d.stop()
        assert pd.attempts("/v2/enqueue") == 1
        shown = redacted_stats(d.stats())
        assert "HTTP 400: " in shown["sinks"][0]["last_error"] and "invalid event" in shown["sinks"][0]["last_error"]
        assert ROUTING_KEY not in json.dumps(shown) + json.dumps(d.stats())
        assert ROUTING_KEY not in repr(d.settings) + d.settings.model_dump_json()
    finally:
        pd.close()


# ---------------------------------------------------------------- Apprise


def test_apprise_json_url_is_notified_by_apprise_and_failures_are_retried(log) -> None:
    service = Service({"/notify": [500, 500, 200]})
    url = f"json://127.0.0.1:{service.port}/notify"
    try:
        d = dispatch(log, [signal(1), signal(2, "resolved")], apprise=[{"urls": [url], "backoff_s": 0.01}])
        wait_until(lambda: d.stats()["sinks"][0]["delivered"] == 2, timeout=20)
        d.stop()
        opened, resolved = service.got("/notify")
        assert opened["type"] == "failure" and opened["title"] == "adaptd anomaly opened: error_rate"
        assert signal(1)["incident_id"] in opened["message"] and "observed 0.3" in opened["message"]
        assert resolved["type"] == "success" and resolved["title"].startswith("adaptd anomaly resolved")
        (sink,) = redacted_stats(d.stats())["sinks"]
        assert (sink["sink"], sink["name"], sink["retries"], sink["delivered"]) == ("apprise", "json://…", 2, 2)
    finally:
        service.close()


def test_an_apprise_url_that_keeps_failing_is_counted_with_apprises_reason(log) -> None:
    url = f"json://127.0.0.1:{free_port()}/nobody-listens"
    d = dispatch(log, [signal(1)], apprise=[{"urls": [url], "retries": 1, "backoff_s": 0.01}])
    wait_until(lambda: d.stats()["sinks"][0]["failed"] == 1, timeout=30)
    d.stop()
    (sink,) = redacted_stats(d.stats())["sinks"]
    assert sink["retries"] == 1 and "after 2 attempts" in sink["last_error"]
    assert "nobody-listens" not in json.dumps(sink)


def test_bad_sink_settings_say_what_to_fix() -> None:
    with pytest.raises(ValidationError, match="not a URL Apprise can notify"):
        AlertSettings(apprise=[{"urls": ["nosuchservice://token"]}])
    with pytest.raises(ValidationError, match="routing_key must not be empty"):
        AlertSettings(pagerduty=[{"routing_key": " "}])
    with pytest.raises(ValidationError, match="slack url .* must start with http"):
        AlertSettings(slack=[{"url": "hooks.slack.com/services/x"}])
    assert AlertSettings(pagerduty=[{"routing_key": "k"}]).pagerduty[0].url == "https://events.pagerduty.com/v2/enqueue"
    assert AlertSettings(slack=[{"url": "https://hooks.slack.com/services/x"}]).has_sinks


def test_the_commented_sink_examples_in_the_default_config_are_valid_settings() -> None:
    text = (Path(__file__).resolve().parents[1] / "config" / "adaptd.toml").read_text()
    section = text[text.index("\n[alerts]"):]
    examples = section[section.index("# [[alerts."):section.index("\n\n")]
    uncommented = "\n".join(line[2:] for line in examples.splitlines() if not line.startswith("# #"))
    settings = AlertSettings(**tomllib.loads(uncommented)["alerts"])
    kinds = [s.kind for s in build_sinks(settings)]
    assert kinds == ["webhook", "slack", "pagerduty", "apprise", "apprise", "apprise", "command", "file"]


def test_the_daemon_does_not_import_apprise_unless_an_apprise_sink_is_configured() -> None:
    code = ("import sys; from adaptd.daemon import alerts, config, runtime; "
            "assert 'apprise' not in sys.modules, 'imported'; "
            "alerts.AlertSettings(apprise=[{'urls': ['json://127.0.0.1:9/x']}]); "
            "assert 'apprise' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- a real daemon, real signals

RATE = 20  # executions per second of event time


def _executions(start: dt.datetime, seconds: int, error_rate: float, rng: random.Random) -> list[dict]:
    return [{
        "id": str(new_id()), "kind": "execution", "program": "checkout", "module": "answer", "route": "gpt-4o-mini",
        "ts": (start + dt.timedelta(seconds=i / RATE)).isoformat(), "duration_ms": 150.0,
        "status": "error" if (failed := rng.random() < error_rate) else "ok",
        "error_type": "RateLimitError" if failed else None,
    } for i in range(seconds * RATE)]  # fmt: skip


def test_a_daemons_error_burst_reaches_slack_pagerduty_and_apprise_despite_failing_first_attempts(
        daemon_factory, tmp_path: Path) -> None:
    services = Service({"/slack": [500, 429, 200], "/pd": [(429, {"retry-after": "0"}), 500, 202],
                        "/apprise": [500, 200]})
    config = tmp_path / "adaptd.toml"
    config.write_text(f"""
[[alerts.slack]]
url = "{services.base}/slack"
backoff_s = 0.05
[[alerts.pagerduty]]
routing_key = "{ROUTING_KEY}"
url = "{services.base}/pd"
backoff_s = 0.05
[[alerts.apprise]]
urls = ["json://127.0.0.1:{services.port}/apprise"]
backoff_s = 0.05
""")
    daemon = daemon_factory("alerting", config=config).start()
    try:
        rng = random.Random(11)
        start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=20)
        events = (_executions(start, 600, 0.01, rng)  # 10 calm minutes, then a minute at 30 % errors,
                  + _executions(start + dt.timedelta(seconds=600), 60, 0.30, rng)
                  + _executions(start + dt.timedelta(seconds=660), 240, 0.01, rng))  # then calm: resolved
        with httpx.Client(base_url=daemon.url, timeout=30) as client:
            for i in range(0, len(events), 2000):
                answer = client.post("/v1/events", content=orjson.dumps(events[i:i + 2000]))
                assert answer.status_code == 200 and not answer.json()["rejected"]

            def burst_resolved() -> list[dict] | None:
                items = client.get("/v1/signals", params={"program": "checkout"}).json()["items"]
                burst = [s for s in items if s["source"] == "adaptd.error_burst"]
                return burst if {s["state"] for s in burst} >= {"open", "resolved"} else None

            signals = wait_until(burst_resolved, timeout=90)
            incident = signals[0]["incident_id"]

            def pd_resolved() -> list[dict] | None:
                mine = [e for e in services.got("/pd") if e["dedup_key"] == incident]
                return mine if [e["event_action"] for e in mine][-1:] == ["resolve"] else None

            pd = wait_until(pd_resolved, timeout=60)
            assert pd[0]["event_action"] == "trigger" and pd[0]["payload"]["severity"] in ("warning", "critical")
            assert pd[0]["routing_key"] == pd[-1]["routing_key"] == ROUTING_KEY
            def slack_said() -> set[str]:
                return {m["text"].split(":")[0] for m in services.got("/slack")
                        if incident in m["blocks"][-1]["elements"][0]["text"]}

            wait_until(lambda: slack_said() == {"adaptd anomaly opened", "adaptd anomaly resolved"}, timeout=60)

            def apprise_said() -> set[str]:
                return {m["type"] for m in services.got("/apprise") if incident in m["message"]}

            wait_until(lambda: len(apprise_said()) == 2 and "success" in apprise_said(), timeout=60)

            stats = client.get("/v1/stats").json()["alerts"]
            retries = {s["sink"]: s["retries"] for s in stats["sinks"]}
            assert retries == {"slack": 2, "pagerduty": 2, "apprise": 1}, stats["sinks"]
            assert all(s["failed"] == 0 and s["delivered"] >= 2 for s in stats["sinks"])
            metrics = client.get("/metrics")
            assert ROUTING_KEY not in json.dumps(stats) + metrics.text
        scraped = {(s.labels["sink"], s.value) for family in text_string_to_metric_families(metrics.text)
                   for s in family.samples if s.name == "adaptd_alert_sink_retries_total"}
        assert scraped == {("slack", 2.0), ("pagerduty", 2.0), ("apprise", 1.0)}
        assert daemon.stop() == 0
    finally:
        services.close()
