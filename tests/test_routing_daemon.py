"""Routing in a real daemon: configured programs get a table at once, outcomes and admin
actions (through the log) change it, breaker states are readable, and replay agrees."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import orjson
from conftest import run_cli, wait_until

from adaptd.daemon.readmodel.replay import tables_equal
from adaptd.streams.events import new_id

CONFIG = """
[[routing]]
program = "qa"
[[routing.routes]]
name = "primary"
model = "openai/gpt-4o-mini"
[[routing.routes]]
name = "backup"
model = "openai/gpt-4.1-nano"
"""


def _calls(start: dt.datetime, seconds: int, failing: str) -> list[dict]:
    """10 LM calls per second on each route; every call on ``failing`` errors."""
    out = []
    for i in range(seconds * 10):
        for route in ("primary", "backup"):
            out.append({"id": str(new_id()), "kind": "lm_call", "program": "qa", "route": route,
                        "model": "m", "ts": (start + dt.timedelta(seconds=i / 10)).isoformat(),
                        "status": "error" if route == failing else "ok", "duration_ms": 120.0,
                        "error_type": "APIError" if route == failing else None})  # fmt: skip
    return out


def test_routing_tables_follow_outcomes_and_admin_actions_and_replay_equal(daemon_factory, tmp_path: Path) -> None:
    config = tmp_path / "adaptd.toml"
    config.write_text(CONFIG)
    daemon = daemon_factory("routing", config=config).start()
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        first = client.get("/v1/routing/qa")
        assert first.status_code == 200 and first.headers["etag"] == '"0"'
        assert {r["name"]: r["weight"] for r in first.json()["routes"]} == {"primary": 0.5, "backup": 0.5}
        assert client.get("/v1/routing/qa", headers={"If-None-Match": '"0"'}, params={"wait": 0.3}).status_code == 304
        missing = client.get("/v1/routing/nope")
        assert missing.status_code == 404 and "no [[routing]] configuration" in missing.json()["detail"]
        bad = client.post("/v1/routing/qa/pin", json={"route": "nope"})
        assert bad.status_code == 422 and "primary, backup" in bad.json()["detail"]

        start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        answer = client.post("/v1/events", content=orjson.dumps(_calls(start, 60, failing="primary")))
        assert answer.status_code == 200 and not answer.json()["rejected"]

        def moved_off_primary() -> dict | None:
            table = client.get("/v1/routing/qa").json()
            weights = {r["name"]: r["weight"] for r in table["routes"]}
            return table if table["version"] > 0 and weights["primary"] <= 0.1 else None

        table = wait_until(moved_off_primary, timeout=60)
        assert table["caused_by"] and table["reason"]
        breakers = {b["route"]: b["state"] for b in client.get("/v1/routing/qa/breakers").json()["items"]}
        assert breakers == {"primary": "open", "backup": "closed"}

        pinned = client.post("/v1/routing/qa/pin", json={"route": "backup", "reason": "maintenance"})
        assert pinned.status_code == 202

        def pinned_table() -> dict | None:
            t = client.get("/v1/routing/qa").json()
            return t if any(r["pinned"] and r["name"] == "backup" for r in t["routes"]) else None

        assert pinned.json()["id"] in wait_until(pinned_table, timeout=60)["caused_by"]

    assert daemon.stop() == 0
    copy = tmp_path / "replayed.duckdb"
    replayed = run_cli("replay", "--data-dir", str(daemon.data_dir), "--into", str(copy), "--config", str(config))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert tables_equal(daemon.data_dir / "adaptd.duckdb", copy) == []


def test_adaptive_lm_moves_off_a_failing_route_through_the_daemon(daemon_factory, tmp_path: Path) -> None:
    """A real DSPy program on AdaptiveLM: every call succeeds (fallback), its lm_call
    events carry the route, the daemon's breaker opens on the failing route, and the
    client picks up the new table and stops choosing that route."""
    import dspy

    from adaptd.adapters import AdaptdCallback, AdaptiveLM, Client

    config = tmp_path / "adaptd.toml"
    config.write_text(CONFIG)
    daemon = daemon_factory("adaptive", config=config).start()
    client = Client(daemon.url, spill_dir=tmp_path / "spill", schedule_delay_ms=10)
    ok = "[[ ## answer ## ]]\n4\n\n[[ ## completed ## ]]"
    lm = AdaptiveLM("qa", {
        "primary": dspy.LM("openai/gpt-4o-mini", mock_response=RuntimeError("503 from provider"), cache=False,
                           num_retries=0),
        "backup": dspy.LM("openai/gpt-4.1-nano", mock_response=ok, cache=False),
    }, client=client, poll_wait_s=1.0, poll_min_interval_s=0.1, backoff_base_s=0.0, cooldown_s=0.2)  # fmt: skip
    predict = dspy.Predict("question -> answer")
    try:
        with dspy.context(lm=lm, callbacks=[AdaptdCallback(program="qa", client=client)]):
            for _ in range(40):
                assert predict(question="2+2?").answer == "4"

            def refreshed() -> bool:
                predict(question="2+2?")  # keep outcomes flowing while the daemon reacts
                client.flush(5)
                table = lm.table
                return table.version > 0 and table.by_name["primary"].weight <= 0.1

            wait_until(refreshed, timeout=60, interval=0.1)
            picks = [lm.choose()[0] for _ in range(500)]
    finally:
        lm.close()
        client.shutdown(5)
    assert picks.count("primary") <= 60, picks.count("primary")
