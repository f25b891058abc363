"""kill -9 a real daemon at seeded random moments under load, ``--kills`` times; after each
restart, every acknowledged event must be in DuckDB exactly once (invariant 1).

Loader threads post batches of ``--batch`` executions at ``--rate`` events/s each (``tests/test_durability``'s
batches); a batch whose answer was lost to a kill is re-sent with the same ids, as the SDK
does, so the daemon must dedupe it.  Each kill starts an epoch: batches made after it name
program ``durable-<epoch>``.  After restart ``k`` the loaders finish the batch they had in
flight (epoch ``k - 1`` is then closed), the projector catches up, and the ids of program
``durable-<k-1>`` read back through ``/v1/executions`` must equal the ids acknowledged in
that epoch: none missing (lost), none twice (duplicated).  At the end a graceful stop and
one query over the DuckDB file check every acknowledged id of the whole run.

Prints the kills, wall time, acknowledged events, lost and duplicates; exits 1 unless both
are 0.

    .venv/bin/python bench/kill9_bench.py --kills 100
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_durability import _arrow_ids, _batch  # noqa: E402  (the suite's batches and id table)

from adaptd.daemon.testing import DaemonProcess  # noqa: E402


class Loader(threading.Thread):
    """Posts batches until stopped; records each acknowledged batch's ids under its epoch."""

    def __init__(self, url: str, batch: int, clock: EpochClock, deadline: float, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.batch, self.clock, self.deadline = url, batch, clock, deadline
        self.interval = batch / rate if rate > 0 else 0.0  # seconds per batch at ``rate`` events/s
        self.stopping = threading.Event()
        self.acked: dict[int, list[str]] = defaultdict(list)
        self.in_flight: int | None = None  # the epoch of the batch being sent (-1: choosing), None between
        self.retries = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            next_at = time.monotonic()
            while not self.stopping.is_set():
                # paced: unbounded load would only grow the projector's backlog between kills
                next_at = max(next_at + self.interval, time.monotonic() - 1.0)
                self.stopping.wait(max(0.0, next_at - time.monotonic()))
                self.in_flight = -1  # choosing: the epoch read next may be the one being closed
                epoch = self.clock.epoch
                self.in_flight = epoch
                events = _batch(self.batch)
                for e in events:
                    e["program"] = f"durable-{epoch}"
                while True:  # until acknowledged: the same ids every try
                    if time.monotonic() > self.deadline:
                        self.errors.append("loader ran out of time")
                        return
                    try:
                        answer = client.post(f"{self.url}/v1/events", json=events)
                    except httpx.TransportError:
                        self.retries += 1
                        time.sleep(0.02)
                        continue
                    if answer.status_code == 200:
                        body = answer.json()
                        if body["accepted"] != len(events) or body["rejected"]:
                            self.errors.append(f"batch of {len(events)} answered {body}")
                        self.acked[epoch].extend(e["id"] for e in events)
                        break
                    self.retries += 1
                    time.sleep(0.02)  # 503 while shutting down or starting: retry
                self.in_flight = None


class EpochClock:
    """The current epoch (the number of kills so far), read by every loader."""

    def __init__(self) -> None:
        self.epoch = 0


def stored_ids(client: httpx.Client, program: str) -> list[str]:
    """Every execution id of ``program`` in the read model, page by page (duplicates kept)."""
    ids: list[str] = []
    cursor = None
    for _ in range(10_000):  # bounded: 10M rows
        params: dict[str, object] = {"program": program, "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/executions", params=params).raise_for_status().json()
        ids.extend(str(row["id"]) for row in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return ids
    raise RuntimeError(f"more than 10M rows for {program}")


def projected_past(client: httpx.Client, offset: int) -> bool:
    """The projector has applied every log record before ``offset`` (load goes on, so the
    lag itself may never be 0 at the moment it is read)."""
    return client.get("/v1/stats").json()["projector_position"] >= offset


def wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--batch", type=int, default=200, help="events per POST")
    parser.add_argument("--rate", type=float, default=1500, help="events/s per loader (0: as fast as it can)")
    parser.add_argument("--loaders", type=int, default=2, help="concurrent posting threads")
    parser.add_argument("--min-s", type=float, default=0.2, help="shortest run between kills")
    parser.add_argument("--max-s", type=float, default=2.0, help="longest run between kills")
    parser.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    started = time.monotonic()
    deadline = started + args.timeout
    lost_total = dup_total = 0
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="adaptd-kill9-") as tmp:
        daemon = DaemonProcess(Path(tmp) / "data", cwd=REPO, env={"ADAPTD_LOG_LEVEL": "warning"}).start(timeout=60)
        try:
            clock = EpochClock()
            loaders = [Loader(daemon.url, args.batch, clock, deadline, args.rate) for _ in range(args.loaders)]
            for loader in loaders:
                loader.start()
            with httpx.Client(base_url=daemon.url, timeout=30) as client:
                for kill in range(1, args.kills + 1):
                    time.sleep(rng.uniform(args.min_s, args.max_s))  # a seeded random moment under load
                    daemon.kill9()
                    clock.epoch = kill  # batches made from now on belong to the next epoch
                    daemon.start(timeout=60)
                    closed = kill - 1
                    wait(lambda: all(ld.in_flight is None or ld.in_flight > closed for ld in loaders), 120, f"epoch {closed}'s last batches")
                    # every batch of the closed epoch is acknowledged, so durable below today's end
                    end = client.get("/v1/stats").json()["log_end_offset"]
                    wait(lambda: projected_past(client, end), 120, f"the projector to reach offset {end}")
                    acked = [i for ld in loaders for i in ld.acked[closed]]
                    stored = Counter(stored_ids(client, f"durable-{closed}"))
                    lost = len(set(acked) - set(stored))
                    dupes = sum(n - 1 for n in stored.values() if n > 1)
                    lost_total += lost
                    dup_total += dupes
                    if lost or dupes:
                        problems.append(f"kill {kill}: epoch {closed} acked {len(acked)}, lost {lost}, duplicated {dupes}")
                    if kill % 10 == 0 or lost or dupes:
                        print(f"kill {kill}: epoch {closed}: {len(acked)} acked, {lost} lost, {dupes} duplicated;"
                              f" {time.monotonic() - started:.0f} s", flush=True)
            for loader in loaders:
                loader.stopping.set()
            for loader in loaders:
                loader.join(timeout=60)
            code = daemon.stop()
        except BaseException:  # a timeout or ^C: never leave the daemon running
            daemon.stop()
            raise
        # The whole run, straight from the DuckDB file (the daemon is stopped: one process at a time).
        every = [i for ld in loaders for ids in ld.acked.values() for i in ids]
        with duckdb.connect(str(daemon.data_dir / "adaptd.duckdb"), read_only=True) as db:
            db.register("acked_ids", _arrow_ids(every))
            missing = db.execute(
                "SELECT count(*) FROM acked_ids a ANTI JOIN executions e ON e.id = a.id::UUID").fetchone()[0]
            dupes = db.execute("SELECT count(*) FROM (SELECT id FROM executions GROUP BY id HAVING count(*) > 1)"
                               ).fetchone()[0]
            rows = db.execute("SELECT count(*) FROM executions").fetchone()[0]
    elapsed = time.monotonic() - started
    errors = [e for ld in loaders for e in ld.errors]
    print(f"\n{dt.date.today()} {platform.node()}: {os.cpu_count()} cores, python {platform.python_version()},"
          f" seed {args.seed}")
    print(f"kills {args.kills} in {elapsed:.0f} s wall; acked events {len(every)} ({len(set(every))} distinct),"
          f" retried posts {sum(ld.retries for ld in loaders)}; graceful stop exit {code}")
    print(f"after each restart: lost {lost_total}, duplicated {dup_total}")
    print(f"final DuckDB check: {rows} execution rows, missing {missing}, duplicated ids {dupes}")
    for line in problems + errors:
        print("  " + line)
    ok = not (lost_total or dup_total or missing or dupes or errors or code != 0 or len(set(every)) != len(every))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
