"""A real DSPy program under AdaptdCallback against real HTTP endpoints: the executions
land in a real daemon, and a daemon that is down, hung or failing never breaks or
blocks the program."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import httpx
import pytest
from conftest import free_port, wait_until
from dspy.utils import DummyLM
from dspy_programs import Pipeline

from adaptd.adapters import AdaptdCallback, Client

CALLS = 200



def test_a_dspy_program_lands_in_the_daemon_as_its_call_tree(daemon_factory, tmp_path: Path) -> None:
    daemon = daemon_factory("dspy").start()
    client = Client(daemon.url, spill_dir=tmp_path / "spill", schedule_delay_ms=20)
    lm = dspy.LM("openai/gpt-4o-mini", cache=False,
                 mock_response="[[ ## reasoning ## ]]\nr\n\n[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]")
    try:
        with dspy.context(lm=lm, callbacks=[AdaptdCallback(program="capitals", client=client)]):
            for _ in range(3):
                assert Pipeline()(question="Capital of France?").answer == "Paris"
        assert client.flush(30)
        rows = wait_until(lambda: _executions(daemon.url, "capitals", 12), timeout=30)
    finally:
        client.shutdown(5)
    roots = [r for r in rows if r["parent_id"] is None]
    assert len(roots) == 3 and {r["module"] for r in roots} == {"Pipeline"}
    by_id = {r["id"]: r for r in rows}
    for row in rows:
        assert row["root_id"] in by_id and (row["parent_id"] is None or row["parent_id"] in by_id)
    assert sorted(r["module"] for r in rows if r["root_id"] == roots[0]["id"]) == [
        "Pipeline", "draft", "refine", "refine.predict"]
    assert all(r["tokens_in"] == 20 and r["tokens_out"] == 40 and r["cost_usd"] > 0 for r in roots)


def _executions(url: str, program: str, expected: int) -> list[dict] | None:
    page = httpx.get(f"{url}/v1/executions", params={"program": program, "limit": 1000}, timeout=10).json()
    return page["items"] if len(page["items"]) >= expected else None


class _Daemon(http.server.BaseHTTPRequestHandler):
    """A daemon stand-in at the HTTP level: hangs until released, or answers 500."""

    mode = "error"
    release = threading.Event()
    requests = 0

    def do_POST(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.mode == "hang":
            self.release.wait(60)
        self.send_response(500)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def bad_daemon(request) -> Iterator[tuple[str, type[_Daemon]]]:
    handler = type("Handler", (_Daemon,), {"mode": request.param, "release": threading.Event(), "requests": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def _client(url: str, spill: Path) -> Client:
    return Client(url, spill_dir=spill, schedule_delay_ms=5, max_batch_size=50, max_queue_size=500,
                  export_timeout_s=30, max_retries=1, retry_backoff_s=0.01)  # fmt: skip


def _run_program(url: str, spill: Path, client: Client | None = None) -> tuple[Client, AdaptdCallback]:
    client = client or _client(url, spill)
    callback = AdaptdCallback(program="resilient", client=client)
    answers = [{"answer": f"draft {i}"} if j == 0 else {"reasoning": "r", "answer": f"final {i}"}
               for i in range(CALLS) for j in range(2)]  # fmt: skip
    with dspy.context(lm=DummyLM(answers), callbacks=[callback]):
        for i in range(CALLS):
            assert Pipeline()(question=f"q{i}").answer == f"final {i}"
    return client, callback


@pytest.mark.parametrize("bad_daemon", ["hang"], indirect=True)
def test_a_hung_daemon_never_blocks_the_program(bad_daemon, tmp_path: Path) -> None:
    url, handler = bad_daemon
    client = _client(url, tmp_path / "spill")
    # The daemon is already holding an export unanswered before the program starts.
    client.feedback("0190a6f0-0000-7000-8000-000000000000", 1.0)
    wait_until(lambda: handler.requests == 1, timeout=20)
    client, callback = _run_program(url, tmp_path / "spill", client)
    try:
        # Every call returned while the daemon still held that export unanswered.
        assert not handler.release.is_set() and handler.requests == 1
        assert callback.errors == 0
        stats = client.stats()  # per call: 4 executions and 2 LM calls, into a bounded queue
        assert stats["enqueued"] == CALLS * 6 + 1 and stats["dropped_queue_full"] > 0
    finally:
        handler.release.set()
        client.shutdown(10)


@pytest.mark.parametrize("bad_daemon", ["error"], indirect=True)
def test_a_failing_daemon_never_breaks_the_program(bad_daemon, tmp_path: Path) -> None:
    url, handler = bad_daemon
    client, callback = _run_program(url, tmp_path / "spill")
    try:
        assert callback.errors == 0
        wait_until(lambda: client.stats()["export_errors"] > 0, timeout=20)
    finally:
        client.shutdown(10)


def test_a_daemon_that_is_down_never_breaks_the_program_and_events_spill(tmp_path: Path) -> None:
    client, callback = _run_program(f"http://127.0.0.1:{free_port()}", tmp_path / "spill")
    try:
        assert callback.errors == 0
        assert client.flush(30)
        assert client.stats()["spilled"] > 0
    finally:
        client.shutdown(10)
