"""Tenant isolation, endpoint by endpoint, generated from the live OpenAPI document.

One real daemon with three tenants: ``acme`` and ``beta`` (not admins) and ``ops`` (the
admin).  ``acme`` and ``beta`` both post a workload (executions, LM calls, feedback; the
configured routing program ``qa`` fails late, which opens a breaker: signals and
adaptations); every one of their events carries the tenant's secret marker string, and
their own programs are named after the tenant.  ``ops`` runs an optimization job.

Then every operation of ``GET /openapi.json`` is called, so an endpoint added tomorrow is
covered without anyone remembering:

- without a token, and with an unknown one: 401;
- every GET, with each non-admin tenant's token and path/query parameters filled with the
  *other* tenant's (and the admin's) names and ids: no marker, program name or id of the
  other tenant in the answer;
- every write except ingest (``ALLOWED_TO_EVERY_TENANT``) with a non-admin token: 403,
  and with the admin's token aimed at another tenant's ids: no 2xx and the other tenant's
  state unchanged.

A violation never stops the loop: each test lists them all in its failure message.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import DaemonProcess, wait_until
from dash_workload import optimize_config, workload
from optimize_kit import wait_job

ACME_TOKEN, BETA_TOKEN, OPS_TOKEN = "tok-acme-5f0c2d9e71", "tok-beta-8a41b6e3c0", "tok-ops-admin-2b7d94e1f6"
TOKENS = {"acme": ACME_TOKEN, "beta": BETA_TOKEN, "ops": OPS_TOKEN}
#: A string only this tenant's events contain (an error message, an attribute, a module name).
SECRETS = {"acme": "ACME-SECRET-7c1e93", "beta": "BETA-SECRET-40d2af", "ops": "OPS-SECRET-9b35e0"}
#: The webhook sink's URL holds a secret only an admin may see.
SINK_SECRET = "SINK-SECRET-e61f0a"
NS = uuid.UUID("6a3e1f0c-2b1d-4f7e-8c5a-9d0e1b2c3a4f")

#: Writes any tenant may make (on its own data); every other write needs an admin.
ALLOWED_TO_EVERY_TENANT = {("POST", "/v1/events"), ("POST", "/v1/traces"), ("POST", "/v1/optimization/recommend")}
#: Longest a GET may stream before the test stops reading (the SSE tail never ends by itself).
READ_FOR_S = 1.0

CONFIG = f"""
[[tenants]]
name = "acme"
tokens = ["{ACME_TOKEN}"]

[[tenants]]
name = "beta"
tokens = ["{BETA_TOKEN}"]
admin = false

[[tenants]]
name = "ops"
tokens = ["{OPS_TOKEN}"]
admin = true

[alerts]
webhooks = [{{ url = "http://127.0.0.1:9/hook?token={SINK_SECRET}", retries = 0, timeout_s = 0.5 }}]
"""


def bearer(tenant: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[tenant]}"} if tenant else {}


def tenant_workload(tenant: str) -> list[dict[str, Any]]:
    """The dashboard workload made this tenant's own: ids mixed with the tenant (no id is
    shared with another tenant), ``summarize`` renamed ``<tenant>-summarize``, and the
    tenant's secret in an attribute of every event and in every error message."""
    def own(value: str) -> str:
        return str(uuid.uuid5(NS, f"{tenant}/{value}"))

    events = workload()
    for e in events:
        e["id"] = own(e["id"])
        if "execution_id" in e:
            e["execution_id"] = own(e["execution_id"])
        if e.get("program") == "summarize":
            e["program"] = f"{tenant}-summarize"
            e["module"] = f"{tenant}-module-{SECRETS[tenant]}"
        e["marker"] = SECRETS[tenant]  # unknown field: kept in attrs
        if e.get("error_type"):
            e["error_message"] = f"upstream said {SECRETS[tenant]}"
    return events


@dataclass
class World:
    """The daemon and what each tenant owns in it."""

    daemon: DaemonProcess
    doc: dict[str, Any]
    #: tenant -> every id (posted or derived) its own answers show
    ids: dict[str, set[str]] = field(default_factory=dict)
    #: tenant -> parameter name -> values, to fill path and query parameters with its things
    params: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def client(self, tenant: str | None) -> httpx.Client:
        return httpx.Client(base_url=self.daemon.url, headers=bearer(tenant), timeout=30)

    def markers(self, tenant: str) -> set[str]:
        """Strings that appear only in ``tenant``'s data."""
        return {SECRETS[tenant], f"{tenant}-summarize", f"{tenant}-module"}


UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def read(client: httpx.Client, method: str, url: str, **kwargs: Any) -> tuple[int, str]:
    """Status and body text; of a Server-Sent Events answer (it never ends by itself),
    what arrives until it is quiet for ``READ_FOR_S`` or for at most twice that."""
    try:
        with client.stream(method, url, timeout=httpx.Timeout(30, read=READ_FOR_S), **kwargs) as answer:
            chunks: list[bytes] = []
            deadline = time.monotonic() + 2 * READ_FOR_S
            try:
                for chunk in answer.iter_raw():
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        break
            except httpx.ReadTimeout:
                if not answer.headers.get("content-type", "").startswith("text/event-stream"):
                    raise
            return answer.status_code, b"".join(chunks).decode(errors="replace")
    except httpx.ReadTimeout:
        # a slow ordinary answer: wait for it in full
        answer = client.request(method, url, **kwargs)
        return answer.status_code, answer.text


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every ``(METHOD, path, operation)`` of the OpenAPI document."""
    return [(method.upper(), path, op) for path, ops in doc["paths"].items() for method, op in ops.items()
            if method in ("get", "post", "put", "patch", "delete")]


def caught_up(client: httpx.Client) -> bool:
    s = client.get("/v1/stats").json()
    procs = s.get("processors") or {}
    return s["projector_lag"] == 0 and procs.get("lag", 0) == 0


def wait_settled(client: httpx.Client, timeout: float = 30.0) -> None:
    """Until the projector and the processors have read the whole log, twice in a row
    (processors append derived events the projector then reads)."""
    try:
        wait_until(lambda: caught_up(client) and caught_up(client), timeout=timeout, interval=0.1)
    except AssertionError:
        stats = client.get("/v1/stats").json()
        raise AssertionError(f"not caught up in {timeout}s: projector_lag={stats.get('projector_lag')},"
                             f" processors={json.dumps(stats.get('processors'))[:500]}") from None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("isolation")
    (root / "adaptd.toml").write_text(CONFIG + optimize_config(root))
    daemon = DaemonProcess(root / "data", config=root / "adaptd.toml", env={"ADAPTD_TEST_TOKEN": OPS_TOKEN}).start()
    try:
        with httpx.Client(base_url=daemon.url, timeout=30) as client:
            for tenant in ("acme", "beta"):
                events = tenant_workload(tenant)
                for start in range(0, len(events), 500):
                    answer = client.post("/v1/events", json=events[start:start + 500], headers=bearer(tenant))
                    assert answer.status_code == 200 and not answer.json()["rejected"], answer.text
            job = client.post("/v1/optimization/jobs", headers=bearer("ops"),
                              json={"program": "summarize", "optimizer": "BootstrapFewShot"})
            assert job.status_code == 202, job.text
            client.headers.update(bearer("ops"))
            final = wait_job(client, job.json()["job_id"], timeout=120)
            assert final["status"] == "succeeded", final
            wait_settled(client)
            doc = client.get("/openapi.json").json()
        world = World(daemon, doc)
        for tenant in ("acme", "beta", "ops"):
            world.ids[tenant], world.params[tenant] = _inventory(world, tenant)
        world.params["ops"]["job_id"] = [job.json()["job_id"]]
        yield world
    finally:
        daemon.stop()


def _inventory(world: World, tenant: str) -> tuple[set[str], dict[str, list[str]]]:
    """Every id in ``tenant``'s own answers to the parameterless GETs, and a value for each
    parameter name (this tenant's program, adaptation, signal, ...)."""
    ids: set[str] = set()
    with world.client(tenant) as client:
        for method, path, _ in operations(world.doc):
            if method == "GET" and "{" not in path and path != "/v1/stream":
                ids |= set(UUID_RE.findall(read(client, method, path)[1]))
        # its own program, the routing program and the optimization program (both configured
        # for every tenant), and the newest of each thing it owns
        params = {"program": [f"{tenant}-summarize", "qa", "summarize"], "action": ["pin", "unpin"],
                  "version": ["v1"], "job_id": ["job-0123456789abcdef"],
                  "execution_id": [str(uuid.uuid5(NS, f"{tenant}/no-execution"))]}
        for name, path, key in (("adaptation_id", "/v1/adaptations", "id"), ("signal_id", "/v1/signals", "id"),
                                ("job_id", "/v1/optimization/jobs", "job_id"),
                                ("execution_id", "/v1/executions", "id")):
            items = client.get(path).json()["items"]
            if items:
                params[name] = [str(items[0][key])]
    return ids, params


# -- tests -----------------------------------------------------------------------------


def test_the_setup_gave_each_tenant_data_of_its_own(world: World) -> None:
    """The matrix means something only if both tenants have rows where it looks."""
    for tenant in ("acme", "beta"):
        with world.client(tenant) as client:
            programs = {p["program"] for p in client.get("/v1/programs").json()["items"]}
            assert {"qa", f"{tenant}-summarize"} <= programs, programs
            assert client.get("/v1/signals").json()["items"], f"{tenant} has no signals"
            assert client.get("/v1/adaptations").json()["items"], f"{tenant} has no adaptations"
            assert {"adaptation_id", "signal_id"} <= set(world.params[tenant]), world.params[tenant]
            # the markers the matrix looks for are visible to their owner
            assert SECRETS[tenant] in client.get("/v1/executions", params={"status": "error"}).text
            assert len(world.ids[tenant] - world.ids["acme" if tenant == "beta" else "beta"]) > 100
    assert "job_id" in world.params["ops"]
    assert len(operations(world.doc)) >= 20


def test_every_operation_refuses_a_request_without_a_known_token(world: World) -> None:
    violations = []
    with world.client(None) as client:
        for method, path, op in operations(world.doc):
            url = next(_urls(path, op, world.params["acme"]))
            for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Bearer"},
                            {"Authorization": f"Basic {ACME_TOKEN}"}):
                status, body = read(client, method, url, headers=headers, **_body(method, path))
                if status != 401:
                    violations.append(f"{method} {url} headers={headers}: {status} {body[:200]}")
    assert not violations, "expected 401:\n" + "\n".join(violations)


