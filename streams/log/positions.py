"""Consumer group positions of the file log: one small file per group, replaced atomically.

``positions/<group>.pos`` holds the group's next offset in decimal.  A commit writes a
temporary file, fsyncs it, renames it over the old one and fsyncs the directory, so after
a crash the file holds either the old or the new position, never a mix.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from adaptd.streams.log.base import LogError
from adaptd.streams.log.segment import fsync_dir

_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_SUFFIX = ".pos"


def check_group(group: str) -> str:
    """Return ``group`` if it is safe as a file name.

    Raises:
        ValueError: it is not 1-128 letters, digits, '.', '_' or '-' starting with a
            letter or digit (so no '/', '..', hidden or empty names).
    """
    if not isinstance(group, str) or not _GROUP.match(group):
        raise ValueError(
            f"invalid consumer group name {group!r}: use 1-128 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return group


class Positions:
    """Durable committed positions, cached in memory (thread-safe)."""

    def __init__(self, directory: Path, *, create: bool = True) -> None:
        """Load the positions under ``directory`` (created if ``create``).

        Raises:
            LogError: a position file does not hold a number.
        """
        self.directory = directory
        self._lock = threading.Lock()
        self._cache: dict[str, int] = {}
        if not directory.is_dir():
            if not create:
                return
            directory.mkdir()
            fsync_dir(directory.parent)  # the first commit must not vanish with its directory
        for entry in os.scandir(directory):
            group = entry.name[: -len(_SUFFIX)]
            if entry.name.endswith(_SUFFIX) and _GROUP.match(group):
                text = Path(entry.path).read_text()
                try:
                    self._cache[group] = int(text)
                except ValueError:
                    raise LogError(f"damaged position file {entry.path}: {text[:40]!r}") from None

    def commit(self, group: str, offset: int) -> None:
        """Store ``offset`` as ``group``'s position; durable when this returns.

        Raises:
            ValueError: bad group name or negative offset.
            OSError: the file could not be written (the old position stays).
        """
        check_group(group)
        offset = int(offset)
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        path = self.directory / f"{group}{_SUFFIX}"
        tmp = self.directory / f".{group}.tmp"
        with self._lock:  # one commit at a time: they share the temporary file name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, f"{offset}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            fsync_dir(self.directory)
            self._cache[group] = offset

    def get(self, group: str) -> int | None:
        """``group``'s position, or None if it never committed (ValueError: bad name)."""
        check_group(group)
        return self._cache.get(group)

    def floor(self) -> int | None:
        """The lowest position of any group, None when no group has committed."""
        return min(self._cache.values(), default=None)
