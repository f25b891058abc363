"""The demo's moving parts: a daemon (``adaptd up`` in a temporary directory), the mock
provider, and the three programs' workload on the SDK (``AdaptiveLM``, ``AdaptiveModule``,
``AdaptdCallback``, feedback from grading every answer).

The daemon is a subprocess started with this interpreter; everything else runs in this
process (the mock server and one thread per workload worker). ``World`` is a context
manager: leaving it stops the workload, the mock and the daemon, whatever happened.
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adaptd.daemon.demo import story, toy
from adaptd.daemon.demo.mock_provider import MockServer
from adaptd.daemon.demo.scenarios import grade, solve
from adaptd.daemon.testing import DaemonProcess, free_port

START_TIMEOUT_S = 90.0


def _route_toml(name: str, b: Any) -> list[str]:
    return ["[[routing.routes]]", f'name = "{name}"', f'model = "openai/{name}"',
            f"cost_per_1k_in = {b.price_in_per_1k}", f"cost_per_1k_out = {b.price_out_per_1k}"]


def config_toml(duration_s: float) -> str:
    """The demo daemon's configuration: short windows (so a minute tells a story), the three
    programs' routes, and ``triage`` registered for re-optimization on the toy task."""
    sc = story.scenario(duration_s)
    lines = [
        "[processors]", "lateness_s = 1", 'drift_window = "5s"', "drift_min_executions = 60",
        "drift_reference_windows = 3", "",
        # the clients' local breakers stop most attempts on a dead route within seconds,
        # so the daemon's breaker sees few of them: trip on 3 in a row
        "[routing_policy.breaker]", "consecutive_failures = 3", "window_s = 10", "",
        "[[routing]]", 'program = "qa"', "min_samples = 10", "min_change_interval_s = 5", "latency_slo_ms = 2000",
        "objective = { quality = 1.0, cost = 0.1, latency = 0.0 }", "exploration_floor = 0.05",
        'fallbacks = { "qa-strong" = ["qa-alt", "qa-fast"] }',
    ]
    for r in story.ROUTES["qa"]:
        lines += _route_toml(r, sc.behaviour(r, 0))
    lines += ["", "[[routing]]", 'program = "support"', "min_samples = 10", "min_change_interval_s = 5",
              "latency_slo_ms = 1000", 'fallbacks = { "sup-fast" = ["sup-backup"] }']
    for r in story.ROUTES["support"]:
        lines += _route_toml(r, sc.behaviour(r, 0))
    lines += ["", "[[routing]]", 'program = "triage"', "min_samples = 10", "min_change_interval_s = 5",
              "exploration_floor = 0.0"]
    for r in story.ROUTES["triage"]:
        lines += ["[[routing.routes]]", f'name = "{r}"', f'model = "toy/{r}"']
    lines += ["", "[[optimize]]", 'program = "triage"', 'factory = "adaptd.daemon.demo.toy:make_program"',
              'metric = "adaptd.daemon.demo.toy:exact_match"', 'lm = "adaptd.daemon.demo.toy:make_lm"',
              "harvest_threshold = 0.5", "harvest_limit = 150", "budget_lm_calls = 600", "min_interval_s = 0",
              'routes = ["blue", "green"]', "canary_share = 0.3", "min_live_samples = 15"]
    return "\n".join(lines) + "\n"


class Daemon(DaemonProcess):
    """``adaptd up`` on a free port with ``config`` in ``workdir`` (started by ``start``);
    ``start`` raises ``DaemonError`` with its log's tail if it exits or does not answer
    within ``START_TIMEOUT_S``."""

    def __init__(self, workdir: Path, config: str) -> None:
        self.dir = workdir
        (workdir / "adaptd.toml").write_text(config)
        super().__init__(workdir / "data", config=workdir / "adaptd.toml", env={"ADAPTD_LOG_LEVEL": "warning"},
                         log_path=workdir / "daemon.log")
        self.port = free_port()  # known before start: the workload is configured with the URL

    def start(self, timeout: float = START_TIMEOUT_S) -> Daemon:
        super().start(timeout=timeout)
        return self


class SlotPrograms:
    """The ``triage`` variants per slot, reloaded when the daemon binds a new version to a
    slot (``GET /v1/optimization/programs/triage``); failures keep the current variants."""

    def __init__(self, url: str, program: str = "triage") -> None:
        import httpx

        self.client = httpx.Client(base_url=url, timeout=5)
        self.program = program
        self.loaded: dict[str, str | None] = {}

    def refresh(self, variants: dict[str, Any]) -> None:
        """Swap in a freshly loaded module for every slot whose bound version changed."""
        import httpx

        try:
            state = self.client.get(f"/v1/optimization/programs/{self.program}").json()
            bindings = (state.get("slots") or {}).get("bindings") or {}
            for route, binding in bindings.items():
                version = (binding or {}).get("version")
                if route not in variants or self.loaded.get(route, "base") == version:
                    continue
                module = toy.make_program()
                if version not in (None, "base"):
                    module.load_state(self.client.get(f"/v1/optimization/programs/{self.program}/versions/{version}").json())
                variants[route] = module
                self.loaded[route] = version
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return


