"""The processor contract: pure, deterministic, keyed functions over event time.

A *source processor* reads source events (``execution``, ``lm_call``, ``feedback``,
``route_decision``) in columnar batches; a *derived processor* reads the outputs of
another processor (e.g. the anomaly detector reads the history processor's closed
windows).  Both have one method that matters::

    process(state, batch, watermark) -> (state, outputs)

Rules every processor keeps (they are what make replay equal live and let the same code
run partitioned by key, as Faust agents):

- **Pure and deterministic.**  No wall clock, no global state, no I/O; randomness only
  from a seed held in the state.  ``process`` may update ``state`` in place for speed and
  return it: the runtime treats the state it passed in as consumed.
- **Event time.**  Time comes from the events (``EventBatch.ts``) and from the watermark
  the runtime computes (``EventBatch.wm`` per event, ``watermark`` at the batch's end).
- **Independent of batch boundaries.**  Splitting the same sequence of events into other
  batches gives the same outputs (ids and values) in the same order per key.  Lateness
  is therefore judged per event against ``EventBatch.wm`` (the watermark when that event
  arrived), never against the batch-end watermark.
- **Keyed.**  Outputs for a key depend only on that key's events and the watermark, so
  partitioning the stream by key gives the same outputs.
- **Deterministic ids.**  Every output's ``id`` is ``adaptd.streams.events.derived_id`` of what
  identifies it (e.g. processor name + key + window size + window start): a re-run after
  a crash re-emits the very same events, which projection stores once.
- **Serialisable state.**  The runtime snapshots states with ``pickle`` (protocol 5), so a
  state must be plain data: dataclasses, dicts, lists, tuples, str / int / float / None
  and numpy arrays; no locks, files, lambdas or references to the processor object.

Outputs are JSON-ready event dicts (``id`` and datetimes as ISO strings) of a kind the
runtime never reads back as a source kind, with ``source`` set to ``adaptd.<name>`` (how
replay recognises them to compare a re-run with what the live processors appended).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from adaptd.streams.events import TICK_KIND

#: The kinds a source processor may read; the runtime never parses any other kind
#: (in particular not the derived kinds processors emit, so there are no loops).
SOURCE_KINDS: tuple[str, ...] = ("execution", "lm_call", "feedback", "route_decision")
#: ``EventBatch.kind`` holds these codes.
KIND_CODE: dict[str, int] = {k: i for i, k in enumerate(SOURCE_KINDS)}
EXECUTION, LM_CALL, FEEDBACK, ROUTE_DECISION = (KIND_CODE[k] for k in SOURCE_KINDS)
#: The record the daemon's clock appends while live traffic is quiet (see
#: ``streams.processors.ticker``).  The runtime parses it only to move the watermark, in
#: log order like any event, and takes it out before processors see the batch.
TICK = len(SOURCE_KINDS)
#: The codes the runtime's parse knows: the source kinds and the tick.
PARSE_CODE: dict[str, int] = {**KIND_CODE, TICK_KIND: TICK}

#: Watermark before any event was seen (far in the past, yet safe from int64 overflow).
NO_WATERMARK = -(2**62)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_us(value: dt.datetime | str) -> int:
    """Microseconds since the Unix epoch of an aware (or naive = UTC) datetime or ISO string."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> dt.datetime:
    """The UTC datetime ``us`` microseconds after the Unix epoch."""
    return _EPOCH + dt.timedelta(microseconds=int(us))


def iso_us(us: int) -> str:
    """ISO 8601 text of ``us`` as the daemon writes event times (``+00:00`` suffix)."""
    return from_us(us).isoformat()


