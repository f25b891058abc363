"""Optimization jobs in a real daemon: run, budget, resume after kill -9, bad input, CLI."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import DaemonProcess, run_cli, wait_until
from optimize_kit import FINAL, example_file, post, production, wait_job, write_config

from adaptd.daemon.demo import toy


def _config(tmp_path: Path, **optimize) -> Path:
    files = {"trainset": example_file(tmp_path / "train.jsonl", "symbols", 8, seed=1),
             "devset": example_file(tmp_path / "dev.jsonl", "symbols", 12, seed=2)}
    return write_config(tmp_path / "adaptd.toml", optimize={**files, **optimize}, routing=False,
                        extra=[{"program": "harvested", "harvest_threshold": 0.5}])


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the tests that do not restart it (a start costs seconds)."""
    tmp = tmp_path_factory.mktemp("optimize-jobs")
    daemon = DaemonProcess(tmp / "data", config=_config(tmp)).start()
    yield daemon
    daemon.stop()


def test_a_job_runs_off_the_event_loop_and_reports_each_stage_as_optimizer_run_events(shared):
    daemon = shared
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        r = client.post("/v1/optimization/jobs", json={"program": "toy", "optimizer": "BootstrapFewShot"})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        final = wait_job(client, job_id)
        events = client.get(f"/v1/optimization/jobs/{job_id}").json()["events"]
        listed = client.get("/v1/optimization/jobs", params={"program": "toy"}).json()["items"]
    assert [e["status"] for e in events] == ["queued", "running", "running", "running", "succeeded"]
    assert [e["details"].get("stage") for e in events[1:]] == ["started", "baseline", "compiled", "done"]
    assert final["program_version"] == "v1" and final["score_after"] - final["score_before"] >= 0.3
    assert final["lm_calls"] > 0 and final["cost_usd"] > 0  # ToyLM reports a cost per call
    assert (daemon.data_dir / "optimize" / "programs" / "default" / "toy" / "v1.json").exists()
    assert [j["job_id"] for j in listed] == [job_id] and listed[0]["status"] == "succeeded"


def test_the_lm_call_budget_stops_a_run_with_status_budget_exhausted(shared):
    with httpx.Client(base_url=shared.url, timeout=30) as client:
        job = client.post("/v1/optimization/jobs", json={"program": "toy", "optimizer": "BootstrapFewShot",
                                                          "budget_lm_calls": 15}).json()
        final = wait_job(client, job["job_id"])
    assert final["status"] == "budget_exhausted"
    assert final["lm_calls"] == 15 and "LM-call budget of 15 reached" in final["details"]["error"]
    assert final["program_version"] is None  # nothing saved from a stopped run


def test_the_cost_budget_stops_a_run_too(shared):
    with httpx.Client(base_url=shared.url, timeout=30) as client:
        job = client.post("/v1/optimization/jobs", json={"program": "toy", "optimizer": "BootstrapFewShot",
                                                          "budget_usd": 0.0015, "budget_lm_calls": 1000}).json()
        final = wait_job(client, job["job_id"])
    assert final["status"] == "budget_exhausted" and "cost budget" in final["details"]["error"]
    assert 0.0015 <= final["cost_usd"] <= 0.0015 + 0.0001 + 1e-9  # stopped at the line, one call past at most


def test_a_job_running_when_the_daemon_is_killed_is_marked_interrupted_and_resumed_once(daemon_factory, tmp_path):
    config = _config(tmp_path)
    slow = daemon_factory(config=config, env={"ADAPTD_TOY_DELAY_S": "0.2"}).start()
    with httpx.Client(base_url=slow.url, timeout=30) as client:
        job_id = client.post("/v1/optimization/jobs", json={"program": "toy", "optimizer": "BootstrapFewShot"}
                             ).json()["job_id"]
        wait_job(client, job_id, statuses=("running",))
    slow.kill9()
    slow.env = {}  # the restarted daemon's LM is fast
    slow.start()
    with httpx.Client(base_url=slow.url, timeout=30) as client:
        # attempt 1 ends interrupted; wait for attempt 2 to end
        final = wait_job(client, job_id, statuses=tuple(s for s in FINAL if s != "interrupted"))
        events = client.get(f"/v1/optimization/jobs/{job_id}").json()["events"]
    statuses = [(e["status"], e["details"]["attempt"]) for e in events]
    assert ("interrupted", 1) in statuses
    assert statuses[statuses.index(("interrupted", 1)) + 1] == ("queued", 2)
    assert final["status"] == "succeeded" and final["details"]["attempt"] == 2
    interrupted = next(e for e in events if e["status"] == "interrupted")
    assert final["lm_calls"] >= interrupted["lm_calls"]  # attempt 1's spending stays on the budget


