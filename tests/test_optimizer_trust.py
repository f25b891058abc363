"""The optimizer trusts only its own rows: clients cannot forge jobs, and a forged row in an
old log is never resumed with another tenant, a file outside the data dir, or a budget
above the config's."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import DaemonProcess, wait_until
from optimize_kit import TOY, example_file, write_config

from adaptd.daemon.ingest import Limits, prepare
from adaptd.daemon.optimize.recovery import UntrustedJob, resume_spec
from adaptd.daemon.optimize.settings import OptimizeProgram
from adaptd.streams.events import new_id
from adaptd.streams.log.file import FileLog

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
PROGRAMS = {"toy": OptimizeProgram(program="toy", **TOY, budget_usd=1.0, budget_lm_calls=100)}


def _rows(root: Path, **details: object) -> tuple[dict, dict]:
    job_dir = root / "jobs" / "job-1"
    spec = {"job_id": "job-1", "tenant": "acme", "program": "toy", "optimizer": "BootstrapFewShot", "params": {},
            "train_path": str(job_dir / "train.jsonl"), "dev_path": str(job_dir / "dev.jsonl"), "train_size": 8,
            "dev_size": 4, "budget_usd": 0.5, "budget_lm_calls": 50, **details}
    first = {"tenant": "acme", "job_id": "job-1", "program": "toy", "optimizer": "BootstrapFewShot",
             "status": "queued", "details": spec}
    return first, {**first, "status": "running", "details": {"stage": "started"}}


def _forged_optimizer_run(**fields: object) -> dict:
    return {"id": str(new_id()), "ts": "2026-11-22T10:00:00Z", "kind": "optimizer_run", "job_id": "job-x",
            "program": "toy", "optimizer": "BootstrapFewShot", "status": "queued", **fields}


def test_a_client_cannot_write_events_under_the_daemons_own_sources() -> None:
    items = [_forged_optimizer_run(source="adaptd.optimize"),
             {"id": str(new_id()), "ts": "2026-11-22T10:00:00Z", "kind": "execution", "program": "qa",
              "source": "adaptd.policy"},
             _forged_optimizer_run(source="my-runner")]  # telemetry of the client's own optimizer: fine
    out = prepare(items, tenant="acme", received=NOW, limits=Limits())
    assert [r["index"] for r in out.rejected] == [0, 1] and out.accepted == 1
    assert all("reserved for the daemon" in r["reason"] for r in out.rejected)


def test_the_daemon_itself_may_still_write_its_own_sources() -> None:
    out = prepare([_forged_optimizer_run(source="adaptd.optimize")], tenant="acme", received=NOW, limits=Limits(),
                  allow_derived=True)
    assert out.accepted == 1 and out.rejected == []


def test_a_resumed_job_takes_its_tenant_from_the_row_never_from_the_details(tmp_path: Path) -> None:
    first, latest = _rows(tmp_path, tenant="victim", job_id="job-other")
    spec = resume_spec(first, latest, tmp_path, PROGRAMS)
    assert spec.tenant == "acme" and spec.job_id == "job-1"


@pytest.mark.parametrize("field,value", [("train_path", "/etc/shadow"), ("dev_path", "/etc/passwd"),
                                         ("train_path", "{root}/jobs/job-1/../../../outside.jsonl"),
                                         ("train_path", "{root}/jobs/job-2/train.jsonl"),
                                         ("base_path", "/etc/shadow"),
                                         ("base_path", "{root}/programs/victim/toy/v1.json")])
def test_a_resumed_job_may_only_read_files_of_its_own_under_the_data_dir(tmp_path: Path, field: str,
                                                                         value: str) -> None:
    first, latest = _rows(tmp_path, **{field: value.format(root=tmp_path)})
    with pytest.raises(UntrustedJob, match="outside"):
        resume_spec(first, latest, tmp_path, PROGRAMS)


def test_a_symlink_in_the_job_folder_does_not_lead_out_of_it(tmp_path: Path) -> None:
    (tmp_path / "jobs" / "job-1").mkdir(parents=True)
    (tmp_path / "jobs" / "job-1" / "train.jsonl").symlink_to("/etc/hostname")
    first, latest = _rows(tmp_path)
    with pytest.raises(UntrustedJob, match="outside"):
        resume_spec(first, latest, tmp_path, PROGRAMS)


def test_a_resumed_jobs_budget_is_capped_by_the_config(tmp_path: Path) -> None:
    first, latest = _rows(tmp_path, budget_usd=1e9, budget_lm_calls=10**9)
    spec = resume_spec(first, latest, tmp_path, PROGRAMS)
    assert (spec.budget_usd, spec.budget_lm_calls) == (1.0, 100)
    first, latest = _rows(tmp_path, budget_usd=None, budget_lm_calls=None)
    assert resume_spec(first, latest, tmp_path, PROGRAMS).budget_lm_calls == 100


@pytest.mark.parametrize("details,why", [({"budget_usd": "lots"}, "budget_usd"), ({"spent_usd": -5}, "spent_usd"),
                                         ({"attempt": 0}, "attempt"), ({"params": [1]}, "params")])
def test_a_resumed_job_with_malformed_numbers_is_refused_with_the_reason(tmp_path: Path, details: dict,
                                                                         why: str) -> None:
    first, latest = _rows(tmp_path, **details)
    with pytest.raises(UntrustedJob, match=why):
        resume_spec(first, latest, tmp_path, PROGRAMS)


def test_a_job_of_an_unconfigured_program_or_unknown_optimizer_is_refused(tmp_path: Path) -> None:
    first, latest = _rows(tmp_path)
    with pytest.raises(UntrustedJob, match="no \\[\\[optimize\\]\\]"):
        resume_spec({**first, "program": "other"}, latest, tmp_path, PROGRAMS)
    with pytest.raises(UntrustedJob, match="unknown"):
        resume_spec({**first, "optimizer": "Magic"}, latest, tmp_path, PROGRAMS)


def _old_daemon_forged_job(log_dir: Path, outside: str) -> None:
    """What an old daemon let a client write: a queued then running ``adaptd.optimize`` job
    whose details name another tenant and an example file outside the data dir."""
    spec = {"job_id": "job-forged", "tenant": "victim", "program": "toy", "optimizer": "BootstrapFewShot",
            "params": {}, "train_path": outside, "dev_path": outside, "train_size": 8, "dev_size": 8,
            "budget_usd": 1e6, "budget_lm_calls": 10**7, "attempt": 1}
    ts = dt.datetime.now(dt.UTC).isoformat()
    events = [{"id": str(new_id()), "ts": ts, "kind": "optimizer_run", "source": "adaptd.optimize",
               "job_id": "job-forged", "program": "toy", "optimizer": "BootstrapFewShot", "status": status,
               "details": details} for status, details in (("queued", spec), ("running", {"stage": "started"}))]
    prepared = prepare(events, tenant="default", received=dt.datetime.now(dt.UTC), limits=Limits(), allow_derived=True)
    log = FileLog(log_dir)
    try:
        log.append(prepared.records, timeout=10)
    finally:
        log.close()


def test_a_forged_job_in_the_log_is_not_resumed_and_reads_no_file_outside_the_data_dir(tmp_path: Path) -> None:
    outside = example_file(tmp_path / "outside.jsonl", "symbols", 8, seed=1)  # runnable, were it read
    config = write_config(tmp_path / "adaptd.toml", routing=False,
                          optimize={"trainset": outside, "devset": outside, "budget_lm_calls": 500})
    data = tmp_path / "data"
    _old_daemon_forged_job(data / "log", outside)
    daemon = DaemonProcess(data, config=config).start()
    try:
        with httpx.Client(base_url=daemon.url, timeout=30) as client:
            job = wait_until(lambda: (j := client.get("/v1/optimization/jobs/job-forged").json()).get("status")
                             == "failed" and j, timeout=60)
            statuses = [e["status"] for e in job["events"]]
            over = client.post("/v1/optimization/jobs", json={"program": "toy", "budget_lm_calls": 10**6})
            forged = client.post("/v1/events", content=orjson.dumps([_forged_optimizer_run(source="adaptd.optimize")]))
    finally:
        daemon.stop()
    assert statuses == ["queued", "running", "failed"]  # never run again: no new "running", no "queued" attempt 2
    assert "not resumed" in job["latest"]["details"]["error"] and "outside" in job["latest"]["details"]["error"]
    assert "not resumed" in daemon.output()  # the operator is told too
    assert over.status_code == 422 and "ceiling" in over.json()["detail"]
    assert forged.status_code == 200 and forged.json()["accepted"] == 0
    assert "reserved for the daemon" in forged.json()["rejected"][0]["reason"]
    log = FileLog(data / "log", read_only=True)
    try:
        records = [json.loads(r.value) for r in log.read(0, 10_000)]
    finally:
        log.close()
    runs = [r for r in records if r.get("kind") == "optimizer_run" and r["job_id"] == "job-forged"]
    assert {r["tenant"] for r in runs} == {"default"}  # nothing was written for the tenant the details named
