"""Replay benchmark: rebuild the DuckDB read model from a file log of N events.

Writes N realistic events (execution / lm_call / feedback, as ingest writes them: only
present fields plus the non-None defaults) into a FileLog once (reused by later runs with
the same N and seed), then, per run:

- ``replay``: ``adaptd.daemon.readmodel.replay.replay`` into a fresh database;
- ``log read only``: the whole log read in batches (``read_batch`` when the code has it,
  else ``read``: records as Python objects);
- ``project only``: the batches already in memory projected into a fresh database
  (``Store.project_batch``, else ``Store.project``);
- ``live projector loop``: read a batch, project it, with the live projector's settings
  (batches of 5,000, a store that is not ``bulk``), over the first 100,000 events;
- ``duckdb reference`` (the machine limit): DuckDB itself loading the same events from
  NDJSON (``read_json``, one file per batch, written once) into the same migrated tables
  with the same primary keys, the same rows (``log_offset`` included) and the same bulk
  setting, one transaction per batch; and, to split parse from insert, the same rows
  inserted from typed Arrow tables made beforehand ("insert only").

With ``--baseline DIR`` (a directory holding an ``adaptd`` package of other code, e.g.
the last commit unpacked with ``git archive``), every run also measures that code the
same way, in a subprocess, interleaved with the current code: before/after in one run.

Usage: python bench/replay_bench.py [--events 1000000] [--runs 3] [--batch 100000]
                                    [--random-ids] [--dir bench/out/replay] [--baseline DIR]
Prints a line per run and measurement, the medians, the ratios to the DuckDB reference
(and to the baseline), and one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
if os.environ.get("REPLAY_BENCH_SRC"):  # measuring other code (see --baseline): it comes first
    sys.path.insert(0, os.environ["REPLAY_BENCH_SRC"])
else:
    sys.path.insert(0, str(REPO))

from adaptd.daemon.readmodel.migrations import EVENT_TABLES, migrate  # noqa: E402
from adaptd.daemon.readmodel.replay import replay  # noqa: E402
from adaptd.daemon.readmodel.store import Store  # noqa: E402
from adaptd.streams.events import DEFAULTS, new_id  # noqa: E402
from adaptd.streams.log.file import FileLog  # noqa: E402

#: Batch size and extent of the "live projector" measurement.
LIVE_BATCH = 5000
LIVE_EVENTS = 100_000
_V7_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_V7_SET = (0x7 << 76) | (0x2 << 62)


def make_events(n: int, seed: int, random_ids: bool) -> list[bytes]:
    """``n`` log records: 40% executions, 45% LM calls, 15% feedback, ~400 bytes each."""
    rnd = random.Random(seed)
    programs = [f"prog_{i}" for i in range(20)]
    models = ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku", "together/llama-3.1-8b"]
    t0 = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    dumps, out, parent = orjson.dumps, [], new_id()
    for i in range(n):
        # Random ids (version 7 layout, unordered) model many clients with skewed clocks.
        eid = uuid.UUID(int=(rnd.getrandbits(128) & _V7_CLEAR) | _V7_SET) if random_ids else new_id()
        ts = t0 + dt.timedelta(microseconds=i * 3_000)
        roll = rnd.random()
        if roll < 0.40:
            parent, tokens = eid, rnd.randrange(50, 2000)
            ev = {"id": eid, "ts": ts, "kind": "execution", "tenant": "acme", "source": "sdk",
                  "program": rnd.choice(programs), "module": "answer", "module_type": "ChainOfThought",
                  "route": f"r{rnd.randrange(4)}", "model": rnd.choice(models), "duration_ms": rnd.expovariate(1 / 300),
                  "tokens_in": tokens, "tokens_out": rnd.randrange(5, 500), "cost_usd": tokens * 1e-6,
                  "inputs": {"question": {"type": "str", "len": rnd.randrange(10, 900)}},
                  "outputs": {"answer": {"type": "str", "len": rnd.randrange(1, 300)}}}
            if rnd.random() < 0.03:
                ev.update(status="error", error_type="TimeoutError", error_message="request timed out")
        elif roll < 0.85:
            ev = {"id": eid, "ts": ts, "kind": "lm_call", "tenant": "acme", "source": "sdk", "execution_id": parent,
                  "program": rnd.choice(programs), "route": f"r{rnd.randrange(4)}", "model": rnd.choice(models),
                  "provider": "openai", "duration_ms": rnd.expovariate(1 / 200), "tokens_in": rnd.randrange(50, 2000),
                  "tokens_out": rnd.randrange(5, 500), "cost_usd": 0.0004, "cache_hit": rnd.random() < 0.2}
        else:
            ev = {"id": eid, "ts": ts, "kind": "feedback", "tenant": "acme", "source": "sdk", "execution_id": parent,
                  "program": rnd.choice(programs), "metric": "exact_match", "score": rnd.random()}
        out.append(dumps({**DEFAULTS[ev["kind"]], **ev}))
    return out


def build_log(path: Path, n: int, seed: int, random_ids: bool) -> None:
    """Fill a FileLog at ``path`` with ``n`` events, unless one with exactly ``n`` is there."""
    if path.exists():
        with FileLog(path) as log:
            if log.end_offset() == n:
                return
        shutil.rmtree(path)
    started = time.perf_counter()
    values = make_events(n, seed, random_ids)
    with FileLog(path) as log:
        for i in range(0, n, 10_000):
            log.append(values[i:i + 10_000])
    print(f"built log of {n} events ({sum(map(len, values)) / n:.0f} B each) in {time.perf_counter() - started:.1f}s")


def read_all(log: FileLog, batch: int) -> list:
    """Every record of ``log`` in batches: RecordBatches if the code has them, else Records."""
    out, offset = [], log.start_offset()
    if hasattr(log, "read_batch"):
        while len(chunk := log.read_batch(offset, batch)):
            out.append(chunk)
            offset = chunk.offsets[-1] + 1
    else:
        while chunk := log.read(offset, batch):
            out.append(chunk)
            offset = chunk[-1].offset + 1
    return out


def fresh(db: Path) -> Path:
    for p in (db, db.with_name(db.name + ".wal")):
        p.unlink(missing_ok=True)
    return db


def write_ndjson(log: FileLog, directory: Path, batch: int) -> list[Path]:
    """The log's events as NDJSON, one file per batch, each line with its ``log_offset``
    (so the reference stores the very rows the projector stores). Written once."""
    done = directory / "DONE"
    if done.exists():
        return sorted(directory.glob("*.ndjson"))
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    offset, files = 0, []
    while records := log.read(offset, batch):
        path = directory / f"{offset:012d}.ndjson"
        path.write_bytes(b"".join(r.value[:-1] + b',"log_offset":%d}\n' % r.offset for r in records))
        files.append(path)
        offset = records[-1].offset + 1
    done.touch()
    return files


def duckdb_reference(files: list[Path], db: Path) -> tuple[float, float]:
    """Seconds DuckDB takes to load ``files`` into the migrated tables of a fresh ``db``:
    from the NDJSON (parse included), and from typed Arrow rows made beforehand (the
    insert alone: what is left once JSON parsing costs nothing)."""
    import duckdb

    con = duckdb.connect(str(fresh(db)))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET wal_autocheckpoint = '1GB'")  # as Store(bulk=True)
    con.execute("SET arrow_lossless_conversion = true")  # UUID and JSON columns stay typed
    migrate(con)
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, dtype in con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
    ).fetchall():
        columns.setdefault(table, []).append((column, dtype))
    kinds = ("execution", "lm_call", "feedback")
    union = {"kind": "VARCHAR"}
    for kind in kinds:
        union.update(columns[EVENT_TABLES[kind]])
    spec = "{" + ", ".join(f"'{c}': '{d}'" for c, d in union.items()) + "}"
    names = {kind: ", ".join(f'"{c}"' for c, _ in columns[EVENT_TABLES[kind]]) for kind in kinds}

    def select(path: Path, kind: str) -> str:
        return (f"SELECT {names[kind]} FROM read_json('{path}', format = 'newline_delimited', columns = {spec})"
                f" WHERE kind = '{kind}'")

    started = time.perf_counter()
    for path in files:
        con.execute("BEGIN TRANSACTION")
        for kind in kinds:
            con.execute(f"INSERT INTO {EVENT_TABLES[kind]} ({names[kind]}) {select(path, kind)}")
        con.execute("COMMIT")
    con.execute("CHECKPOINT")  # as Store.close()
    from_ndjson = time.perf_counter() - started
    con.close()

    con = duckdb.connect(str(fresh(db)))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET wal_autocheckpoint = '1GB'")
    con.execute("SET arrow_lossless_conversion = true")
    migrate(con)
    typed = [{kind: con.sql(select(path, kind)).to_arrow_table() for kind in kinds} for path in files]
    started = time.perf_counter()
    for tables in typed:
        con.execute("BEGIN TRANSACTION")
        for kind, rows in tables.items():
            con.register("_rows", rows)
            con.execute(f"INSERT INTO {EVENT_TABLES[kind]} ({names[kind]}) SELECT * FROM _rows")
        con.execute("COMMIT")
    con.execute("CHECKPOINT")
    from_arrow = time.perf_counter() - started
    con.close()
    return from_ndjson, from_arrow


def measure(log_dir: Path, out: Path, events: int, batch: int) -> dict:
    """One run of the code importable here: replay, log read only, project only."""
    with FileLog(log_dir, read_only=True) as log:
        stats = replay(log, fresh(out / "replayed.duckdb"), batch=batch, overwrite=True)
        started = time.perf_counter()
        batches = read_all(log, batch)
        read_rate = events / (time.perf_counter() - started)
    started = time.perf_counter()
    with Store(fresh(out / "project-only.duckdb"), bulk=True) as store:
        project = getattr(store, "project_batch", store.project)
        for records in batches:
            project(records)
    project_rate = events / (time.perf_counter() - started)
    return {"replay": stats.events_per_s, "log_read": read_rate, "project": project_rate,
            "live": live_rate(log_dir, out, min(events, LIVE_EVENTS)), "rows": stats.inserted,
            "peak_rss_mb": peak_rss_mb()}


def live_rate(log_dir: Path, out: Path, events: int) -> float:
    """Events/s of the live projector's loop (read a batch, project it) with its settings:
    a store that is not ``bulk`` and batches of LIVE_BATCH, over the log's first ``events``."""
    store = Store(fresh(out / "live.duckdb"))
    with FileLog(log_dir, read_only=True) as log:
        started, offset = time.perf_counter(), 0
        while offset < events:
            if hasattr(log, "read_batch"):
                batch = log.read_batch(offset, min(LIVE_BATCH, events - offset))
                store.project_batch(batch)
            else:
                batch = log.read(offset, min(LIVE_BATCH, events - offset))
                store.project(batch)
            offset += len(batch)
        seconds = time.perf_counter() - started
    store.close()
    return events / seconds