def test_no_get_shows_a_tenant_anything_of_another_tenant(world: World) -> None:
    """Each GET, plain and with every parameter filled from the other tenant (and the
    admin): no marker, own-program name or id of theirs in the answer."""
    violations = []
    calls = 0
    for viewer, others in (("beta", ("acme", "ops")), ("acme", ("beta", "ops"))):
        forbidden_ids = set().union(*(world.ids[o] for o in others)) - world.ids[viewer]
        forbidden = set().union(*(world.markers(o) for o in others)) | {SINK_SECRET}
        seen: set[str] = set()
        with world.client(viewer) as client:
            for method, path, op in operations(world.doc):
                if method != "GET":
                    continue
                for owner in (viewer, *others):
                    for url, query in _calls(path, op, world.params[owner]):
                        if path == "/v1/stream":
                            query["from_offset"] = 0  # the whole log, not only what comes next
                        if (key := f"{url} {sorted(query.items())}") in seen:
                            continue
                        seen.add(key)
                        status, body = read(client, method, url, params=query)
                        calls += 1
                        if status >= 500:
                            violations.append(f"{viewer}: {method} {url} {query}: {status} {body[:200]}")
                        # a name the viewer sent itself (a 404 echoing it) reveals nothing
                        sent = url + json.dumps(query)
                        leaked = sorted(m for m in forbidden if m in body and m not in sent)
                        leaked_ids = sorted(set(UUID_RE.findall(body)) & forbidden_ids)
                        if leaked or leaked_ids:
                            violations.append(f"{viewer}: {method} {url} {query} -> {status} shows "
                                              f"{leaked + leaked_ids[:3]} ({len(leaked_ids)} ids of {others})")
    assert calls > 50
    assert not violations, "cross-tenant reads:\n" + "\n".join(violations)


def test_every_write_but_ingest_refuses_a_tenant_that_is_not_an_admin(world: World) -> None:
    violations = []
    for tenant in ("acme", "beta"):
        with world.client(tenant) as client:
            for method, path, op in operations(world.doc):
                if method == "GET" or (method, path) in ALLOWED_TO_EVERY_TENANT:
                    continue
                for owner in (tenant, "acme" if tenant == "beta" else "beta"):
                    for url in _urls(path, op, world.params[owner]):
                        status, body = read(client, method, url, **_body(method, path))
                        if status != 403 or "not an admin" not in body:
                            violations.append(f"{tenant}: {method} {url}: {status} {body[:200]}")
    assert not violations, "expected 403 for a non-admin:\n" + "\n".join(violations)


def test_an_admin_write_aimed_at_another_tenants_ids_changes_nothing_of_theirs(world: World) -> None:
    """The admin acts as its own tenant: another tenant's adaptation or signal id is
    unknown to it (404), and that tenant's timeline, signals and routing stay as they were."""
    before = {t: _state(world, t) for t in ("acme", "beta")}
    violations = []
    with world.client("ops") as client:
        for method, path, op in operations(world.doc):
            if method == "GET" or (method, path) in ALLOWED_TO_EVERY_TENANT or "{" not in path:
                continue
            for victim in ("acme", "beta"):
                for url in _urls(path, op, world.params[victim]):
                    status, body = read(client, method, url, **_body(method, path))
                    owned = _ids_in_path(path, world.params[victim])
                    if owned and status != 404:
                        violations.append(f"ops on {victim}'s {owned}: {method} {url}: {status} (expected 404)"
                                          f" {body[:200]}")
                    if status >= 500:
                        violations.append(f"ops: {method} {url}: {status} {body[:200]}")
        wait_settled(client)
    for tenant in ("acme", "beta"):
        after = _state(world, tenant)
        for what, rows in after.items():
            if rows != before[tenant][what]:
                violations.append(f"{tenant}'s {what} changed after the admin's writes: "
                                  f"{json.dumps(before[tenant][what])[:300]} -> {json.dumps(rows)[:300]}")
    assert not violations, "\n".join(violations)


