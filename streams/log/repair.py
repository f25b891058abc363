"""Repair a damaged file log (``adaptd log repair``): quarantine what cannot be read, keep
every record that can, and keep every offset where it was.

Offsets live in the frames (see framing), and readers demand that they follow each other
without a gap.  So the bytes of a damaged stretch, from the damaged frame to the next
valid one, are moved to ``<log>/quarantine/<segment>-<byte>.bin`` with a JSON note beside
it (``.json``: what was cut, where, which offsets and why), and in their place go
**placeholder frames**, one per offset the stretch held, whose payload the caller
chooses (the daemon writes a dead letter naming the quarantine file).  Every later frame
keeps its offset, so consumer positions (the projector's, the processors', alerts')
stay valid and mean the same records as before.

The only bytes whose offsets are not known are a torn tail (damage at the end of the
last segment with nothing valid after it): they are quarantined and cut, with no
placeholder, as the next start would cut them anyway.  Damage at the end of a sealed
segment ends at the next segment's base, which gives its offsets.

Crash safety: the quarantine files are written and fsynced before a segment is replaced,
and a segment is replaced by writing a temporary file, fsyncing it and renaming it over
the old one, so an interrupted repair leaves each segment either old or repaired, and
running it again finishes the job.  The log's LOCK is held throughout, so it never runs
beside a daemon that has the log open.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from adaptd.streams.log import framing
from adaptd.streams.log.base import LogError
from adaptd.streams.log.segment import fsync_dir, list_bases, segment_path

#: Builds the payload of the placeholder for a lost offset: ``(offset, reason,
#: quarantine file, timestamp_ms of the frame before it) -> bytes``.
Placeholder = Callable[[int, str, Path, int], bytes]
QUARANTINE = "quarantine"


@dataclass(frozen=True, slots=True)
class Cut:
    """One stretch of damaged bytes moved to quarantine."""

    segment: str
    #: Byte where the stretch began in the segment as it was.
    position: int
    length: int
    #: Offsets the stretch held, ``[first_offset, end_offset)``: each got a placeholder.
    #: Empty (first == end) for a torn tail, whose offsets are unknown.
    first_offset: int
    end_offset: int
    reason: str
    #: "corrupt" (placeholders written) or "torn_tail" (cut).
    kind: str
    quarantine_file: str


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _plan_segment(
    data: bytes, base: int, next_base: int | None
) -> tuple[list[tuple[int, int, int, int, str, int]], int]:
    """Find the damaged stretches of one segment's bytes.

    Returns:
        ``(stretches, end_offset)``: each stretch is ``(position, length, first_offset,
        end_offset, reason, timestamp_ms before it)``; ``end_offset`` is the offset after
        the segment's last record once repaired.  A clean segment gives ``([], end)``.
    """
    stretches = []
    pos, offset, ts = 0, base, 0
    while True:
        scan = framing.scan(data, pos, offset, verify=True)
        pos, offset = scan.end, scan.next_offset
        ts = scan.last_timestamp_ms if scan.last_timestamp_ms is not None else ts
        if scan.error is None and scan.need == 0:
            break  # clean to the end of the bytes
        reason = scan.error or "a frame cut short by the end of the segment"
        found = framing.find_frame_after(data, pos, offset)
        if found is not None and (next_base is None or found[1] < next_base):
            at, following = found
            stretches.append((pos, at - pos, offset, following, reason, ts))
            pos, offset = at, following
            continue
        # Nothing valid after the damage: it runs to the end of the segment.  In a sealed
        # segment its offsets end at the next base.  In the last one, headers that still
        # chain up exactly to the end give them (a damaged last record, not a torn write);
        # otherwise it is a torn tail, whose offsets are unknown.
        if next_base is not None:
            end = next_base
        else:
            loose = framing.scan(data, pos, offset, verify=False)
            whole = loose.error is None and loose.need == 0 and loose.end == len(data)
            end = loose.next_offset if whole else offset
        stretches.append((pos, len(data) - pos, offset, end, reason, ts))
        pos, offset = len(data), end
        break
    if next_base is not None and offset < next_base:  # clean frames, but too few of them
        stretches.append((pos, 0, offset, next_base, f"the frames end at offset {offset}, not {next_base}", ts))
        offset = next_base
    return stretches, offset


def repair_log(log_dir: Path, placeholder: Placeholder | None = None) -> list[Cut]:
    """Quarantine every damaged stretch of the log in ``log_dir`` (see module docstring).

    Args:
        log_dir: the log directory (holds the ``*.seg`` files).
        placeholder: payload of the frame that keeps a lost offset; default: empty.

    Returns:
        What was cut, in segment order; empty when the log was clean (then nothing is
        written at all).

    Raises:
        LogError: no log there, or another process has it open (stop the daemon first).
        OSError: reading or writing failed (each segment is still old or repaired).
    """
    if not log_dir.is_dir():
        raise LogError(f"no log at {log_dir}")
    make = placeholder or (lambda offset, reason, file, ts: b"")
    lock_fd = os.open(log_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LogError(f"{log_dir} is in use (is the daemon running?): stop it before repairing") from None
        bases = list_bases(log_dir)
        cuts: list[Cut] = []
        for i, base in enumerate(bases):
            next_base = bases[i + 1] if i + 1 < len(bases) else None
            cuts += _repair_segment(log_dir, base, next_base, make)
        return cuts
    finally:
        os.close(lock_fd)


def _repair_segment(log_dir: Path, base: int, next_base: int | None, make: Placeholder) -> list[Cut]:
    path = segment_path(log_dir, base)
    data = path.read_bytes()
    stretches, _ = _plan_segment(data, base, next_base)
    if not stretches:
        return []
    quarantine = log_dir / QUARANTINE
    if not quarantine.is_dir():
        quarantine.mkdir()
        fsync_dir(log_dir)
    cuts, parts, pos = [], [], 0
    for start, length, first, end, reason, ts in stretches:
        torn = next_base is None and first == end
        file = quarantine / f"{path.stem}-{start}.bin"
        cut = Cut(str(path), start, length, first, end, reason, "torn_tail" if torn else "corrupt", str(file))
        _write_durably(file, data[start:start + length])
        _write_durably(file.with_suffix(".json"), json.dumps(asdict(cut), indent=2).encode() + b"\n")
        parts.append(data[pos:start])
        for offset in range(first, end):
            parts.append(framing.encode([make(offset, reason, file, ts)], offset, ts))
        pos = start + length
        cuts.append(cut)
    parts.append(data[pos:])
    fsync_dir(quarantine)
    tmp = path.with_name(path.name + ".repair")
    _write_durably(tmp, b"".join(parts))
    os.replace(tmp, path)
    fsync_dir(log_dir)
    return cuts
