"""The dashboard app: wiring only.  Workers fetch and stream; screens render messages.

``make_app`` is the one factory the CLI, the demo and the tests use.  Two workers run
for the app's life:

- *poll*: ``DaemonClient.snapshot()`` every ``poll_s`` seconds (at once after an action
  or ``ctrl+r``), posting ``DataLoaded``; on failure it posts ``DaemonUnreachable`` and
  retries with exponential backoff, so the dashboard reconnects by itself;
- *stream*: follows ``/v1/stream`` and posts one ``StreamEvent`` per event, resuming
  after the last offset it saw when the connection comes back.

Admin actions run in their own worker and post ``ActionFinished``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from textual import work
from textual.app import App, ScreenStackError, UnknownModeError
from textual.binding import Binding
from textual.screen import Screen

from adaptd.tui.client import ActionRefused, Backoff, DaemonClient, DaemonDown
from adaptd.tui.commands import DashCommands
from adaptd.tui.messages import ActionFinished, ActionResult, DaemonUnreachable, DataLoaded, StreamEvent
from adaptd.tui.screens import SCREENS
from adaptd.tui.screens.base import DashScreen
from adaptd.tui.screens.tail import TailScreen
from adaptd.tui.viewmodel import DashData, tail_line
from adaptd.tui.widgets import ConfirmScreen

#: Events the live tail keeps (oldest dropped first).
TAIL_LINES = 2000


def utc_clock() -> str:
    """Wall-clock ``HH:MM:SS`` UTC: when data arrived (tests inject a fixed clock)."""
    return dt.datetime.now(dt.UTC).strftime("%H:%M:%S")


class DashApp(App):
    """``adaptd dash``: one daemon at ``url``, six screens, keyboard first."""

    TITLE = "adaptd"
    MODES: ClassVar[dict[str, str | Callable[[], Screen]]] = dict(SCREENS)
    COMMANDS = App.COMMANDS | {DashCommands}
    BINDINGS = [
        Binding("1", "switch_mode('overview')", "Overview"),
        Binding("2", "switch_mode('routes')", "Routes"),
        Binding("3", "switch_mode('signals')", "Signals"),
        Binding("4", "switch_mode('adaptations')", "Adaptations"),
        Binding("5", "switch_mode('optimizer')", "Optimizer"),
        Binding("6", "switch_mode('tail')", "Tail"),
        Binding("question_mark", "help", "Help"),
        Binding("ctrl+r", "refresh_now", "Refresh", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, url: str, token: str | None = None, *, poll_s: float = 2.0, stream: bool = True,
                 clock: Callable[[], str] = utc_clock, backoff: Backoff | None = None, window: str = "1m",
                 label: str | None = None) -> None:
        super().__init__()
        self.url, self.poll_s, self.stream_enabled, self.clock = url, poll_s, stream, clock
        #: What the banner calls the daemon (default: its URL; a demo may say "demo daemon").
        self.label = label or url
        self.client = DaemonClient(url, token, window=window)
        self.backoff = backoff or Backoff()
        b = self.backoff
        self.stream_backoff = Backoff(base=b.base, factor=b.factor, cap=b.cap, jitter=b.jitter, rng=b.rng)
        self.data: DashData | None = None
        #: True while the daemon is unreachable (the last data stays on screen).
        self.stale = False
        self.loaded_at: str | None = None
        self.problem = ""
        self.tail: deque[tuple[str, dict[str, Any]]] = deque(maxlen=TAIL_LINES)
        #: Every admin action's outcome, oldest first (what the notifications said).
        self.results: list[ActionResult] = []
        #: Refreshes applied, and reconnections after the daemon was down.
        self.refreshes = self.reconnects = 0
        self._wake = asyncio.Event()
        self._offset: int | None = None

    # ------------------------------------------------------------------ life cycle

    def on_load(self) -> None:
        # Fetch while the first screen is being built: start-up is import + max(fetch, mount).
        self.poll()
        if self.stream_enabled:
            self.follow()

    def on_mount(self) -> None:
        self.switch_mode("overview")

    async def on_unmount(self) -> None:
        await self.client.aclose()

    def banner_text(self) -> str:
        """What the connection banner says now."""
        if self.stale:
            since = f"last state from {self.loaded_at}" if self.loaded_at else "no data yet"
            return f"✖ daemon unreachable ({self.label}: {self.problem}) · {since} (stale) · reconnecting…"
        if self.loaded_at is None:
            return f"connecting to {self.label}…"
        return f"● {self.label} · updated {self.loaded_at}"

    def _current(self) -> Screen | None:
        """The active screen, or None before the first one is mounted (the workers start
        earlier, so their first messages can arrive before it)."""
        try:
            return self.screen
        except (ScreenStackError, UnknownModeError):
            return None

    def _sync_screen(self) -> None:
        screen = self._current()
        if isinstance(screen, DashScreen):
            screen.sync()

    # ------------------------------------------------------------------ workers

    @work(exclusive=True, group="poll")
    async def poll(self) -> None:
        """Refresh forever: every ``poll_s`` while up, with backoff while down."""
        while True:
            self._wake.clear()  # a wake-up during the fetch below triggers the next one at once
            try:
                data = await self.client.snapshot()
            except (DaemonDown, ActionRefused) as exc:
                delay = self.backoff.next_delay()
                reason = str(exc)
                if isinstance(exc, ActionRefused) and exc.status in (401, 403):  # say what to fix
                    reason = f"HTTP {exc.status}: {exc.detail} (check --token)"
                self.post_message(DaemonUnreachable(reason, delay))
            else:
                self.backoff.reset()
                self.post_message(DataLoaded(data, self.clock()))
                delay = self.poll_s
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    @work(exclusive=True, group="stream")
    async def follow(self) -> None:
        """Follow the live tail forever, reconnecting with backoff."""
        while True:
            try:
                async for offset, event in self.client.stream(
                        from_offset=None if self._offset is None else self._offset + 1):
                    self.stream_backoff.reset()
                    if offset is not None:
                        self._offset = offset
                    self.post_message(StreamEvent(offset, event))
                delay = self.stream_backoff.next_delay()
            except DaemonDown:
                delay = self.stream_backoff.next_delay()
            await asyncio.sleep(delay)  # reconnect delay (backoff), not a wait for work

    @work(group="actions")
    async def _act(self, label: str, path: str, body: dict[str, Any] | None) -> None:
        try:
            answer = await self.client.post(path, body)
        except ActionRefused as exc:
            result = ActionResult(label, False, f"{label} refused ({exc.status}): {exc.detail}")
        except DaemonDown as exc:
            result = ActionResult(label, False, f"{label} failed: daemon unreachable ({exc})")
        else:
            result = ActionResult(label, True, f"{label}: done ({answer.get('id', 'ok')})")
        self.post_message(ActionFinished(result))

    # ------------------------------------------------------------------ messages

    def on_data_loaded(self, message: DataLoaded) -> None:
        if self.stale:
            self.reconnects += 1
        self.data, self.loaded_at, self.stale, self.problem = message.data, message.at, False, ""
        self.refreshes += 1
        self._sync_screen()

    def on_daemon_unreachable(self, message: DaemonUnreachable) -> None:
        self.stale, self.problem = True, message.reason
        self._sync_screen()

    def on_stream_event(self, message: StreamEvent) -> None:
        line = tail_line(message.event)
        self.tail.append((line, message.event))
        screen = self._current()
        if isinstance(screen, TailScreen):
            screen.add(line, message.event)

    def on_action_finished(self, message: ActionFinished) -> None:
        result = message.result
        self.results.append(result)
        self.notify(result.text, severity="information" if result.ok else "error", timeout=8)
        follow_up = "action_succeeded" if result.ok else "action_failed"
        if hasattr(self.screen, follow_up):  # a screen that keeps the outcome in view
            getattr(self.screen, follow_up)(result.text)
        self.action_refresh_now()

    # ------------------------------------------------------------------ actions

    def request_action(self, label: str, path: str, body: dict[str, Any] | None = None, *,
                       confirm: str | None = None) -> None:
        """POST an admin action; when ``confirm`` is given, only after the user says yes."""
        if confirm is None:
            self._act(label, path, body)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._act(label, path, body)
            else:
                self.results.append(ActionResult(label, False, f"{label}: cancelled"))

        self.push_screen(ConfirmScreen(confirm), answered)

    def action_refresh_now(self) -> None:
        self._wake.set()

    def action_help(self) -> None:
        from adaptd.tui.help import HelpScreen  # Markdown is ~60 ms of imports: only when asked for

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


def make_app(url: str, token: str | None = None, **kwargs: Any) -> DashApp:
    """The dashboard for the daemon at ``url`` (keyword arguments: see ``DashApp``)."""
    return DashApp(url, token, **kwargs)
