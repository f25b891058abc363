#!/usr/bin/env python3
"""adaptd's streaming anomaly detector as a NAB detector command.

Usage: nab_detector.py FILE.csv
Reads ``timestamp,value`` rows (timestamps ISO 8601, read as UTC when they carry no
zone) and prints one anomaly score in [0, 1] per row, in order. Each score is printed
from the detector state after that row only: the run is causal, as
``nab_run.py --check-causal`` verifies. Timestamps that repeat or step back are scored
in file order (the detector counts them); an empty or non-numeric value is a missing
value and scores 0. Exits with status 2 and a message on a missing column or an
unparsable timestamp.
"""

from __future__ import annotations

import csv
import math
import os
import sys
from datetime import UTC, datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from adaptd.streams.processors.anomaly.detectors import Detector


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp; naive ones are taken as UTC."""
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_value(text: str) -> float:
    """The value of a row; NaN (a missing value) when empty or not a number."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def score_rows(rows) -> list[float]:
    """Scores of (timestamp text, value text) rows, one per row, in order."""
    det = Detector()
    return [det.update(parse_time(ts), parse_value(v)) for ts, v in rows]


def read_rows(path: str) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"timestamp", "value"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: need columns timestamp,value, got {reader.fieldnames}")
        return [(r["timestamp"], r["value"]) for r in reader]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        scores = score_rows(read_rows(argv[0]))
    except (OSError, ValueError) as e:
        print(f"nab_detector: {e}", file=sys.stderr)
        return 2
    sys.stdout.write("".join(f"{s:.17g}\n" for s in scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