@dataclass(slots=True)
class Cat:
    """A dictionary-encoded string column: ``values[codes[i]]``, code -1 for null."""

    codes: np.ndarray
    values: list[str]

    def get(self, i: int) -> str | None:
        """The value of row ``i`` (None for null)."""
        c = int(self.codes[i])
        return None if c < 0 else self.values[c]

    @classmethod
    def from_list(cls, items: Sequence[str | None]) -> Cat:
        """Encode a list of strings / None (values in order of first appearance)."""
        index: dict[str, int] = {}
        codes = np.fromiter(
            (-1 if s is None else index.setdefault(s, len(index)) for s in items), dtype=np.int32, count=len(items)
        )
        return cls(codes, list(index))

    def take(self, rows: np.ndarray) -> Cat:
        """The rows ``rows`` (an index or boolean array); values are shared."""
        return Cat(self.codes[rows], self.values)


@dataclass(slots=True)
class EventBatch:
    """Source events in columns, in log order.  Missing numbers are NaN, strings null.

    Attributes:
        kind: ``KIND_CODE`` of each event (int8).
        id, execution_id: the event ids and feedback / lm_call parent ids (str or None).
        ts: event time, microseconds since the epoch (int64).
        wm: the watermark right after each event arrived, in microseconds (set by the
            runtime; an event is late for a window that ends at or before its ``wm``).
        status_error: True for ``status == "error"``.
        cache_hit: -1 unknown, 0 miss, 1 hit (int8).
        offset, append_ms: the log record's offset and the log's append time (ms).
        extra: top-level fields some processor asked for by name (``columns``) beyond
            the fixed columns: per field, each row's decoded JSON value (None if absent).
            Keys starting with ``_`` are per batch, not per row: ``_raw`` holds the
            ``(offset, event)`` pairs of the derived kinds asked for by ``raw_kinds``.
    """

    kind: np.ndarray
    id: list[str]
    ts: np.ndarray
    tenant: Cat
    program: Cat
    module: Cat
    route: Cat
    model: Cat
    error_type: Cat
    status_error: np.ndarray
    duration_ms: np.ndarray
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    cost_usd: np.ndarray
    cache_hit: np.ndarray
    score: np.ndarray
    probability: np.ndarray
    execution_id: list[str | None]
    offset: np.ndarray
    append_ms: np.ndarray
    wm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    extra: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.kind)

    @classmethod
    def empty(cls) -> EventBatch:
        """A batch of no events."""
        return cls.from_events([])

    @classmethod
    def from_events(cls, events: Sequence[Mapping[str, Any]], offsets: Sequence[int] | None = None,
                    append_ms: Sequence[int] | None = None, columns: Iterable[str] = (),
                    codes: Mapping[str, int] = KIND_CODE) -> EventBatch:
        """Build a batch from event dicts (the slow path: tests, and logs JSON can't bulk-parse).

        Events of kinds outside ``codes`` (the source kinds) are skipped.  ``ts`` may be a datetime
        or an ISO string; ``offsets`` default to 0, 1, ...; ``append_ms`` to 0 (no bound
        on how far event time runs ahead of the log).  ``columns`` name the ``extra``
        fields to carry (as they are in the events).

        Raises:
            KeyError, ValueError, TypeError: an event lacks ``id`` / ``ts`` or has a bad one.
        """
        rows = [(i, e) for i, e in enumerate(events) if e.get("kind") in codes]
        n = len(rows)
        offs = list(range(len(events))) if offsets is None else list(offsets)
        appended = [0] * len(events) if append_ms is None else list(append_ms)

        def floats(name: str) -> np.ndarray:
            return np.array([np.nan if e.get(name) is None else float(e[name]) for _, e in rows], np.float64)

        def text(value: Any) -> str | None:
            return None if value is None else str(value)

        def strings(name: str) -> Cat:
            return Cat.from_list([text(e.get(name)) for _, e in rows])

        cache = [e.get("cache_hit") for _, e in rows]
        batch = cls(
            kind=np.array([codes[e["kind"]] for _, e in rows], np.int8),
            id=[str(e["id"]) for _, e in rows],
            ts=np.array([to_us(e["ts"]) for _, e in rows], np.int64),
            status_error=np.array([e.get("status") == "error" for _, e in rows], bool),
            cache_hit=np.array([-1 if c is None else int(bool(c)) for c in cache], np.int8),
            execution_id=[text(e.get("execution_id")) for _, e in rows],
            offset=np.array([offs[i] for i, _ in rows], np.int64),
            append_ms=np.array([appended[i] for i, _ in rows], np.int64),
            tenant=strings("tenant"), program=strings("program"), module=strings("module"), route=strings("route"),
            model=strings("model"), error_type=strings("error_type"),
            duration_ms=floats("duration_ms"), tokens_in=floats("tokens_in"), tokens_out=floats("tokens_out"),
            cost_usd=floats("cost_usd"), score=floats("score"), probability=floats("probability"),
            extra={name: [e.get(name) for _, e in rows] for name in columns},
        )
        # tenant defaults like the model's default: canonical events always carry it.
        if n and (batch.tenant.codes < 0).any():
            batch.tenant = Cat.from_list([e.get("tenant") or "default" for _, e in rows])
        return batch

    def take(self, rows: np.ndarray) -> EventBatch:
        """The events selected by ``rows`` (index or boolean array), in order."""
        index = np.flatnonzero(rows) if rows.dtype == bool else rows
        pick = index.tolist()
        return EventBatch(
            kind=self.kind[index], id=[self.id[i] for i in pick], ts=self.ts[index],
            tenant=self.tenant.take(index), program=self.program.take(index), module=self.module.take(index),
            route=self.route.take(index), model=self.model.take(index), error_type=self.error_type.take(index),
            status_error=self.status_error[index], duration_ms=self.duration_ms[index],
            tokens_in=self.tokens_in[index], tokens_out=self.tokens_out[index], cost_usd=self.cost_usd[index],
            cache_hit=self.cache_hit[index], score=self.score[index], probability=self.probability[index],
            execution_id=[self.execution_id[i] for i in pick], offset=self.offset[index],
            append_ms=self.append_ms[index], wm=self.wm[index] if len(self.wm) == len(self.kind) else self.wm,
            extra={name: values if name.startswith("_") else [values[i] for i in pick]
                   for name, values in self.extra.items()},
        )


