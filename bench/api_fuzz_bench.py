"""Fuzz the live API with schemathesis until at least ``--cases`` requests were sent; count 5xx.

The fuzzer is the suite's (``tests/test_api_fuzz.py``): a real daemon with tenants, its
OpenAPI document (plus the ingest bodies it leaves out), positive and negative cases of
every operation but ``/v1/stream``, checked with schemathesis' ``not_a_server_error``.
Rounds with new seeds run until the total reaches ``--cases`` (operations with few
distinct inputs, such as ``GET /v1/health``, run out early: their count stays small).

Prints, per operation, the cases sent and the 5xx found, then every 5xx with a curl
reproducer; exits 1 if any.

    .venv/bin/python bench/api_fuzz_bench.py --cases 10000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_api_fuzz import ADMIN_TOKEN, USER_TOKEN, FuzzReport, fuzz, fuzz_config, fuzz_schema  # noqa: E402

from adaptd.daemon.testing import DaemonProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="stop after at least this many cases")
    parser.add_argument("--examples", type=int, default=100, help="cases per operation and mode in a round")
    parser.add_argument("--seed", type=int, default=20261122, help="seed of the first round (then +1 per round)")
    parser.add_argument("--max-rounds", type=int, default=50)
    args = parser.parse_args()

    started = time.monotonic()
    total = FuzzReport()
    with tempfile.TemporaryDirectory(prefix="adaptd-fuzz-") as tmp:
        root = Path(tmp)
        (root / "adaptd.toml").write_text(fuzz_config(root))
        daemon = DaemonProcess(root / "data", config=root / "adaptd.toml", cwd=REPO,
                               env={"ADAPTD_TEST_TOKEN": ADMIN_TOKEN, "ADAPTD_LOG_LEVEL": "warning"})
        with daemon:
            schemas = {ADMIN_TOKEN: fuzz_schema(daemon.url, ADMIN_TOKEN), USER_TOKEN: fuzz_schema(daemon.url, USER_TOKEN)}
            for round_ in range(args.max_rounds):
                if total.total >= args.cases:
                    break
                # mostly the admin (reaches every handler); every fourth round a non-admin tenant
                token = USER_TOKEN if round_ % 4 == 3 else ADMIN_TOKEN
                report = fuzz(schemas[token], token, examples=args.examples, rng_seed=args.seed + round_)
                total.merge(report)
                print(f"round {round_}: {'user' if token == USER_TOKEN else 'admin'} {report.total} cases,"
                      f" {len(report.server_errors)} 5xx (total {total.total})", flush=True)
            alive = daemon.proc is not None and daemon.proc.poll() is None
    elapsed = time.monotonic() - started

    errors_by_op = Counter(e.operation for e in total.server_errors)
    print(f"\n{dt.date.today()} {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"{total.total} cases in {elapsed:.0f} s, {len(total.server_errors)} with 5xx (or no answer);"
          f" daemon alive at the end: {alive}")
    print(f"statuses: {dict(sorted(total.statuses.items()))}\n")
    print(f"{'operation':58} {'cases':>7} {'5xx':>5}")
    for op in sorted(total.cases):
        print(f"{op:58} {total.cases[op]:>7} {errors_by_op[op]:>5}")
    if total.server_errors:
        print("\n5xx reproducers (first per operation and status):")
        seen = set()
        for e in total.server_errors:
            if (e.operation, e.status) in seen:
                continue
            seen.add((e.operation, e.status))
            print(f"- {e.operation} -> {e.status}: {e.body[:300]}\n  {e.curl}")
    return 1 if total.server_errors or not alive else 0


if __name__ == "__main__":
    sys.exit(main())