def peak_rss_mb() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across fork/exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def in_subprocess(args: argparse.Namespace, log_dir: Path, src: Path | None, tag: str) -> dict:
    """``measure`` in a fresh interpreter (of ``src``'s code when given)."""
    env = {**os.environ, "REPLAY_BENCH_SRC": str(src)} if src else {k: v for k, v in os.environ.items()
                                                                     if k != "REPLAY_BENCH_SRC"}
    out = args.dir / tag
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, __file__, "--measure", str(log_dir), "--dir", str(out),
                           "--events", str(args.events), "--batch", str(args.batch)],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{tag} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--random-ids", action="store_true", help="random (not time-ordered) UUIDv7 ids")
    parser.add_argument("--dir", type=Path, default=REPO / "bench" / "out" / "replay")
    parser.add_argument("--baseline", type=Path, help="directory holding an adaptd package to compare with")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: one measurement
    parser.add_argument("--reference", type=Path, help=argparse.SUPPRESS)  # internal: the DuckDB reference
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.measure:
        print(json.dumps(measure(args.measure, args.dir, args.events, args.batch)))
        return
    if args.reference:
        files = sorted(args.reference.glob("*.ndjson"))
        print(json.dumps(duckdb_reference(files, args.dir / "reference.duckdb")))
        return
    name = f"{args.events}-{args.seed}{'-random' if args.random_ids else ''}"
    log_dir = args.dir / f"log-{name}"
    build_log(log_dir, args.events, args.seed, args.random_ids)
    with FileLog(log_dir, read_only=True) as log:
        files = write_ndjson(log, args.dir / f"ndjson-{name}-{args.batch}", args.batch)

    codes = {"current": None, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    rates: dict[str, dict[str, list[float]]] = {c: {"replay": [], "log_read": [], "project": [], "live": []}
                                                for c in codes}
    reference: list[float] = []
    insert_only: list[float] = []
    last: dict[str, dict] = {}
    for run in range(args.runs):
        # In a subprocess too, so DuckDB's memory there never inflates this process.
        proc = subprocess.run([sys.executable, __file__, "--reference", str(files[0].parent), "--dir", str(args.dir)],
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"reference failed:\n{proc.stderr}")
        from_ndjson, from_arrow = json.loads(proc.stdout.strip().splitlines()[-1])
        reference.append(args.events / from_ndjson)
        insert_only.append(args.events / from_arrow)
        print(f"run {run + 1}: duckdb reference {reference[-1]:,.0f} ev/s from NDJSON"
              f" | {insert_only[-1]:,.0f} ev/s from typed Arrow (insert only)")
        for code, src in codes.items():
            last[code] = got = in_subprocess(args, log_dir, src, code)
            for key in rates[code]:
                rates[code][key].append(got[key])
            print(f"run {run + 1}: {code:8} replay {got['replay']:,.0f} ev/s | log read only {got['log_read']:,.0f}"
                  f" ev/s | project only {got['project']:,.0f} ev/s | live projector loop {got['live']:,.0f} ev/s"
                  f" | peak RSS {got['peak_rss_mb']} MB")
    ref, ins = statistics.median(reference), statistics.median(insert_only)
    result: dict = {"events": args.events, "batch": args.batch, "runs": args.runs, "random_ids": args.random_ids,
                    "duckdb_reference_events_per_s": round(ref), "duckdb_insert_only_events_per_s": round(ins),
                    "target_events_per_s": 1_000_000}
    print(f"\nmedians of {args.runs} runs, {args.events:,} events, batch {args.batch:,}:")
    print(f"  duckdb reference (read_json NDJSON -> same tables, same keys): {ref:,.0f} ev/s;"
          f" insert only (typed Arrow -> same tables): {ins:,.0f} ev/s")
    for code in codes:
        med = {k: statistics.median(v) for k, v in rates[code].items()}
        print(f"  {code:8} replay {med['replay']:,.0f} ev/s ({med['replay'] / ref:.2f}x reference)"
              f" | log read only {med['log_read']:,.0f} | project only {med['project']:,.0f}"
              f" ({med['project'] / ref:.2f}x reference) | live projector loop {med['live']:,.0f}")
        result[code] = {**{f"{k}_events_per_s": round(v) for k, v in med.items()},
                        "replay_vs_reference": round(med["replay"] / ref, 3), "rows": last[code]["rows"],
                        "peak_rss_mb": last[code]["peak_rss_mb"]}
    if "baseline" in codes:
        ratios = {k: statistics.median(rates["current"][k]) / statistics.median(rates["baseline"][k])
                  for k in ("replay", "log_read", "project", "live")}
        print("  current / baseline: " + " | ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
        result["current_vs_baseline"] = {k: round(v, 2) for k, v in ratios.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
