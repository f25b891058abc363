"""Raw throughput of the embedded file log: append (fsync per batch) and sequential read.

Usage::

    .venv/bin/python bench/log_bench.py [--records 200000] [--batch 1000] [--size 300]
        [--read-batch 5000] [--dir /tmp/somewhere] [--repeat 3]

Prints one line per measurement (best of ``--repeat``): records/s and MB/s of payload.
"append" waits for each batch before sending the next (one fsync per batch);
"append-pipelined" keeps 8 batches in flight, so group commit shares fsyncs.  "read"
reads the whole log sequentially with ``read(offset, read_batch)`` (a Record per record),
"read_batch" with ``read_batch`` (one RecordBatch: payloads in one buffer, CRCs checked
alike); "decode-only" is the framing cost without building Record objects, to show
where read time goes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptd.streams.log import framing
from adaptd.streams.log.file import FileLog


def _report(name: str, records: int, payload: int, seconds: float) -> None:
    print(f"{name:18} {records / seconds:>12,.0f} records/s {payload / seconds / 1e6:>8.1f} MB/s"
          f"  ({records} records in {seconds:.3f} s)")


def bench(directory: Path, records: int, batch: int, size: int, read_batch: int, repeat: int) -> None:
    values = [os.urandom(size) for _ in range(batch)]
    batches = records // batch
    total = batches * batch
    best: dict[str, float] = {}
    for run in range(repeat):
        for mode in ("append", "append-pipelined"):
            path = directory / f"{mode}-{run}"
            log = FileLog(path)
            started = time.perf_counter()
            if mode == "append":
                for _ in range(batches):
                    log.append(values, timeout=60)
            else:
                in_flight: deque = deque()
                for _ in range(batches):
                    in_flight.append(log.submit(values))
                    if len(in_flight) >= 8:
                        in_flight.popleft().result(60)
                for future in in_flight:
                    future.result(60)
            best[mode] = min(best.get(mode, float("inf")), time.perf_counter() - started)
            log.close()
        log = FileLog(directory / f"append-{run}")
        started = time.perf_counter()
        offset = 0
        while batch_read := log.read(offset, read_batch):
            offset = batch_read[-1].offset + 1
        best["read"] = min(best.get("read", float("inf")), time.perf_counter() - started)
        assert offset == total, (offset, total)
        started = time.perf_counter()
        offset = 0
        while len(bulk := log.read_batch(offset, read_batch)):
            offset = bulk.offsets[-1] + 1
        best["read_batch"] = min(best.get("read_batch", float("inf")), time.perf_counter() - started)
        assert offset == total, (offset, total)
        log.close()
    segment = framing.encode(values * (read_batch // batch or 1), 0, 1)
    n = len(values) * (read_batch // batch or 1)
    started = time.perf_counter()
    for _ in range(repeat * 5):
        framing.decode(segment, 0, 0, n, [], [])
    decode = (time.perf_counter() - started) / (repeat * 5)
    for mode in ("append", "append-pipelined", "read", "read_batch"):
        _report(mode, total, total * size, best[mode])
    _report("decode-only", n, n * size, decode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--read-batch", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        bench(Path(tmp), args.records, args.batch, args.size, args.read_batch, args.repeat)


if __name__ == "__main__":
    main()
