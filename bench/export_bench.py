"""Export round trip: N executions of one tenant (plus N/10 of another) in a real read
model, exported with ``copy_table`` to Parquet and NDJSON, read back by DuckDB and
pyarrow; counts must be equal.  Prints wall-clock seconds (median of --repeat)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from adaptd.daemon.readmodel.export_queries import copy_table
from adaptd.daemon.readmodel.store import Store


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        Store(root / "db.duckdb").close()  # migrated schema
        con = duckdb.connect(str(root / "db.duckdb"))
        t0 = time.perf_counter()
        con.execute("""
            INSERT INTO executions (id, ts, v, tenant, source, attrs, kind, program, module, status, duration_ms,
                                    tokens_in, tokens_out, cost_usd, log_offset)
            SELECT uuid(), TIMESTAMPTZ '2026-12-01 00:00:00+00' + INTERVAL (i) MILLISECOND, 1,
                   CASE WHEN i % 11 = 10 THEN 'beta' ELSE 'acme' END, 'bench', '{"session_id": "s"}', 'execution',
                   'qa', 'm' || (i % 7), CASE WHEN i % 50 = 0 THEN 'error' ELSE 'ok' END, (i % 997) * 1.5,
                   200, 50, 0.0004, i
            FROM range(?) t(i)""", [args.events * 11 // 10])
        acme = con.execute("SELECT count(*) FROM executions WHERE tenant = 'acme'").fetchone()[0]
        print(f"loaded {acme} acme rows (+{args.events * 11 // 10 - acme} beta) in {time.perf_counter() - t0:.1f} s")
        for fmt in ("parquet", "ndjson"):
            times, reads = [], []
            for r in range(args.repeat):
                path = root / f"out-{r}.{fmt}"
                t = time.perf_counter()
                rows = copy_table(con.cursor(), "executions", fmt, path, "acme")
                times.append(time.perf_counter() - t)
                t = time.perf_counter()
                reader = "read_parquet" if fmt == "parquet" else "read_json_auto"
                back = duckdb.sql(f"SELECT count(DISTINCT id) FROM {reader}('{path}')").fetchall()[0][0]
                if fmt == "parquet":
                    assert pq.read_table(path, columns=["id", "ts", "attrs"]).num_rows == acme
                reads.append(time.perf_counter() - t)
                assert rows == back == acme, (rows, back, acme)
                size = path.stat().st_size
                path.unlink()
            print(f"{fmt}: {acme} rows, export median {statistics.median(times):.2f} s, read back (DuckDB"
                  f" count(DISTINCT id); pyarrow too for parquet) median {statistics.median(reads):.2f} s,"
                  f" file {size / 1e6:.0f} MB, counts equal")


if __name__ == "__main__":
    main()