@runtime_checkable
class SourceProcessor(Protocol):
    """Reads source events.  See the module docstring for the rules."""

    #: Stable name: part of derived ids, snapshot keys and stats.
    name: str
    #: The source kinds it reads (a subset of ``SOURCE_KINDS``); it is given batches that
    #: may hold other source kinds too and ignores them.
    kinds: frozenset[str]
    # Optional (not declared here, so processors without it still match the protocol):
    # ``columns: frozenset[str]``, top-level event fields it needs beyond the fixed
    # columns (e.g. ``inputs``); the runtime then parses them into ``EventBatch.extra``.

    def initial_state(self) -> Any:
        """The state before any event."""

    def process(self, state: Any, batch: EventBatch, watermark: int) -> tuple[Any, list[dict[str, Any]]]:
        """Fold ``batch`` into ``state``; emit what the watermark (µs) has made final."""

    def config(self) -> dict[str, Any]:
        """What the state's meaning depends on (a snapshot taken under another config is
        discarded and the processor restarts from the beginning of the log)."""

    def metrics(self, state: Any) -> dict[str, Any]:
        """Counters for ``/v1/stats`` (JSON-ready; must not modify ``state``)."""


@runtime_checkable
class DerivedProcessor(Protocol):
    """Reads the outputs of the processor named ``upstream`` (extension point for the
    anomaly and drift detectors, which consume the history processor's closed windows).

    ``process`` is called once per runtime step, after ``upstream``, with the events it
    emitted in that step (possibly none) and the watermark.  Windows arrive in a
    deterministic order (``window_end``, then window size, then key), so a derived
    processor that keeps the rules above is itself independent of batch boundaries.
    """

    name: str
    upstream: str

    def initial_state(self) -> Any: ...

    def process(self, state: Any, events: list[dict[str, Any]], watermark: int) -> tuple[Any, list[dict[str, Any]]]: ...

    def config(self) -> dict[str, Any]: ...

    def metrics(self, state: Any) -> dict[str, Any]: ...
