"""A local OpenAI-compatible mock LLM provider scripted by a :class:`adaptd.daemon.demo.scenarios.Scenario`.

Several deployments share one server on 127.0.0.1; a request picks its deployment by the
path prefix ``/d/{deployment}/v1/chat/completions`` or else by its ``model`` field (a
provider prefix such as ``openai/`` is ignored). Endpoints: ``POST /v1/chat/completions``,
``POST /v1/completions`` (both also without ``/v1``), ``GET /v1/models``, ``GET /stats``.

Determinism: every random draw is a hash of ``(seed, deployment, request content hash,
attempt, purpose)``, never of arrival order, so the same request meets the same fate
whichever router sent it. The attempt number counts earlier arrivals of the same content
at the same deployment *from the same client* (the bearer token, or ``X-Mock-Client``), so
two routers sharing a server in one run do not disturb each other; ``X-Mock-Attempt``
overrides it. Correctness ignores the attempt (a retry cannot re-roll a wrong answer).

The phase in force is chosen by the injected ``clock`` at arrival (seconds since ``start``).
Latency, errors, hangs and resets are real: the handler thread sleeps, answers 429 with
``Retry-After``, 500/503, resets the TCP connection, or holds the request for ``hang_s``.

Pure decision logic (:func:`decide`, :func:`render_reply`, :meth:`MockProvider.plan`) is
separate from the HTTP layer (:class:`MockServer`).

CLI: ``python -m adaptd.daemon.demo.mock_provider --scenario outage_best --seed 1 [--port 0]``.

The routing benchmark (``bench/routing_bench.py``) and ``adaptd demo`` both serve from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import signal
import socket
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import NormalDist
from typing import Any

from adaptd.daemon.demo.scenarios import SCENARIOS, Behaviour, Scenario, solve, wrong_answer

_NORMAL = NormalDist()
_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]")
_ROUTE = re.compile(r"^(?:/d/(?P<dep>[^/]+))?(?:/v1)?/(?P<endpoint>chat/completions|completions)/?$")

# Errors come back faster than answers (a gateway rejects before the model runs).
_ERROR_LATENCY_SHARE = {"429": 0.1, "500": 0.3, "503": 0.3, "reset": 0.3}

# --------------------------------------------------------------------------- pure decisions


def uniform(seed: int, deployment: str, content_hash: str, attempt: int, purpose: str) -> float:
    """A uniform draw in [0, 1) that depends only on its arguments."""
    digest = hashlib.blake2b(
        f"{seed}|{deployment}|{content_hash}|{attempt}|{purpose}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def content_hash(payload: dict[str, Any]) -> str:
    """Hash of what the request asks (messages or prompt), not of model, params or client."""
    content = payload.get("messages", payload.get("prompt"))
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Outcome:
    """The fate of one request: ``status`` is "ok", "429", "500", "503", "reset" or "hang";
    ``delay_s`` is how long to hold it first; ``correct`` matters only when "ok"."""

    status: str
    delay_s: float
    correct: bool


def decide(behaviour: Behaviour, seed: int, deployment: str, chash: str, attempt: int) -> Outcome:
    """The outcome of one request under ``behaviour``; a pure function of its arguments."""
    u_latency = uniform(seed, deployment, chash, attempt, "latency")
    z = _NORMAL.inv_cdf(min(max(u_latency, 1e-12), 1 - 1e-12))
    latency_s = behaviour.latency_ms / 1000 * math.exp(behaviour.latency_sigma * z)
    correct = uniform(seed, deployment, chash, 0, "quality") < behaviour.quality
    u = uniform(seed, deployment, chash, attempt, "error")
    for status, rate in (
        ("429", behaviour.rate_429),
        ("500", behaviour.rate_500),
        ("503", behaviour.rate_503),
        ("reset", behaviour.rate_reset),
        ("hang", behaviour.rate_hang),
    ):
        if u < rate:
            delay = behaviour.hang_s if status == "hang" else latency_s * _ERROR_LATENCY_SHARE[status]
            return Outcome(status, delay, False)
        u -= rate
    return Outcome("ok", latency_s, correct)


def tokens(text: str) -> int:
    """A stable token estimate (4 characters per token, at least 1)."""
    return max(1, math.ceil(len(text) / 4))


def output_fields(messages: list[dict[str, Any]]) -> list[str]:
    """The output field names a DSPy ChatAdapter prompt asks for, in order; [] if it is not one.

    Read from the last user message ("Respond with ... `[[ ## answer ## ]]` ..."), falling
    back to the system message's "Your output fields are:" list.
    """
    for message in reversed(messages):
        text = _text(message.get("content"))
        if message.get("role") == "user" and "Respond with the corresponding output fields" in text:
            tail = text.rsplit("Respond with the corresponding output fields", 1)[1]
            return [f for f in _FIELD.findall(tail) if f != "completed"]
    for message in messages:
        text = _text(message.get("content"))
        if message.get("role") == "system" and "Your output fields are:" in text:
            section = text.split("Your output fields are:", 1)[1].split("All interactions", 1)[0]
            return re.findall(r"^\s*\d+\. `(\w+)`", section, flags=re.M)
    return []


def render_reply(messages: list[dict[str, Any]], answer: str) -> str:
    """The assistant text: ChatAdapter-formatted (``[[ ## field ## ]]`` blocks, then
    ``[[ ## completed ## ]]``) when the prompt is a DSPy one, else the bare answer."""
    fields = output_fields(messages)
    if not fields:
        return answer
    blocks = []
    for name in fields:
        value = answer if name == fields[-1] or name == "answer" else "Compute the arithmetic step by step."
        blocks.append(f"[[ ## {name} ## ]]\n{value}")
    return "\n\n".join(blocks) + "\n\n[[ ## completed ## ]]"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


# --------------------------------------------------------------------------- provider state


@dataclass
class Plan:
    """What the HTTP layer must do: wait ``delay_s``, then ``action`` ("respond", "reset" or
    "hang" = hold ``delay_s`` then respond), sending ``status``, ``headers`` and ``body``."""

    action: str
    status: int
    body: dict[str, Any]
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str, kind: str) -> Plan:
    return Plan("respond", status, {"error": {"message": message, "type": kind, "code": status}})


class MockProvider:
    """The scripted provider behind the server: decides each request and keeps statistics.

    ``clock`` returns seconds (monotonic); the phase in force is ``clock() - start``.
    Thread-safe: handler threads call :meth:`plan` concurrently.
    """

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        start: float | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.clock = clock
        self.reset(scenario, seed, start)

    def reset(self, scenario: Scenario, seed: int = 0, start: float | None = None) -> None:
        """Serve ``scenario`` with ``seed`` from ``start`` (default: now); clears the attempt
        counters and statistics."""
        with self._lock:
            self.scenario, self.seed = scenario, seed
            self.start = self.clock() if start is None else start
            self._attempts: dict[tuple[str, str, str], int] = defaultdict(int)
            self._stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def elapsed(self) -> float:
        """Seconds since the scenario start by the injected clock."""
        return self.clock() - self.start

    def stats(self) -> dict[str, dict[str, float]]:
        """Per deployment: ``requests``, one count per outcome status, ``correct``,
        ``prompt_tokens``, ``completion_tokens``, ``cost_usd``. Empty before any request."""
        with self._lock:
            return {dep: dict(counts) for dep, counts in self._stats.items()}

    def plan(self, path: str, headers: dict[str, str], payload: Any) -> Plan:
        """Decide the answer to ``POST path`` with lower-cased ``headers`` and JSON ``payload``.

        Errors of the caller's making get an OpenAI-style error body: 404 for an unknown
        path or deployment, 400 for a payload that is not an object, has no messages/prompt,
        or asks to stream.
        """
        route = _ROUTE.match(path.split("?", 1)[0])
        if route is None:
            return _error(404, f"no such endpoint: {path}", "invalid_request_error")
        if not isinstance(payload, dict):
            return _error(400, "body must be a JSON object", "invalid_request_error")
        chat = route["endpoint"] == "chat/completions"
        messages = payload.get("messages") if chat else [{"role": "user", "content": payload.get("prompt")}]
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return _error(400, "messages (or prompt) must be a non-empty list of objects", "invalid_request_error")
        if payload.get("stream"):
            return _error(400, "streaming is not supported by the mock provider", "invalid_request_error")
        model = str(payload.get("model", ""))
        deployment = route["dep"] or model.split("/")[-1]
        if deployment not in self.scenario.deployments:
            known = ", ".join(sorted(self.scenario.deployments))
            return _error(404, f"unknown deployment {deployment!r} (known: {known})", "not_found_error")

        chash = content_hash(payload)
        client = headers.get("x-mock-client") or headers.get("authorization", "")
        with self._lock:
            elapsed = self.clock() - self.start
            behaviour = self.scenario.behaviour(deployment, elapsed)
            key = (client, deployment, chash)
            attempt = self._attempts[key]
            self._attempts[key] += 1
        if "x-mock-attempt" in headers:
            try:
                attempt = int(headers["x-mock-attempt"])
            except ValueError:
                return _error(400, "X-Mock-Attempt must be an integer", "invalid_request_error")
        outcome = decide(behaviour, self.seed, deployment, chash, attempt)
        meta = {
            "x-mock-deployment": deployment,
            "x-mock-attempt": str(attempt),
            "x-mock-outcome": outcome.status,
            "x-mock-elapsed-s": f"{elapsed:.3f}",
        }
        plan = self._shape(outcome, behaviour, messages, model or deployment, chat, chash, meta)
        self._count(deployment, outcome, plan)
        return plan

    def _shape(self, outcome, behaviour, messages, model, chat, chash, meta) -> Plan:
        if outcome.status == "429":
            plan = _error(429, "rate limit exceeded (mock)", "rate_limit_error")
            plan.headers["retry-after"] = f"{behaviour.retry_after_s:g}"
        elif outcome.status in ("500", "503"):
            plan = _error(int(outcome.status), f"mock upstream error {outcome.status}", "api_error")
        elif outcome.status == "reset":
            plan = Plan("reset", 0, {})
        elif outcome.status == "hang":
            plan = _error(504, "mock upstream hung", "timeout")
            plan.action = "hang"
        else:
            prompt_text = "".join(_text(m.get("content")) for m in messages)
            correct_answer = solve(_text(messages[-1].get("content"))) or solve(prompt_text)
            if correct_answer is None:  # not one of our tasks: echo something deterministic
                answer = "I do not know."
            elif outcome.correct:
                answer = correct_answer
            else:
                answer = wrong_answer(correct_answer, uniform(self.seed, meta["x-mock-deployment"], chash, 0, "wrong"))
            content = render_reply(messages, answer) if chat else answer
            p_tok, c_tok = tokens(prompt_text), tokens(content)
            cost = behaviour.cost_usd(p_tok, c_tok)
            meta["x-mock-cost-usd"] = f"{cost:.10f}"
            meta["x-mock-correct"] = "1" if correct_answer is not None and answer == correct_answer else "0"
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": content}
            else:
                choice["text"] = content
            plan = Plan(
                "respond",
                200,
                {
                    "id": f"{'chatcmpl' if chat else 'cmpl'}-{chash[:12]}{meta['x-mock-attempt']}",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": 1_790_000_000,
                    "model": model,
                    "choices": [choice],
                    "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok},
                    "x_mock": {"cost_usd": cost, "correct": meta["x-mock-correct"] == "1"},
                },
            )
        plan.delay_s = outcome.delay_s
        plan.headers.update(meta)
        return plan

    def _count(self, deployment: str, outcome: Outcome, plan: Plan) -> None:
        with self._lock:
            s = self._stats[deployment]
            s["requests"] += 1
            s[outcome.status] += 1
            if outcome.status == "ok":
                usage = plan.body["usage"]
                s["prompt_tokens"] += usage["prompt_tokens"]
                s["completion_tokens"] += usage["completion_tokens"]
                s["cost_usd"] += plan.body["x_mock"]["cost_usd"]
                s["correct"] += plan.body["x_mock"]["correct"]


# --------------------------------------------------------------------------- HTTP layer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the OpenAI client expects
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle + delayed ACK add
        # ~40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        self.server.track(self.connection, False)

    def do_GET(self) -> None:
        provider = self.server.provider
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            data = [{"id": d, "object": "model", "owned_by": "mock"} for d in sorted(provider.scenario.deployments)]
            self._send(200, {"object": "list", "data": data})
        elif path == "/stats":
            self._send(200, {"scenario": provider.scenario.name, "seed": provider.seed,
                             "elapsed_s": provider.elapsed(), "deployments": provider.stats()})
        elif path == "/healthz":
            self._send(200, {"ok": True})
        else:
            self._send(404, {"error": {"message": f"no such endpoint: {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            payload = json.loads(raw or b"null")
        except ValueError as exc:
            self._send(400, {"error": {"message": f"invalid JSON: {exc}", "type": "invalid_request_error"}})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        plan = self.server.provider.plan(self.path, headers, payload)
        stopped = self.server.stopping.wait(plan.delay_s) if plan.delay_s > 0 else False
        if plan.action == "reset" or stopped:
            # SO_LINGER 0 makes close() send RST: the client sees "connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        self._send(plan.status, plan.body, plan.headers)

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (e.g. timed out during a hang)
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], provider: MockProvider) -> None:
        super().__init__(address, _Handler)
        self.provider = provider
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._conn_lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def close_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:  # wake handler threads parked in keep-alive reads
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class MockServer:
    """The mock provider over HTTP on ``host``:``port`` (0 = a free port), in a background
    thread. Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        start: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.provider = MockProvider(scenario, seed, clock, start)
        self._server = _Server((host, port), self.provider)
        # The address bound (port 0 picks a free one).  Read from the socket, which gives
        # the host as str; ``server_address`` is typed as if it could be bytes.
        bound: tuple[str, int] = self._server.socket.getsockname()[:2]
        self.host, self.port = bound
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    def api_base(self, deployment: str | None = None) -> str:
        """The OpenAI ``api_base`` to give a client: shared (``.../v1``, deployment chosen by
        model name) or per deployment (``.../d/{deployment}/v1``)."""
        return f"{self.url}/v1" if deployment is None else f"{self.url}/d/{deployment}/v1"

    def start(self) -> MockServer:
        """Serve in a daemon thread; returns self. Ready to accept when this returns."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"mock-provider:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: wakes sleeping and hanging handlers (their clients see a reset),
        closes open connections and the listening socket. Idempotent."""
        self._server.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def selfbench(n: int, threads: int = 8) -> dict[str, float]:
    """Overhead of the mock itself: ``n`` zero-latency chat requests from ``threads``
    keep-alive httpx clients; returns requests/s and client-seen p50/p99 in ms."""
    import httpx  # only needed here; the server itself is stdlib-only

    from adaptd.daemon.demo.scenarios import Phase, make_tasks

    instant = Behaviour(latency_ms=0, latency_sigma=0, quality=1.0)
    tasks = make_tasks(n, seed=0)
    latencies: list[float] = []
    lock = threading.Lock()
    with MockServer(Scenario("selfbench", "", 0, {"a": [Phase(0, instant)]}, best="a")) as server:

        def worker(k: int) -> None:
            local = []
            with httpx.Client(base_url=server.api_base()) as client:
                for task in tasks[k::threads]:
                    t0 = time.perf_counter()
                    client.post("/chat/completions", json={
                        "model": "a", "messages": [{"role": "user", "content": task.question}]}).raise_for_status()
                    local.append(time.perf_counter() - t0)
            with lock:
                latencies.extend(local)

        t0 = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = time.perf_counter() - t0
    latencies.sort()
    return {"requests": n, "threads": threads, "req_per_s": round(n / wall, 1),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 2),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="outage_best", help="one of: " + ", ".join(SCENARIOS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every scripted time")
    parser.add_argument("--list", action="store_true", help="list scenarios and exit")
    parser.add_argument("--selfbench", type=int, default=0, metavar="N",
                        help="measure the server's own overhead with N zero-latency requests and exit")
    parser.add_argument("--threads", type=int, default=8, help="client threads for --selfbench")
    args = parser.parse_args(argv)
    if args.selfbench:
        print(json.dumps(selfbench(args.selfbench, args.threads)))
        return 0
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name:22} {s.duration_s:6.0f}s  {s.description}")
        return 0
    if args.scenario not in SCENARIOS:
        parser.error(f"unknown scenario {args.scenario!r}; choose from {', '.join(SCENARIOS)}")
    scenario = SCENARIOS[args.scenario]
    if args.time_scale != 1.0:
        scenario = scenario.scaled(args.time_scale)
    server = MockServer(scenario, args.seed, host=args.host, port=args.port).start()
    print(json.dumps({"url": server.url, "api_base": server.api_base(), "scenario": scenario.name,
                      "deployments": sorted(scenario.deployments)}), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())  # `kill PID` stops cleanly too
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
