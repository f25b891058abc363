"""Recorded daemon answers, and a tiny HTTP server on 127.0.0.1 that serves them.

The snapshot tests and the benchmark need the same answers every run: ``record`` saves
what a real daemon (fed ``dash_workload``) answered to every GET the dashboard makes;
``RecordedDaemon`` serves them (whatever the query), plus ``/v1/stream`` replaying
recorded events, optionally followed by fresh events at a fixed rate.

Regenerate the recording: ``.venv/bin/python tests/dash_server.py`` (starts a daemon).
"""

from __future__ import annotations

import asyncio
import copy
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

RECORDING = Path(__file__).parent / "fixtures" / "dash_recorded.json"
GETS = {
    "/v1/health": {}, "/v1/stats": {}, "/v1/programs": {}, "/v1/routing": {},
    "/v1/history": {"window": "1m", "limit": 1000, "sketch": "true"}, "/v1/signals": {"limit": 1000},
    "/v1/adaptations": {"limit": 1000}, "/v1/optimizer/runs": {"limit": 1000},
}
#: Answers that carry the wall clock or the machine, made constant in the recording.
_VOLATILE_STATS = ("uptime_s",)


def record(url: str, tail_events: list[dict]) -> dict[str, Any]:
    """Every GET the dashboard makes, answered by the daemon at ``url``, plus the events
    the recorded live tail replays."""
    import httpx

    answers = {path: httpx.get(url + path, params=params, timeout=30).json() for path, params in GETS.items()}
    for key in _VOLATILE_STATS:
        answers["/v1/stats"][key] = 0.0
    return {"answers": answers, "stream": tail_events}


class RecordedDaemon:
    """Serves ``recording`` on a free 127.0.0.1 port in a thread (``with`` starts and stops it).

    Args:
        recording: ``{"answers": {path: json}, "stream": [event, ...]}``.
        rate: after the recorded events, stream ``rate`` fresh events per second made by
            ``make_event(n)`` (0: stay quiet).
    """

    def __init__(self, recording: dict[str, Any], *, rate: float = 0.0,
                 make_event: Callable[[int], dict] | None = None) -> None:
        self.recording = recording
        self.rate, self.make_event = rate, make_event
        self.requests = 0
        self.streamed = 0
        app = Starlette(routes=[Route("/v1/stream", self._stream), Route("/{path:path}", self._get)])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error",
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        sock = self._server.servers[0].sockets[0]
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def _get(self, request: Request) -> Response:
        self.requests += 1
        answer = self.recording["answers"].get("/" + request.path_params["path"])
        if answer is None:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return Response(orjson.dumps(answer), media_type="application/json")

    async def _stream(self, request: Request) -> StreamingResponse:
        async def frames():
            yield b": recorded tail\n\n"
            offset = 0
            for event in self.recording["stream"]:
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (offset, event["kind"].encode(), orjson.dumps(event))
                offset += 1
            n = 0
            started = time.monotonic()
            deadline = started + 600  # bounded: a forgotten client cannot keep it forever
            while time.monotonic() < deadline and not self._server.should_exit:
                if self.rate <= 0 or self.make_event is None:
                    await asyncio.sleep(0.1)
                    continue
                due = started + n / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                event = self.make_event(n)
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (offset, event["kind"].encode(), orjson.dumps(event))
                offset, n = offset + 1, n + 1
                self.streamed += 1
        return StreamingResponse(frames(), media_type="text/event-stream")

    def __enter__(self) -> RecordedDaemon:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("recorded daemon did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def load() -> dict[str, Any]:
    """The committed recording (a deep copy: callers may edit it)."""
    return copy.deepcopy(orjson.loads(RECORDING.read_bytes()))


def _main() -> None:  # pragma: no cover - regenerates the committed fixture
    import tempfile

    import httpx

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import DaemonProcess, wait_until
    from dash_workload import CONFIG, optimizer_runs, workload

    root = Path(tempfile.mkdtemp())
    (root / "adaptd.toml").write_text(CONFIG)
    daemon = DaemonProcess(root / "data", config=root / "adaptd.toml").start()
    try:
        events = workload() + optimizer_runs()
        httpx.post(daemon.url + "/v1/events", content=orjson.dumps(events), timeout=60).raise_for_status()
        wait_until(lambda: httpx.get(daemon.url + "/v1/stats").json()["projector_lag"] == 0
                   and httpx.get(daemon.url + "/v1/signals").json()["items"], timeout=60)
        seen: list[int] = []

        def settled() -> bool:  # the derived events stopped growing over three reads
            seen.append(httpx.get(daemon.url + "/v1/stats").json()["log_end_offset"])
            return len(seen) >= 3 and seen[-1] == seen[-3]

        wait_until(settled, timeout=60, interval=0.5)
        recording = record(daemon.url, events[-24:])
    finally:
        daemon.stop()
    RECORDING.write_bytes(orjson.dumps(recording, option=orjson.OPT_INDENT_2))
    print(f"wrote {RECORDING} ({RECORDING.stat().st_size} bytes)")


if __name__ == "__main__":
    _main()
