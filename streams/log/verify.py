"""Check every frame of a file log without opening it for writing (``adaptd log verify``).

Reads only: takes no lock, cuts nothing, so it runs beside a live daemon or on a copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from adaptd.streams.log.segment import Segment, list_bases, segment_path


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one segment."""

    segment: Path
    #: Byte of the damaged frame.
    position: int
    #: Offset that frame should carry.
    offset: int
    reason: str
    #: "corrupt": acknowledged records may be affected; "torn_tail": the last segment ends
    #: in frames never acknowledged, which the next start cuts.
    kind: str


def verify_log(log_dir: Path) -> tuple[int, list[Finding]]:
    """Scan every segment of the log in ``log_dir``, checking length, offset and CRC.

    Returns:
        (number of valid frames seen, findings in segment order); no findings means clean.
        An empty or missing directory gives (0, []).
    """
    if not log_dir.is_dir():
        return 0, []
    bases = list_bases(log_dir)
    frames, findings = 0, []
    for i, base in enumerate(bases):
        path = segment_path(log_dir, base)
        size = os.stat(path).st_size
        segment = Segment(base, path, size, base)
        try:
            pos, end, _, error = segment.scan(0, size, base, verify=True)
            frames += end - base
            last = i == len(bases) - 1
            if not last and error is None and end != bases[i + 1]:
                error = f"its frames end at offset {end}, but the next segment starts at {bases[i + 1]}"
            if error is not None:
                torn = last and segment.damage_after(pos, end, size) is None
                findings.append(Finding(path, pos, end, error, "torn_tail" if torn else "corrupt"))
        finally:
            segment.close_reader()
    return frames, findings
