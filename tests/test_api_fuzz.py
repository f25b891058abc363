"""No request makes the daemon answer 5xx: schemathesis, driven by the live OpenAPI document.

A real daemon (tenants, an admin, a routing program and an optimization program), its
``GET /openapi.json`` fetched with a token, and every operation fuzzed with schemathesis'
positive (schema-valid) and negative (schema-violating) cases under the admin's token,
which reaches every handler.  The check is schemathesis' ``not_a_server_error``.

The document does not describe the ingest bodies (``/v1/events`` and ``/v1/traces`` read
the raw body), so ``fuzz_schema`` adds them: a JSON array of the event union from
``GET /v1/schema`` for ``/v1/events``, any JSON object for ``/v1/traces``.  ``/v1/stream``
(Server-Sent Events, never ends by itself) is left out of the generic run.

``bench/api_fuzz_bench.py`` runs the same fuzzer for >= 10,000 cases.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from dash_workload import optimize_config

schemathesis = pytest.importorskip("schemathesis", reason="the fuzz test needs schemathesis (dev extra)")

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402

from adaptd.daemon.testing import DaemonProcess  # noqa: E402

ADMIN_TOKEN, USER_TOKEN = "tok-fuzz-admin-3c9a71e0", "tok-fuzz-user-5d02be84"

CONFIG = f"""
[[tenants]]
name = "ops"
tokens = ["{ADMIN_TOKEN}"]
admin = true

[[tenants]]
name = "acme"
tokens = ["{USER_TOKEN}"]

