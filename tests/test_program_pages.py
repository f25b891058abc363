"""``GET /v1/programs`` answers in pages: a tenant with a flood of program names gets
bounded answers and can still read every program, and never sees another tenant's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import httpx

from adaptd.daemon.config import Settings, Tenant
from adaptd.daemon.testing import InProcessDaemon, wait_until
from adaptd.streams.events import new_id

FLOOD, OTHER = "tok-pages-flood-7e1d", "tok-pages-other-91c4"


def _execution(program: str) -> dict:
    return {"id": str(new_id()), "ts": dt.datetime.now(dt.UTC).isoformat(), "kind": "execution",
            "program": program, "duration_ms": 5.0}


def test_a_flood_of_program_names_is_read_in_bounded_pages_holding_every_name_once(
    tmp_path: Path, inprocess_daemon: Callable[..., InProcessDaemon]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", log_level="warning", tenants=[
        Tenant(name="flood", tokens=[FLOOD]), Tenant(name="other", tokens=[OTHER])])
    daemon = inprocess_daemon(settings)
    names = [f"p-{i:04d}" for i in range(2_500)]
    with httpx.Client(base_url=daemon.url, headers={"Authorization": f"Bearer {FLOOD}"}, timeout=30) as c, \
            httpx.Client(base_url=daemon.url, headers={"Authorization": f"Bearer {OTHER}"}, timeout=30) as o:
        assert o.post("/v1/events", json=[_execution("their-own")]).status_code == 200
        for start in range(0, len(names), 1_000):
            answer = c.post("/v1/events", json=[_execution(n) for n in names[start:start + 1_000]])
            assert answer.status_code == 200 and answer.json()["accepted"] == len(names[start:start + 1_000])
        wait_until(lambda: daemon.runtime.projector.lag() == 0, timeout=30)

        seen: list[str] = []
        cursor = None
        for _ in range(10):  # 3 pages expected; bounded in case the cursor never ends
            params = {"limit": 1000} if cursor is None else {"limit": 1000, "cursor": cursor}
            page = c.get("/v1/programs", params=params).json()
            assert len(page["items"]) <= 1000
            seen += [p["program"] for p in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        theirs = o.get("/v1/programs").json()
        too_big = c.get("/v1/programs", params={"limit": 1001})

    assert seen == names  # every name once, in order, none of the other tenant's
    assert [p["program"] for p in theirs["items"]] == ["their-own"] and theirs["next_cursor"] is None
    assert too_big.status_code == 422
