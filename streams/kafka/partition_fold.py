"""One partition's processing as a pure fold: ``(state, records) -> (state, outputs)``.

This is what a Faust agent runs per partition of the events topic (streams.faust_app): the
same steps as the embedded runtime's loop (parse the source kinds, compute per-event
watermarks, run source processors then derived ones), with the partition's position and
watermark kept inside the state, so that the state, stored in a Faust table, says by
itself which records it already holds:

- the fold takes Kafka messages (``Record``s with the Kafka offset), each holding one
  event or, packed by the daemon's log (``streams.kafka.packing``), several; the
  position is a Kafka offset, so a message is folded whole or not at all;
- messages below ``state.position`` are skipped (a redelivery after a crash or a
  rebalance is a no-op, never counted twice);
- outputs carry deterministic ids, so re-running records the state had not yet stored
  gives the very same derived events, which the projector keeps once.

Watermarks are per partition here (the embedded runtime has one for its single
partition): a partition whose events stop arriving keeps its windows open until new ones
come.  No wall clock, no I/O.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adaptd.streams.kafka.packing import log_offset, unpack
from adaptd.streams.log.base import Record
from adaptd.streams.processors.base import NO_WATERMARK
from adaptd.streams.processors.pipeline import Pipeline

logger = logging.getLogger("adaptd.partition_fold")


@dataclass(slots=True)
class PartitionState:
    """Everything one partition's processing depends on (pickled into a Faust table)."""

    config: dict[str, Any]
    #: The Kafka offset of the next message to fold.
    position: int = 0
    high: int = NO_WATERMARK
    states: dict[str, Any] = field(default_factory=dict)
    #: Events folded (a packed message holds several).
    records: int = 0


def unpacked(messages: Sequence[Record]) -> list[Record]:
    """The events of ``messages`` (Kafka offsets) as records, in order, with the packed
    layout's log offsets (see ``streams.kafka.packing``); a plain message is one event."""
    out: list[Record] = []
    for m in messages:
        values = unpack(m.value)
        if values is None:
            out.append(Record(log_offset(m.offset, 0, 1), m.value, m.partition, m.timestamp_ms))
            continue
        n, k, partition, stamp = len(values), m.offset, m.partition, m.timestamp_ms
        out += [Record(log_offset(k, i, n), v, partition, stamp) for i, v in enumerate(values)]
    return out


def next_run(position: int, records: Sequence[Record]) -> tuple[list[Record], int]:
    """The records a state at ``position`` can fold next, in delivery order.

    Returns:
        ``(run, used)``: ``run`` is the unbroken run of offsets ``position, position + 1,
        ...`` among ``records`` (records below it, and repeats, are left out: already
        folded); ``used`` is how many of ``records`` come before the first one past the
        run's next offset (a hole: a record missing from the delivery), ``len(records)``
        without a hole.  ``([], 0)`` for no records.
    """
    run: list[Record] = []
    expected = position
    for i, r in enumerate(records):
        if r.offset > expected:
            return run, i
        if r.offset == expected:
            run.append(r)
            expected += 1
    return run, len(records)


class PartitionFold:
    """Folds records of one partition through ``processors`` (source ones, then derived)."""

    def __init__(self, processors: Sequence[Any], *, lateness_s: float = 5.0,
                 max_future_s: float | None = 0.0) -> None:
        """Raises:
            ValueError: duplicate names, or a derived processor before (or without) its
                upstream (the same rules as the embedded runtime).
        """
        self.pipeline = Pipeline(processors, lateness_s=lateness_s, max_future_s=max_future_s)
        self.processors = self.pipeline.processors
        self.config = self.pipeline.config()

    def initial(self) -> PartitionState:
        """The state before any record."""
        return PartitionState(config=self.config, states=self.pipeline.initial_states())

    def fold(self, state: PartitionState, records: Sequence[Record]) -> tuple[PartitionState, list[tuple[str, dict]]]:
        """Process the messages at or after ``state.position`` (in offset order), each
        with every event it holds.

        Returns:
            The new state (``state`` itself, updated in place) and the outputs as
            ``(processor name, event)`` pairs in emission order; ``[]`` when every message
            was already folded in.

        Raises:
            Exception: a processor failed; ``state`` may be half-updated, so the caller
                must drop it and reload the stored one.
        """
        fresh = [r for r in records if r.offset >= state.position]
        if not fresh:
            return state, []
        events = unpacked(fresh)
        step = self.pipeline.step(state.states, state.high, events)
        state.high = step.high
        state.position = fresh[-1].offset + 1
        state.records += len(events)
        return state, step.outputs

    def dumps(self, state: PartitionState) -> bytes:
        """The state's bytes (pickle protocol 5, like the embedded snapshots)."""
        return pickle.dumps(state, protocol=5)

    def loads(self, data: bytes | None) -> PartitionState:
        """The state stored as ``data``; a fresh one for None.

        A state stored under another configuration is kept at its position but its
        processor states restart empty (the records before it are not re-read, even
        when redelivered: to rebuild the states, drop the stored ones, i.e. the table's
        changelog, and reset the workers' consumer group to the earliest offset), and
        this is logged.
        """
        if data is None:
            return self.initial()
        state = pickle.loads(data)
        if state.config != self.config:
            logger.warning("processor configuration changed since partition state at %d was stored;"
                           " restarting processor state there", state.position)
            fresh = self.initial()
            fresh.position, fresh.records = state.position, state.records
            return fresh
        return state
