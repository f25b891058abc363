"""Stopping the daemon while clients long-poll the routing table: every held request ends
with a clean answer (a 304 the client polls again after, or 503), never a 500 from
uvicorn cancelling it at the end of its graceful-shutdown timeout; and the daemon exits 0
within that timeout."""

from __future__ import annotations

import threading
import time

import httpx
from conftest import wait_until

from adaptd.daemon.http.routing import MAX_WAIT_S, longest_hold_s

CONFIG = """
shutdown_timeout_s = {timeout}
[[routing]]
program = "qa"
[[routing.routes]]
name = "a"
model = "openai/a"
[[routing.routes]]
name = "b"
model = "openai/b"
"""


def test_the_long_poll_hold_fits_within_half_the_graceful_shutdown_timeout():
    assert longest_hold_s(10) == 5
    assert longest_hold_s(0) == 0.5  # uvicorn is given at least 1 s
    assert longest_hold_s(600) == MAX_WAIT_S


def test_stopping_the_daemon_ends_held_long_polls_with_a_clean_answer_not_500(daemon_factory):
    timeout_s = 2
    daemon = daemon_factory("routing", config_text=CONFIG.format(timeout=timeout_s)).start()
    etag = httpx.get(f"{daemon.url}/v1/routing/qa", timeout=10).headers["etag"]
    answers: list[object] = []
    warm: list[int] = []
    lock = threading.Lock()

    def long_poll() -> None:
        with httpx.Client(base_url=daemon.url, timeout=MAX_WAIT_S + 10) as http:
            # a first request on the kept-alive connection: the server accepted it, so the
            # long-poll right after is on an open connection, not in the listen backlog
            warm.append(http.get("/v1/routing/qa").status_code)
            try:
                got: object = http.get("/v1/routing/qa", params={"wait": MAX_WAIT_S},
                                       headers={"If-None-Match": etag}).status_code
            except httpx.RemoteProtocolError:  # an idle connection closed at shutdown: clean
                got = "closed"
        with lock:
            answers.append(got)

    pollers = [threading.Thread(target=long_poll) for _ in range(4)]
    for t in pollers:
        t.start()
    wait_until(lambda: len(warm) == 4, timeout=10)
    t0 = time.monotonic()
    code = daemon.stop(timeout=30)
    stopped_s = time.monotonic() - t0
    for t in pollers:
        t.join(timeout=30)
    wait_until(lambda: len(answers) == 4, timeout=10)
    assert code == 0 and warm == [200] * 4
    assert all(a in (304, 503, "closed") for a in answers), answers
    assert any(a in (304, 503) for a in answers), answers  # some were held when the stop came
    assert stopped_s < timeout_s + 3, stopped_s