[[routing]]
program = "qa"
[[routing.routes]]
name = "primary"
model = "openai/gpt-4o-mini"
[[routing.routes]]
name = "backup"
model = "openai/gpt-4.1-nano"
"""

#: Operations left out of the generic run, and why.
SKIPPED = {("GET", "/v1/stream"): "Server-Sent Events: the answer never ends by itself"}
#: Per request; a handler slower than this is a finding too (reported as status 0).
REQUEST_TIMEOUT_S = 20.0


def fuzz_config(root: Path) -> str:
    """The daemon's config: tenants, routing for ``qa`` and the toy program ``summarize``
    registered for optimization (example files under ``root``), so every handler runs."""
    return CONFIG.split("[[routing]]")[0] + optimize_config(root)


def fuzz_schema(url: str, token: str) -> Any:
    """The live OpenAPI document, with the ingest bodies it leaves out, as a schemathesis
    schema whose base URL is ``url``."""
    headers = {"Authorization": f"Bearer {token}"}
    doc = httpx.get(f"{url}/openapi.json", headers=headers, timeout=30).raise_for_status().json()
    events = httpx.get(f"{url}/v1/schema", headers=headers, timeout=30).raise_for_status().json()
    doc = copy.deepcopy(doc)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    # /v1/schema's $defs become components named Event_<kind model>; refs rewritten to match
    text = json.dumps(events).replace('"#/$defs/', '"#/components/schemas/Event_')
    events = json.loads(text)
    for name, definition in events.pop("$defs", {}).items():
        components[f"Event_{name}"] = definition
    events.pop("discriminator", None)  # the oneOf alone is enough to generate from
    events.pop("title", None)
    body = {"type": "array", "items": events, "maxItems": 20}
    doc["paths"]["/v1/events"]["post"]["requestBody"] = {
        "required": True, "content": {"application/json": {"schema": body}}}
    doc["paths"]["/v1/traces"]["post"]["requestBody"] = {
        "required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    schema = schemathesis.openapi.from_dict(doc)
    schema.config.update(base_url=url)
    return schema


@dataclass
class ServerError:
    """One 5xx (or no answer): enough to reproduce it."""

    operation: str
    status: int
    curl: str
    body: str


@dataclass
class FuzzReport:
    cases: Counter = field(default_factory=Counter)
    server_errors: list[ServerError] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    def merge(self, other: FuzzReport) -> None:
        self.cases.update(other.cases)
        self.statuses.update(other.statuses)
        self.server_errors.extend(other.server_errors)


def fuzz(schema: Any, token: str, *, examples: int, rng_seed: int, deadline_s: float | None = None,
         modes: tuple[str, ...] = ("positive", "negative")) -> FuzzReport:
    """Run up to ``examples`` cases per operation and mode; every 5xx is recorded, none stops
    the run (hypothesis does not shrink: the first example of each is the reproducer).

    ``deadline_s`` bounds the whole run: operations not reached by then are not run.
    """
    report = FuzzReport()
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in SKIPPED:
            continue
        label = f"{key[0]} {key[1]}"
        for mode in modes:
            if deadline_s is not None and time.monotonic() - started > deadline_s:
                return report
            strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

            @seed(rng_seed)
            @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                      suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
            @given(case=strategy)
            def run(case: Any) -> None:
                report.cases[label] += 1
                try:
                    response = case.call(headers=headers, session=session, timeout=REQUEST_TIMEOUT_S)
                except Exception as exc:  # no answer at all (timeout, reset) is a finding, never a crash
                    report.statuses[0] += 1
                    report.server_errors.append(ServerError(label, 0, case.as_curl_command(headers), repr(exc)))
                    return
                report.statuses[response.status_code] += 1
                try:
                    case.validate_response(response, checks=[not_a_server_error], headers=headers)
                except FailureGroup:  # a BaseExceptionGroup: recorded, not raised (no shrinking)
                    report.server_errors.append(ServerError(label, response.status_code,
                                                            case.as_curl_command(headers), response.text[:500]))

            try:
                run()
            except Unsatisfiable:
                pass  # no case of this mode exists (a negative case of an operation without inputs)
    return report


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "adaptd.toml").write_text(fuzz_config(root))
    process = DaemonProcess(root / "data", config=root / "adaptd.toml", env={"ADAPTD_TEST_TOKEN": ADMIN_TOKEN})
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_no_generated_request_gets_a_server_error(daemon: DaemonProcess) -> None:
    """Every operation of the live document, schema-valid and schema-violating cases, as the
    admin: not one 5xx."""
    schema = fuzz_schema(daemon.url, ADMIN_TOKEN)
    report = fuzz(schema, ADMIN_TOKEN, examples=40, rng_seed=20261122, deadline_s=80)
    assert len(report.cases) >= 20, f"only {sorted(report.cases)} were fuzzed"
    assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon died: " + daemon.tail()
    lines = [f"{e.operation} -> {e.status}: {e.body[:200]}\n    {e.curl}" for e in report.server_errors]
    assert not report.server_errors, (f"{len(report.server_errors)} of {report.total} cases got 5xx:\n"
                                      + "\n".join(lines[:30]))


def test_a_tenant_that_is_not_an_admin_gets_no_server_error_either(daemon: DaemonProcess) -> None:
    """The same document as a non-admin: refusals are 401/403/4xx, never 5xx."""
    schema = fuzz_schema(daemon.url, USER_TOKEN)
    report = fuzz(schema, USER_TOKEN, examples=4, rng_seed=7, deadline_s=25, modes=("positive",))
    lines = [f"{e.operation} -> {e.status}: {e.body[:200]}\n    {e.curl}" for e in report.server_errors]
    assert not report.server_errors, "\n".join(lines[:30])


# -- what the fuzzer found, kept as plain regression cases -----------------------------


def test_an_event_time_that_overflows_on_conversion_to_utc_is_dead_lettered_alone(daemon: DaemonProcess) -> None:
    """``0001-01-01T01:00:01+03:04`` is a valid ISO time whose UTC is before year 1: the
    event gets a reason, the valid event beside it is acknowledged, nothing answers 500."""
    valid = {"id": "0190f3a0-0000-7000-8000-000000000001", "kind": "execution", "ts": "2026-11-22T10:00:00Z",
             "program": "fuzz-neighbour", "duration_ms": 1.0}
    overflow = {"id": "e3e70682-c209-1cac-a29f-6fbed82c07cd", "kind": "execution", "ts": "0001-01-01T01:00:01+03:04",
                "program": "fuzz"}
    answer = httpx.post(f"{daemon.url}/v1/events", json=[overflow, valid],
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    assert answer.status_code < 500, answer.text
    if answer.status_code == 200:
        body = answer.json()
        assert body["accepted"] == 1 and len(body["rejected"]) == 1, body


@pytest.mark.parametrize("body", [
    {"train_size": 4114, "has_metric": False, "budget_lm_calls": 120844323, "calls_per_example": 3.6190328724946504e16},
    {"train_size": 10, "calls_per_example": 1e300},
])
def test_a_recommendation_for_huge_numbers_is_not_a_server_error(daemon: DaemonProcess, body: dict) -> None:
    """The recommendation's estimates must fit the JSON answer (or be refused with 422)."""
    answer = httpx.post(f"{daemon.url}/v1/optimization/recommend", json=body,
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    assert answer.status_code < 500, answer.text

