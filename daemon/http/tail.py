"""The live tail (``GET /v1/stream``): SSE frames of one tenant's log records, and the cap
on how many tails each tenant may hold open.

Every open tail holds a worker thread for up to a second at a time while it waits for
records, so an unbounded number of idle tails starves ingest: ``TailSlots`` bounds them
per tenant (one tenant at its cap never blocks another).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from adaptd.streams.log import LogError, StreamLog

#: Seconds of quiet between keep-alive comments.
KEEP_ALIVE_S = 15.0


class TailSlots:
    """Open tails per tenant, at most ``limit`` each (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, tenant: str) -> Slot | None:
        """A slot for one more tail of ``tenant``, or None when it holds ``limit`` already."""
        with self._lock:
            if self._open.get(tenant, 0) >= self.limit:
                return None
            self._open[tenant] = self._open.get(tenant, 0) + 1
        return Slot(self, tenant)

    def open(self, tenant: str) -> int:
        """How many tails ``tenant`` holds open."""
        with self._lock:
            return self._open.get(tenant, 0)

    def _give_back(self, tenant: str) -> None:
        with self._lock:
            left = self._open.get(tenant, 0) - 1
            if left > 0:
                self._open[tenant] = left
            else:
                self._open.pop(tenant, None)


class Slot:
    """One taken slot; ``release`` is idempotent (called by the tail's end and, as a
    backstop, by the response's background task, whichever runs first)."""

    def __init__(self, slots: TailSlots, tenant: str) -> None:
        self._slots, self._tenant = slots, tenant
        self._held = True
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._slots._give_back(self._tenant)


async def tail(
    request: Request,
    log: StreamLog,
    slot: Slot,
    tenant: str,
    offset: int,
    kind: str | None,
    program: str | None,
    max_events: int | None,
) -> AsyncIterator[bytes]:
    """SSE frames of ``tenant``'s matching records from ``offset`` on.

    A comment every ``KEEP_ALIVE_S`` of quiet.  Ends after ``max_events`` events, when
    the client goes away, or with one ``event: error`` frame (data: ``{"detail": ...}``)
    when the log cannot be read (a damaged frame, the daemon shutting down): a tail never
    stops silently.  The slot is given back however it ends.
    """
    sent = 0
    quiet = 0.0
    try:
        yield b": adaptd tail\n\n"
        while not await request.is_disconnected():
            try:
                records = await run_in_threadpool(log.read, offset, 500)
                if not records:
                    arrived = await run_in_threadpool(log.wait, offset, 1.0)
                    quiet = 0.0 if arrived else quiet + 1.0
                    if quiet >= KEEP_ALIVE_S:
                        quiet = 0.0
                        yield b": keep-alive\n\n"
                    continue
            except LogError as exc:
                detail = f"the log cannot be read at offset {offset}: {exc}"
                yield b"event: error\ndata: %s\n\n" % orjson.dumps({"detail": detail, "offset": offset})
                return
            for record in records:
                offset = record.offset + 1
                try:
                    event = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(event, dict) or event.get("tenant") != tenant:
                    continue
                if kind is not None and event.get("kind") != kind:
                    continue
                if program is not None and event.get("program") != program:
                    continue
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (
                    record.offset, str(event.get("kind")).encode(), record.value
                )
                sent += 1
                if max_events is not None and sent >= max_events:
                    return
    finally:
        slot.release()
