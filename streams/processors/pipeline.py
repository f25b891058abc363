"""The processors of one runtime as a pipeline: which kinds they read, and one fold step.

The embedded runtime (``adaptd.streams.processors.runtime``) and a Kafka partition's fold
(``adaptd.streams.kafka.partition_fold``) run exactly this code, so both modes derive the same events
from the same records: parse the source kinds, compute per-event watermarks, run the
source processors on the batch and each derived one on its upstream's outputs.
Tick records (the daemon's clock, see ``ticker``) count for the watermark in log order
like events, then leave the batch: processors never see them.
Pure: no clock, no I/O; the states are updated in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adaptd.streams.processors.base import TICK, TICK_KIND
from adaptd.streams.processors.parse import parse_records, raw_events
from adaptd.streams.processors.windows import US, watermark_of, watermarks


@dataclass(slots=True)
class Step:
    """What one fold step gave: the new high event time, the outputs as ``(processor
    name, event)`` pairs in emission order, and the parsed events and unreadable records."""

    high: int
    outputs: list[tuple[str, dict[str, Any]]]
    events: int
    unreadable: int
    #: The highest event time of the step's events (ticks left out), or None without events.
    live_high: int | None = None


class Pipeline:
    """Processors in order (source ones, then each derived one after its upstream)."""

    def __init__(self, processors: Sequence[Any], *, lateness_s: float, max_future_s: float | None) -> None:
        """``lateness_s`` is how far the watermark trails the highest event time;
        ``max_future_s`` how far an event time may run ahead of its record's append time
        and still count for the watermark (None: no bound).  The watermark is shared by
        every tenant and key, so the daemon keeps ``max_future_s`` below ``lateness_s``
        (0 by default): no client's clock can make another tenant's live events late.

        Raises:
            ValueError: duplicate names, or a derived processor before (or without) its
                upstream.
        """
        names: list[str] = []
        for p in processors:
            if p.name in names:
                raise ValueError(f"two processors are named {p.name!r}")
            upstream = getattr(p, "upstream", None)
            if upstream is not None and upstream not in names:
                raise ValueError(f"processor {p.name!r} reads {upstream!r}, which must come before it")
            names.append(p.name)
        self.processors = list(processors)
        sources = [p for p in processors if getattr(p, "upstream", None) is None]
        self.kinds = frozenset().union(*(p.kinds for p in sources)) if sources else frozenset()
        self._parse_kinds = self.kinds | {TICK_KIND}  # ticks move the watermark, then leave the batch
        self.columns = frozenset().union(*(getattr(p, "columns", frozenset()) for p in sources))
        # Derived kinds a source processor also reads (the routing policy: signals and
        # admin actions), handed over as decoded dicts in ``batch.extra["_raw"]``.
        self.raw_kinds = frozenset().union(*(getattr(p, "raw_kinds", frozenset()) for p in sources))
        self.lateness_us = int(round(lateness_s * US))
        self.max_future_us = None if max_future_s is None else int(round(max_future_s * US))

    def config(self) -> dict[str, Any]:
        """What the states depend on: a stored state with another config is not reused."""
        return {"lateness_us": self.lateness_us, "max_future_us": self.max_future_us,
                "processors": {p.name: p.config() for p in self.processors}}

    def initial_states(self) -> dict[str, Any]:
        """Each processor's state before any record."""
        return {p.name: p.initial_state() for p in self.processors}

    def watermark(self, high: int) -> int:
        """The watermark that trails ``high`` by the allowed lateness."""
        return watermark_of(high, self.lateness_us)

    def step(self, states: dict[str, Any], high: int, records: Sequence[Any]) -> Step:
        """Fold ``records`` (non-empty, in offset order) into ``states``, in place.

        Raises:
            Exception: a processor failed; ``states`` may be half-updated, so the caller
                must drop them and reload stored ones.
        """
        parsed = parse_records(records, self._parse_kinds, self.columns)
        batch = parsed.batch
        if self.raw_kinds:
            batch.extra["_raw"] = raw_events(records, self.raw_kinds)
        batch.wm, new_high = watermarks(batch.ts, batch.append_ms, high, self.lateness_us, self.max_future_us)
        ticks = batch.kind == TICK
        if ticks.any():
            batch = batch.take(~ticks)
        watermark = watermark_of(new_high, self.lateness_us)
        produced: dict[str, list[dict[str, Any]]] = {}
        outputs: list[tuple[str, dict[str, Any]]] = []
        for p in self.processors:
            upstream = getattr(p, "upstream", None)
            given = batch if upstream is None else produced[upstream]
            states[p.name], produced[p.name] = p.process(states[p.name], given, watermark)
            outputs += [(p.name, o) for o in produced[p.name]]
        live_high = int(batch.ts.max()) if len(batch) else None
        return Step(new_high, outputs, len(batch), parsed.unreadable, live_high)