def test_bad_job_requests_get_a_4xx_saying_what_to_fix(shared):
    with httpx.Client(base_url=shared.url, timeout=30) as client:
        unknown = client.post("/v1/optimization/jobs", json={"program": "nope"})
        bad_opt = client.post("/v1/optimization/jobs", json={"program": "toy", "optimizer": "Magic"})
        gepa = client.post("/v1/optimization/jobs", json={"program": "toy", "optimizer": "GEPA"})
        extra = client.post("/v1/optimization/jobs", json={"program": "toy", "budget": 3})
        missing = client.get("/v1/optimization/jobs/job-nope")
        few = client.post("/v1/optimization/jobs", json={"program": "harvested"})  # nothing harvested yet
        health = client.get("/v1/health")
    assert unknown.status_code == 404 and "[[optimize]]" in unknown.json()["detail"]
    assert bad_opt.status_code == 422 and "unknown optimizer 'Magic'" in bad_opt.json()["detail"]
    assert gepa.status_code == 422 and "feedback metric" in gepa.json()["detail"]
    assert extra.status_code == 422
    assert missing.status_code == 404 and health.status_code == 200
    assert few.status_code == 422 and "capture_content=True" in few.json()["detail"]


def test_cli_auto_selects_an_optimizer_and_exports_the_harvested_trainset(shared, tmp_path):
    daemon = shared
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    questions = toy.questions("words", 12, seed=3)
    events = production(questions + questions[:4], start, 1.0, name="harvested")  # 4 repeated inputs
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        post(client, events)
        wait_until(lambda: client.get("/v1/executions", params={"program": "harvested", "limit": 100}).json()["items"]
                   .__len__() == 16, timeout=20)
        wait_until(lambda: client.get("/v1/stats").json()["projector_lag"] == 0, timeout=20)
    out = tmp_path / "toy.jsonl"
    exported = run_cli("trainset", "export", "harvested", "-o", str(out), "--url", daemon.url)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    right = {q for q in questions if toy.solve(q) == next(
        (e["outputs"]["answer"] for e in events if e.get("inputs", {}).get("question") == q), None)}
    assert sorted(line["inputs"]["question"] for line in lines) == sorted(right)  # passing, deduplicated
    assert "duplicates" in exported.stderr and exported.stdout == ""
    piped = run_cli("trainset", "export", "harvested", "-o", "-", "--url", daemon.url)
    assert piped.returncode == 0 and "duplicates" in piped.stderr
    assert piped.stdout == out.read_text()  # `-o - > file` holds the examples and nothing else
    default = run_cli("trainset", "export", "harvested", "--url", daemon.url)  # no -o: data to stdout
    assert default.returncode == 0 and default.stdout == out.read_text() and "duplicates" in default.stderr
    rec = run_cli("optimize", "harvested", "--auto-select", "--recommend-only", "--url", daemon.url)
    assert rec.returncode == 0 and "optimizer: BootstrapFewShot" in rec.stdout and "alternatives:" in rec.stdout
    ran = run_cli("optimize", "harvested", "--optimizer", "BootstrapFewShotWithRandomSearch", "--wait", "60", "--url", daemon.url)
    assert ran.returncode == 0, ran.stderr
    assert "(your choice)" in ran.stdout and "succeeded" in ran.stdout
    bad = run_cli("optimize", "nope", "--url", daemon.url)
    assert bad.returncode == 1 and "[[optimize]]" in bad.stderr  # the daemon refused (404): a runtime failure