class Workload:
    """The three programs' traffic, following the story's clock (``t0``: its start)."""

    def __init__(self, url: str, mock: MockServer, duration_s: float, t0: float, seed: int = 0) -> None:
        import adaptd.adapters as adapters

        self.url, self.mock, self.duration_s, self.t0, self.seed = url, mock, duration_s, t0, seed
        self.client = adapters.Client(url=url, spill_dir=False, schedule_delay_ms=100)
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.calls = {p: 0 for p in story.ROUTES}
        self.episodes = {e.name: e for e in story.episodes(duration_s)}
        self._threads: list[threading.Thread] = []
        self._routed: list[Any] = []  # AdaptiveLM / AdaptiveModule: their table pollers stop at close
        self._slots = SlotPrograms(url)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _after(self, name: str) -> bool:
        return self.elapsed() >= self.episodes[name].start_s

    def start(self) -> Workload:
        import dspy

        from adaptd.adapters import AdaptdCallback, AdaptiveLM, AdaptiveModule

        options = dict(client=self.client, url=self.url, poll_wait_s=5, poll_min_interval_s=0.2, max_attempts=3,
                       cooldown_s=5)
        for program in ("qa", "support"):
            routes = {r: dspy.LM(f"openai/{r}", api_base=self.mock.api_base(), api_key="demo", cache=False,
                                 num_retries=0, timeout=5) for r in story.ROUTES[program]}  # fmt: skip
            lm = AdaptiveLM(program, routes, **options)
            self._routed.append(lm)
            callback = AdaptdCallback(program=program, client=self.client)
            question = story.qa_question if program == "qa" else (
                lambda rng: story.support_question(rng, self._after("drift")))
            for i in range(3):
                self._spawn(f"{program}-{i}", lm, callback, dspy.Predict("question -> answer"), question,
                            solve, pace_s=0.0, seed=i)  # fmt: skip
        variants = {r: toy.make_program() for r in story.ROUTES["triage"]}
        module = AdaptiveModule("triage", variants, **options)
        self._routed.append(module)
        callback = AdaptdCallback(program="triage", client=self.client, capture_content=True)
        for i in range(2):
            self._spawn(f"triage-{i}", toy.ToyLM(seed=self.seed * 10 + i), callback, module,
                        lambda rng: story.triage_question(rng, self._after("quality regression")),
                        story.triage_answer, pace_s=0.1, seed=100 + i)  # fmt: skip
        refresher = threading.Thread(target=self._refresh_slots, args=(module,), name="demo-slots", daemon=True)
        refresher.start()
        self._threads.append(refresher)
        return self

    def _refresh_slots(self, module: Any) -> None:
        # The canary share and the slot's new version are published together; until the
        # new version is loaded here, the slot serves the old program, and those outcomes
        # count against the canary (a second of them can get it rolled back): poll often.
        while not self.stop.wait(0.2):
            self._slots.refresh(module.variants)

    def _spawn(self, name: str, lm: Any, callback: Any, program: Any, question: Callable[[random.Random], str],
               answer: Callable[[str], str | None], *, pace_s: float, seed: int) -> None:
        def run() -> None:
            import dspy

            rng = random.Random(f"{self.seed}:{name}:{seed}")
            key = name.split("-")[0]
            with dspy.context(lm=lm, callbacks=[callback]):
                while not self.stop.is_set():
                    q = question(rng)
                    try:
                        pred = program(question=q)
                        score = grade(pred.answer, answer(q) or "")
                        self.client.feedback(pred, score, metric="exact")
                        self.calls[key] += 1
                    except Exception as exc:  # a call that failed over every route: keep going, count it
                        if len(self.errors) < 100:
                            self.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
                    if pace_s:
                        self.stop.wait(pace_s)

        t = threading.Thread(target=run, name=f"demo-{name}", daemon=True)
        t.start()
        self._threads.append(t)

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=10)
        for routed in self._routed:
            routed.close()
        self._slots.client.close()
        self.client.shutdown(timeout=5)


class World:
    """Daemon, mock provider and workload for a demo of ``duration_s`` (context manager).

    ``workdir`` None: a temporary directory, removed at exit unless ``keep``."""

    def __init__(self, duration_s: float, *, workdir: Path | None = None, keep: bool = False, seed: int = 0) -> None:
        self.duration_s, self.seed, self.keep = duration_s, seed, keep or workdir is not None
        self._tmp = None if workdir is not None else tempfile.TemporaryDirectory(prefix="adaptd-demo-")
        self.dir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.daemon = Daemon(self.dir, config_toml(duration_s))
        self.mock: MockServer | None = None
        self.workload: Workload | None = None
        self.t0 = 0.0

    def __enter__(self) -> World:
        try:
            self.daemon.start()
            self.mock = MockServer(story.scenario(self.duration_s), self.seed).start()
            self.t0 = time.monotonic()
            self.mock.provider.start = self.t0  # the story's t=0 is the workload's start
            self.wall_t0 = time.time()
            self.workload = Workload(self.daemon.url, self.mock, self.duration_s, self.t0, self.seed).start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def summary(self) -> dict[str, Any]:
        w = self.workload
        return {"calls": dict(w.calls) if w else {}, "errors": len(w.errors) if w else 0,
                "first_errors": (w.errors[:3] if w else []), "dir": str(self.dir)}

    def __exit__(self, *exc: object) -> None:
        if self.workload is not None:
            self.workload.close()
        if self.mock is not None:
            self.mock.stop()
        self.daemon.stop()
        if self._tmp is not None and not self.keep:
            self._tmp.cleanup()


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)
