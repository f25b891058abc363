"""Stream log backends behind one interface (see base.StreamLog)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptd.streams.log.base import CorruptLog, LogClosed, LogError, LogStats, Record, RecordBatch, StreamLog

__all__ = ["CorruptLog", "LogClosed", "LogError", "LogStats", "Record", "RecordBatch", "StreamLog", "open_log"]


def open_log(url: str, data_dir: Path, **options: Any) -> StreamLog:
    """Open the log named by ``url``: ``file`` (under ``data_dir/log``) or ``kafka://...``.

    A kafka log appends to the events topic and also follows the derived topics (see
    streams.topics); the file options (fsync, segments, retention) do not apply to it.

    Raises:
        LogError: the url names no known backend (message lists the known ones).
    """
    if url in ("file", "file://") or url.startswith("file://"):
        from adaptd.streams.log.file import FileLog

        path = Path(url[len("file://"):]) if url.startswith("file://") and len(url) > 7 else data_dir / "log"
        return FileLog(path, **options)
    if url.startswith("kafka://"):
        from adaptd.streams.kafka.log_open import open_kafka_log

        return open_kafka_log(url)
    raise LogError(f"unknown log url {url!r}: use 'file' (embedded) or kafka://HOST:PORT")
