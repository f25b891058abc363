"""Admin endpoints in a real daemon: revert appends the inverse action, acknowledging a
signal is a logged event that survives a restart, non-admins are refused with a reason,
and the optimizer runs and all routing tables are readable."""

from __future__ import annotations

import datetime as dt

import httpx
import orjson
import pytest
from conftest import DaemonProcess, wait_until
from dash_workload import CONFIG as ROUTING
from dash_workload import TOKENS

from adaptd.streams.events import new_id

ADMIN, VIEWER = "t-admin", "t-viewer"
CONFIG = TOKENS + ROUTING


def failing_calls(start: dt.datetime, seconds: int) -> list[dict]:
    """10 LM calls per second on each route of ``qa``; every call on ``primary`` fails."""
    return [{"id": str(new_id()), "kind": "lm_call", "program": "qa", "route": route, "model": "m",
             "ts": (start + dt.timedelta(seconds=i / 10)).isoformat(), "duration_ms": 100.0,
             "status": "error" if route == "primary" else "ok"}
            for i in range(seconds * 10) for route in ("primary", "backup")]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One daemon for the module (tenants ``ops``: admin, ``guest``: not), ended after it."""
    root = tmp_path_factory.mktemp("admin")
    (root / "adaptd.toml").write_text(CONFIG)
    process = DaemonProcess(root / "data", config=root / "adaptd.toml", env={"ADAPTD_TEST_TOKEN": ADMIN}).start()
    try:
        yield process
    finally:
        process.stop()


def timeline(client: httpx.Client, **params) -> list[dict]:
    return client.get("/v1/adaptations", params={"details": "true", **params}).json()["items"]


def test_revert_appends_the_inverse_action_once_and_explains_what_cannot_be_reverted(daemon) -> None:
    with httpx.Client(base_url=daemon.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        pin = client.post("/v1/routing/qa/pin", json={"route": "backup", "reason": "maintenance"}).json()["id"]
        wait_until(lambda: any(a["id"] == pin for a in timeline(client)), timeout=30)

        reverted = client.post(f"/v1/adaptations/{pin}/revert", json={"reason": "done"})
        assert reverted.status_code == 202, reverted.text
        assert reverted.json()["action"] == "unpin" and reverted.json()["reverts"] == pin

        def pin_marked_reverted() -> dict | None:
            rows = {a["id"]: a for a in timeline(client, program="qa")}
            return rows if rows.get(pin, {}).get("reverted_by") == reverted.json()["id"] else None

        rows = wait_until(pin_marked_reverted, timeout=30)
        undo = rows[reverted.json()["id"]]
        assert undo["action"] == "unpin" and undo["caused_by"] == [pin] and undo["details"]["reverts"] == pin
        assert "revert of pin backup" in undo["reason"] and undo["reason"].endswith(": done")

        again = client.post(f"/v1/adaptations/{pin}/revert")
        assert again.status_code == 409 and "already reverted" in again.json()["detail"]

        table = next(a for a in timeline(client, action="routing_table"))
        refused = client.post(f"/v1/adaptations/{table['id']}/revert")
        assert refused.status_code == 422 and "computed by the policy" in refused.json()["detail"]

        canary = client.post("/v1/routing/qa/canary", json={"route": "primary", "share": 0.2}).json()["id"]
        wait_until(lambda: any(a["id"] == canary for a in timeline(client)), timeout=30)
        rollback = client.post(f"/v1/adaptations/{canary}/revert").json()
        assert (rollback["action"], rollback["route"]) == ("rollback", "primary")
        wait_until(lambda: any(a["id"] == rollback["id"] for a in timeline(client)), timeout=30)
        restored = client.post(f"/v1/adaptations/{rollback['id']}/revert").json()
        assert (restored["action"], restored["route"]) == ("canary", "primary")
        wait_until(lambda: any(a["id"] == restored["id"] and a["details"]["share"] == 0.2 for a in timeline(client)),
                   timeout=30)

        assert client.post(f"/v1/adaptations/{new_id()}/revert").status_code == 404
        bad = client.post("/v1/adaptations/not-a-uuid/revert")
        assert bad.status_code == 422 and "not a UUID" in bad.json()["detail"]
        only_pins = timeline(client, action=["pin", "unpin"])
        assert [a["action"] for a in only_pins] == ["unpin", "pin"]


def test_acknowledged_signal_is_a_logged_event_that_survives_a_restart(daemon) -> None:
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=daemon.url, timeout=30, headers=auth) as client:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        assert client.post("/v1/events", content=orjson.dumps(failing_calls(start, 30))).status_code == 200
        signal = wait_until(lambda: client.get("/v1/signals", params={"signal_type": "breaker"}).json()["items"],
                            timeout=60)[0]

        viewer = client.post(f"/v1/signals/{signal['id']}/ack", headers={"Authorization": f"Bearer {VIEWER}"})
        assert viewer.status_code == 403 and "not an admin" in viewer.json()["detail"]

        acked = client.post(f"/v1/signals/{signal['id']}/ack", json={"reason": "on it"})
        assert acked.status_code == 202, acked.text
        ack_id = acked.json()["id"]
        wait_until(lambda: any(a["id"] == ack_id for a in timeline(client, action="signal_ack")), timeout=30)
        twice = client.post(f"/v1/signals/{signal['id']}/ack")
        assert twice.status_code == 409 and ack_id in twice.json()["detail"]
        no_undo = client.post(f"/v1/adaptations/{ack_id}/revert")
        assert no_undo.status_code == 422 and "acknowledgement" in no_undo.json()["detail"]
        assert client.post(f"/v1/signals/{new_id()}/ack").status_code == 404
    assert daemon.stop() == 0

    daemon.start()
    with httpx.Client(base_url=daemon.url, timeout=30, headers=auth) as client:
        ack = wait_until(lambda: timeline(client, action="signal_ack"), timeout=30)[0]
        assert ack["id"] == ack_id and ack["caused_by"] == [signal["id"]]
        assert ack["details"] == {"signal_id": signal["id"], "incident_id": signal["incident_id"],
                                  "signal_type": "breaker"}
        assert ack["reason"] == "acknowledged breaker signal: on it"


def test_routing_tables_and_optimizer_runs_are_readable_and_tenant_scoped(daemon) -> None:
    with httpx.Client(base_url=daemon.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        tables = client.get("/v1/routing").json()["items"]
        assert [(t["program"], [r["name"] for r in t["routes"]]) for t in tables] == [("qa", ["primary", "backup"])]
        runs = [{"id": str(new_id()), "kind": "optimizer_run", "ts": f"2026-11-22T08:0{i}:00+00:00",
                 "job_id": "job-1", "program": "qa", "optimizer": "MIPROv2", "status": status,
                 "score_before": 0.6, "score_after": after, "cost_usd": cost}
                for i, (status, after, cost) in enumerate([("running", None, 0.1), ("succeeded", 0.8, 1.5)])]
        assert client.post("/v1/events", content=orjson.dumps(runs)).json()["accepted"] == 2
        got = wait_until(lambda: client.get("/v1/optimizer/runs", params={"job_id": "job-1"}).json()["items"],
                         timeout=30)
        wait_until(lambda: len(client.get("/v1/optimizer/runs").json()["items"]) == 2, timeout=30)
        got = client.get("/v1/optimizer/runs").json()["items"]
        assert [(r["status"], r["score_after"], r["cost_usd"]) for r in got] == [("succeeded", 0.8, 1.5),
                                                                                ("running", None, 0.1)]
        guest = client.get("/v1/optimizer/runs", headers={"Authorization": f"Bearer {VIEWER}"}).json()["items"]
        assert guest == []