def test_an_event_id_another_tenant_posted_first_is_still_stored_for_this_one(world: World) -> None:
    """Ids are per tenant: beta posting id X first must not swallow acme's event X."""
    ts = dt.datetime(2026, 11, 22, 9, 0, tzinfo=dt.UTC).isoformat()
    shared = str(uuid.uuid4())
    with httpx.Client(base_url=world.daemon.url, timeout=30) as client:
        for tenant in ("beta", "acme"):
            answer = client.post("/v1/events", headers=bearer(tenant), json=[
                {"id": shared, "kind": "execution", "ts": ts, "program": f"{tenant}-claims", "duration_ms": 1.0}])
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] == 1, (tenant, answer.text)
        client.headers.update(bearer("ops"))
        wait_settled(client)
        for tenant in ("acme", "beta"):
            rows = client.get("/v1/executions", headers=bearer(tenant),
                              params={"program": f"{tenant}-claims"}).json()["items"]
            assert [r["id"] for r in rows] == [shared], f"{tenant}'s event {shared} was not stored: {rows}"


def test_stats_shows_a_tenant_no_sink_secret_and_no_other_tenants_counts(world: World) -> None:
    with world.client("beta") as beta, world.client("ops") as ops:
        mine = beta.get("/v1/stats")
        everyone = ops.get("/v1/stats").json()
    assert mine.status_code == 200
    violations = []
    if SINK_SECRET in mine.text:
        violations.append("a non-admin tenant reads the webhook URL's secret in /v1/stats")
    if mine.json().get("events_acked", 0) >= everyone["events_acked"]:
        violations.append("a non-admin tenant's /v1/stats counts every tenant's events: "
                          f"{mine.json().get('events_acked')} of {everyone['events_acked']}")
    assert not violations, "\n".join(violations)


# -- helpers ---------------------------------------------------------------------------


def _params_of(op: dict[str, Any], where: str) -> list[dict[str, Any]]:
    return [p for p in op.get("parameters", []) if p["in"] == where]


def _urls(path: str, op: dict[str, Any], values: dict[str, list[str]]) -> Iterator[str]:
    """``path`` with its ``{name}`` parameters filled, once per combination of ``values``.

    Raises:
        AssertionError: a path parameter the matrix has no value for (a new endpoint:
            teach ``_inventory`` a value of each tenant's for it).
    """
    names = [p["name"] for p in _params_of(op, "path")]
    missing = [n for n in names if n not in values]
    assert not missing, f"path parameter(s) {missing} of {path}: teach the isolation matrix (_inventory) a value"
    for combo in itertools.product(*(values[n] for n in names)):
        url = path
        for name, value in zip(names, combo, strict=True):
            url = url.replace("{" + name + "}", value)
        yield url


def _calls(path: str, op: dict[str, Any], values: dict[str, list[str]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each filled URL, plain and with each query parameter that names a thing of ``values``."""
    for url in _urls(path, op, values):
        yield url, {}
        for p in _params_of(op, "query"):
            for value in values.get(p["name"], []):
                yield url, {p["name"]: value}


def _body(method: str, path: str) -> dict[str, Any]:
    """A plausible JSON body for a write (its exact shape does not matter to the checks)."""
    if method == "GET":
        return {}
    if path.startswith("/v1/routing/"):
        return {"json": {"route": "primary"}}
    if path == "/v1/optimization/jobs":
        return {"json": {"program": "summarize", "optimizer": "BootstrapFewShot", "budget_lm_calls": 1}}
    if path == "/v1/events":
        return {"json": []}
    return {"json": {}}


def _ids_in_path(path: str, values: dict[str, list[str]]) -> list[str]:
    """The ids of ``values`` that ``path`` names (an adaptation, a signal, a job)."""
    return [v for n in ("adaptation_id", "signal_id", "job_id") if "{" + n + "}" in path for v in values.get(n, [])]


def _state(world: World, tenant: str) -> dict[str, Any]:
    """What an admin write could change of ``tenant``: its adaptations, signals and routing."""
    with world.client(tenant) as client:
        return {"adaptations": [a["id"] for a in client.get("/v1/adaptations", params={"limit": 1000}).json()["items"]],
                "signals": [s["id"] for s in client.get("/v1/signals", params={"limit": 1000}).json()["items"]],
                "routing": client.get("/v1/routing").json()["items"]}
