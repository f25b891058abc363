"""The dashboard's only way to the daemon: async HTTP calls and the SSE live tail.

``DaemonClient`` is called from Textual workers only (see ``adaptd.tui.app``); it raises
``DaemonDown`` when the daemon cannot be reached and ``ActionRefused`` with the daemon's
own reason when it answers an action with 4xx/5xx.  ``Backoff`` spaces the reconnect
attempts; ``SSEParser`` turns the stream's lines into events.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from adaptd.tui.viewmodel import DashData

#: Items fetched per list endpoint on each refresh.
LIST_LIMIT = 1000
#: Lines of one SSE event kept at most (a longer event is dropped: a daemon bug, not ours to render).
MAX_SSE_LINES = 64


class DaemonDown(Exception):
    """The daemon did not answer (connection refused, timeout, or a 5xx)."""


class ActionRefused(Exception):
    """The daemon refused an action; ``status`` and ``detail`` are its answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with jitter: ``base * factor^n`` capped at ``cap`` seconds,
    times a factor in ``[1 - jitter, 1]`` drawn from the injected ``rng``."""

    base: float = 0.25
    factor: float = 2.0
    cap: float = 5.0
    jitter: float = 0.2
    rng: Callable[[], float] = field(default=random.random)
    attempts: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (grows with each failure)."""
        delay = min(self.cap, self.base * self.factor**self.attempts)
        self.attempts += 1
        return delay * (1 - self.jitter * self.rng())

    def reset(self) -> None:
        """Call after a success: the next failure waits ``base`` again."""
        self.attempts = 0


class SSEParser:
    """Incremental Server-Sent Events parser (``id``, ``event``, ``data`` fields;
    comments and unknown fields ignored)."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str | None, str, str] | None:
        """Feed one line (without its newline); returns ``(id, event, data)`` when a blank
        line ends an event with data, else None."""
        if line == "":
            if not self._data:
                self._event = "message"
                return None
            out = (self._id, self._event, "\n".join(self._data))
            self._event, self._data = "message", []
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data" and len(self._data) < MAX_SSE_LINES:
            self._data.append(value)
        elif name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        return None


class DaemonClient:
    """Async calls to one daemon at ``url`` with an optional bearer ``token``."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 5.0,
                 window: str = "1m") -> None:
        self.url = url.rstrip("/")
        self.window = window
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Plain http needs no certificates; loading the CA bundle costs ~80 ms of start-up.
        verify = self.url.startswith("https://")
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, verify=verify)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, Any] | None = None, *, optional: bool = False) -> Any:
        """GET ``path`` as JSON; None for a 404 when ``optional`` (an older daemon).

        Raises:
            DaemonDown: no answer, or a 5xx.
            ActionRefused: another 4xx (e.g. 401: a wrong token).
        """
        try:
            answer = await self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise DaemonDown(f"{type(exc).__name__}: {exc}") from None
        if answer.status_code == 404 and optional:
            return None
        if answer.status_code >= 500:
            raise DaemonDown(f"{path}: HTTP {answer.status_code}")
        if answer.status_code >= 400:
            raise ActionRefused(answer.status_code, _detail(answer))
        return orjson.loads(answer.content)

    async def snapshot(self) -> DashData:
        """Everything the screens show, fetched concurrently.

        Raises:
            DaemonDown, ActionRefused: as ``_get``.
        """
        calls = (
            self._get("/v1/health"),
            self._get("/v1/stats"),
            self._get("/v1/programs"),
            self._get("/v1/routing", optional=True),
            self._get("/v1/history", {"window": self.window, "limit": LIST_LIMIT, "sketch": "true"}),
            self._get("/v1/signals", {"limit": LIST_LIMIT}),
            self._get("/v1/adaptations", {"limit": LIST_LIMIT}, optional=True),
            self._get("/v1/optimizer/runs", {"limit": LIST_LIMIT}, optional=True),
        )
        health, stats, programs, tables, history, signals, adaptations, runs = await asyncio.gather(*calls)
        return DashData(
            health=health, stats=stats, programs=programs["items"], tables=(tables or {}).get("items", []),
            windows=history["items"], window=self.window, signals=signals["items"],
            adaptations=(adaptations or {}).get("items", []), optimizer_runs=None if runs is None else runs["items"],
        )

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST an admin action; the daemon's JSON answer.

        Raises:
            DaemonDown: no answer.
            ActionRefused: 4xx or 5xx, with the daemon's reason (404 for a missing endpoint).
        """
        try:
            answer = await self._http.post(path, json=body or {})
        except httpx.HTTPError as exc:
            raise DaemonDown(f"{type(exc).__name__}: {exc}") from None
        if answer.status_code >= 400:
            raise ActionRefused(answer.status_code, _detail(answer))
        return orjson.loads(answer.content) if answer.content else {}

    async def stream(self, *, from_offset: int | None = None) -> AsyncIterator[tuple[int | None, dict[str, Any]]]:
        """Events of the live tail as ``(log offset, event)`` until the stream ends.

        Raises:
            DaemonDown: the connection failed or dropped.
        """
        params = {} if from_offset is None else {"from_offset": from_offset}
        parser = SSEParser()
        try:
            async with self._http.stream("GET", "/v1/stream", params=params,
                                         timeout=httpx.Timeout(5.0, read=None)) as answer:
                if answer.status_code >= 400:
                    raise DaemonDown(f"/v1/stream: HTTP {answer.status_code}")
                async for line in answer.aiter_lines():
                    got = parser.feed(line.rstrip("\r"))
                    if got is None:
                        continue
                    offset, _, data = got
                    try:
                        event = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        continue
                    yield (int(offset) if offset and offset.isdigit() else None), event
        except httpx.HTTPError as exc:
            raise DaemonDown(f"/v1/stream: {type(exc).__name__}: {exc}") from None


def _detail(answer: httpx.Response) -> str:
    """The daemon's ``detail`` (FastAPI's error shape), else the body's start."""
    try:
        detail = orjson.loads(answer.content).get("detail")
    except (orjson.JSONDecodeError, AttributeError):
        detail = None
    if isinstance(detail, list):  # validation errors: keep the messages
        detail = "; ".join(str(d.get("msg", d)) for d in detail)
    return str(detail or answer.text[:300] or answer.reason_phrase)
