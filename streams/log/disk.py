"""The system calls the file log's writer makes on the active segment, in one replaceable object.

``Disk`` is the real thing (``os`` functions).  It exists so that disk faults (ENOSPC,
EIO) can be injected into a running log, the way a full or failing disk would raise
them, without patching ``os`` for the whole process: pass a subclass as
``FileLog(..., disk=...)``.
"""

from __future__ import annotations

import errno
import os

#: Bytes the idle space probe asks the file system to reserve (then gives back).
PROBE_BYTES = 64 * 1024


class Disk:
    """Writes, syncs and truncates a segment through ``os`` (see module docstring)."""

    def write(self, fd: int, data: memoryview) -> int:
        """Write some of ``data``; return how many bytes went (``os.write``)."""
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        """Flush the file's data and size to the device (``os.fdatasync``)."""
        os.fdatasync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        """Cut the file to ``size`` bytes (``os.ftruncate``)."""
        os.ftruncate(fd, size)

    def has_room(self, fd: int, at: int) -> bool:
        """Whether ``PROBE_BYTES`` more bytes fit after byte ``at``, without keeping them.

        Reserves the room with ``posix_fallocate`` and cuts the file back to ``at``.
        Returns True as well when the file system cannot reserve space (no such call):
        the next real write is then the probe.

        Raises:
            OSError: the reservation failed for want of space (ENOSPC, EDQUOT) or with an
                I/O error, or the cut failed.
        """
        try:
            os.posix_fallocate(fd, at, PROBE_BYTES)
        except OSError as exc:
            # EBADF: glibc's emulation refuses O_APPEND descriptors
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EBADF):
                return True
            raise
        finally:
            self.ftruncate(fd, at)
        return True
