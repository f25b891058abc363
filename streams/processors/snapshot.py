"""Atomic snapshot files: processor states plus the log position they correspond to.

Format: pickle (protocol 5) of a dict ``{"format", "config", "position", "high",
"states"}`` (see ``ProcessorRuntime``).  States are plain data (dataclasses, dicts,
numpy arrays), which pickle stores fast and compactly.  The file lives in the daemon's
own data directory and is only ever read by the daemon; like any pickle it must not be
loaded from an untrusted source.

A snapshot is written to ``NAME.tmp``, fsynced, renamed over ``NAME`` and the directory
fsynced, so a crash leaves either the old or the new snapshot, never a torn one.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

FORMAT = 1


class SnapshotError(Exception):
    """A snapshot file exists but cannot be read (the runtime then starts from scratch)."""


def write_snapshot(path: Path, payload: dict[str, Any]) -> int:
    """Durably replace ``path`` with ``payload``; return the bytes written.

    Raises:
        OSError: the file could not be written (the previous snapshot stays).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = pickle.dumps({**payload, "format": FORMAT}, protocol=5)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return len(data)


def read_snapshot(path: Path) -> dict[str, Any] | None:
    """The payload stored at ``path``; None when there is no snapshot.

    Raises:
        SnapshotError: the file is unreadable, not a snapshot, or of another format.
    """
    try:
        with open(path, "rb") as fh:
            payload = pickle.load(fh)
    except FileNotFoundError:
        return None
    except Exception as exc:  # unpickling can raise almost anything on a damaged file
        raise SnapshotError(f"cannot read snapshot {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SnapshotError(f"{path} is not a format-{FORMAT} processor snapshot")
    return payload


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
