"""Typed messages the workers post to the app (the only way I/O results reach widgets)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from adaptd.tui.viewmodel import DashData


class DataLoaded(Message):
    """A full refresh arrived; ``at`` is the injected clock's label for it."""

    def __init__(self, data: DashData, at: str) -> None:
        super().__init__()
        self.data, self.at = data, at


class DaemonUnreachable(Message):
    """A refresh failed; ``reason`` says why, ``retry_in`` when the next try is (s)."""

    def __init__(self, reason: str, retry_in: float) -> None:
        super().__init__()
        self.reason, self.retry_in = reason, retry_in


class StreamEvent(Message):
    """One event of the live tail, with its log offset."""

    def __init__(self, offset: int | None, event: dict[str, Any]) -> None:
        super().__init__()
        self.offset, self.event = offset, event


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an admin action did: ``ok`` and the daemon's answer or refusal in ``text``."""

    label: str
    ok: bool
    text: str


class ActionFinished(Message):
    """An admin action was answered (or failed to be)."""

    def __init__(self, result: ActionResult) -> None:
        super().__init__()
        self.result = result
