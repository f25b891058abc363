"""What one tenant sees and holds: its own counters in /v1/stats, and a bounded number of live tails.

One real daemon (in process, real HTTP, log and DuckDB) with two tenants, ``acme`` and
``beta``, and an admin, ``ops``; an alert webhook whose URL carries a secret and a
command sink whose arguments do.  A tenant's /v1/stats holds its own counters and
nothing that tells about another tenant (no totals, no log offsets, no sinks); the admin
sees every counter, per tenant too, and no sink secret either.  Each tenant may hold
``max_streams_per_tenant`` tails open: one more is answered 429 with the reason, the
other tenant is not affected, and a tail that closes frees its slot.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import InProcessDaemon, wait_until

from adaptd.daemon.config import load_settings

TOKENS = {"acme": "tok-acme-31f9c0", "beta": "tok-beta-7d2e44", "ops": "tok-ops-admin-90ab1c"}
SECRETS = ("HOOK-SECRET-5a1f", "QUERY-SECRET-e07b", "ARGV-SECRET-c3d2")
CAP = 2


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessDaemon]:
    root: Path = tmp_path_factory.mktemp("scope")
    settings = load_settings(
        None,
        data_dir=root / "data",
        tenants=[{"name": "acme", "tokens": [TOKENS["acme"]]}, {"name": "beta", "tokens": [TOKENS["beta"]]},
                 {"name": "ops", "tokens": [TOKENS["ops"]], "admin": True}],
        alerts={
            "webhooks": [{"url": f"https://hooks.example.com/services/{SECRETS[0]}?token={SECRETS[1]}",
                          "retries": 0, "timeout_s": 0.5}],
            "commands": [{"argv": ["notify-send", "--key", SECRETS[2]]}],
        },
        max_streams_per_tenant=CAP,
    )
    with InProcessDaemon(settings) as d:
        yield d


def client(daemon: InProcessDaemon, tenant: str) -> httpx.Client:
    return httpx.Client(base_url=daemon.url, timeout=10.0, headers={"Authorization": f"Bearer {TOKENS[tenant]}"})


def executions(n: int, program: str) -> list[dict[str, object]]:
    return [{"id": str(uuid.uuid4()), "ts": "2026-12-05T10:00:00Z", "kind": "execution", "program": program,
             "duration_ms": 5.0} for _ in range(n)]


def test_a_tenant_sees_its_own_counters_and_nothing_about_another_tenant(daemon: InProcessDaemon) -> None:
    with client(daemon, "acme") as acme, client(daemon, "beta") as beta, client(daemon, "ops") as ops:
        before = {t: c.get("/v1/stats").json()["events_acked"] for t, c in (("acme", acme), ("beta", beta))}
        assert acme.post("/v1/events", json=executions(30, "acme-claims")).json()["accepted"] == 30
        assert beta.post("/v1/events", json=executions(5, "beta-search")).json()["accepted"] == 5
        assert beta.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"}
                         ).status_code == 400
        mine, theirs, everyone = acme.get("/v1/stats"), beta.get("/v1/stats"), ops.get("/v1/stats").json()
    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["scope"] == "tenant" and mine.json()["tenant"] == "acme"
    assert mine.json()["events_acked"] - before["acme"] == 30
    assert theirs.json()["events_acked"] - before["beta"] == 5 and theirs.json()["requests_refused"] >= 1
    shared_log_figures = {"log_end_offset", "log_start_offset", "projector_position", "projector_lag",
                          "events_projected", "processors", "alerts", "tenants"}
    assert not shared_log_figures & set(mine.json()), "a tenant reads figures of the shared log"
    assert "beta" not in mine.text and "acme" not in theirs.text
    assert everyone["scope"] == "global"
    assert everyone["tenants"]["acme"]["events_acked"] == mine.json()["events_acked"]
    assert everyone["tenants"]["beta"]["events_acked"] == theirs.json()["events_acked"]
    assert everyone["events_acked"] >= mine.json()["events_acked"] + theirs.json()["events_acked"]


def test_no_stats_view_shows_an_alert_sink_secret_not_even_the_admins(daemon: InProcessDaemon) -> None:
    with client(daemon, "acme") as acme, client(daemon, "ops") as ops:
        views = [acme.get("/v1/stats").text, ops.get("/v1/stats").text]
        admin = ops.get("/v1/stats").json()
    for text in views:
        assert not [s for s in SECRETS if s in text], text
    sinks = {s["sink"]: s["name"] for s in admin["alerts"]["sinks"]}
    assert sinks == {"webhook": "https://hooks.example.com/…", "command": "notify-send …"}


@contextlib.contextmanager
def tail(c: httpx.Client) -> Iterator[httpx.Response]:
    with c.stream("GET", "/v1/stream") as response:
        # Held until the end: a dropped iterator closes the connection when collected.
        chunks = response.iter_bytes()
        if response.status_code == 200:
            next(chunks)  # the tail's first comment: it is open
        yield response
        del chunks


def test_a_tenant_at_its_live_tail_cap_gets_429_and_the_other_tenant_is_not_blocked(daemon: InProcessDaemon) -> None:
    with client(daemon, "acme") as acme, client(daemon, "beta") as beta, contextlib.ExitStack() as held:
        opened = [held.enter_context(tail(acme)) for _ in range(CAP)]
        assert [r.status_code for r in opened] == [200] * CAP
        with tail(acme) as refused:
            assert refused.status_code == 429
            refused.read()
            assert "max_streams_per_tenant" in refused.json()["detail"]
        with tail(beta) as other:
            assert other.status_code == 200, "one tenant at its cap blocked another"
        assert acme.get("/v1/stats").json()["streams_open"] == CAP

        held.close()  # the client goes away: its slots are freed

        def reopened() -> bool:
            with tail(acme) as again:
                return again.status_code == 200

        wait_until(reopened, timeout=10, interval=0.1)
        wait_until(lambda: acme.get("/v1/stats").json()["streams_open"] == 0, timeout=10, interval=0.1)
