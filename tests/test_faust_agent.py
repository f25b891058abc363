"""The Faust agent, unit-tested with Faust's ``test_context()`` (no broker): per-partition
folding, state in the table, outputs to a sink, redeliveries skipped."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import orjson
import pytest
from faust.types import TP

from adaptd.streams.kafka.app import ProcessorApp, WorkerOptions
from adaptd.streams.log.base import Record
from adaptd.streams.processors.history.processor import HistoryProcessor

BASE = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC)
#: The log's append time of the records (after all their event times: no future bound).
APPENDED_MS = int(BASE.timestamp() * 1000) + 3_600_000


def execution(program: str, t: float, i: int) -> bytes:
    return orjson.dumps({"id": str(uuid.UUID(int=i)), "kind": "execution", "tenant": "acme", "program": program,
                         "ts": (BASE + dt.timedelta(seconds=t)).isoformat(), "duration_ms": 10.0})


class Collected:
    """The sink: what the agent emitted, in order."""

    def __init__(self) -> None:
        self.outputs: list[tuple[str, dict]] = []

    async def __call__(self, outputs: list[tuple[str, dict]]) -> None:
        self.outputs += outputs


class StoredStates:
    """The state sink: (partition, key) of every state stored, in order."""

    def __init__(self) -> None:
        self.stored: list[tuple[int, bytes]] = []

    async def __call__(self, partition: int, key: bytes, value: bytes) -> None:
        self.stored.append((partition, key))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_app(sink: Collected, every_records: int = 1, clock: FakeClock | None = None,
             states: StoredStates | None = None) -> ProcessorApp:
    options = WorkerOptions(batch=1000, batch_within_s=0.01, lateness_s=0.0, snapshot_every_records=every_records,
                            snapshot_every_s=60.0)
    return ProcessorApp(["127.0.0.1:1"], 4, [HistoryProcessor(["10s"])], namespace=f"unit-{uuid.uuid4().hex[:6]}",
                        options=options, sink=sink, state_sink=states or StoredStates(), clock=clock or FakeClock())


async def wait_for(condition, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):  # bounded: timeout / 10 ms polls
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met within the timeout")


def test_each_partition_is_folded_with_its_own_state_and_windows_close_on_its_events() -> None:
    sink = Collected()
    processors = make_app(sink)

    async def scenario() -> None:
        async with processors.agent.test_context() as agent:
            for i in range(20):  # 20 executions of qa on partition 1, one per second
                await agent.put(execution("qa", i, i), key=b"acme\x00qa", partition=1, wait=False)
            # test_context numbers messages across partitions; Kafka numbers each one.
            agent.sent_offset = 0
            for i in range(5):
                await agent.put(execution("triage", i, 100 + i), key=b"acme\x00triage", partition=2, wait=False)
            await wait_for(lambda: processors.counters["records"] == 25)

    asyncio.run(scenario())
    qa, triage = processors.state_of(1), processors.state_of(2)
    assert qa.records == 20 and triage.records == 5 and processors.state_of(0) is None
    windows = [e for name, e in sink.outputs if name == "history"]
    # qa's events reached t=19 s: its [0, 10) window is closed, [10, 20) is still open.
    assert [(w["program"], w["window_start"], w["count"]) for w in windows] == [("qa", BASE.isoformat(), 10)]


def test_records_below_the_stored_position_are_skipped_not_counted_twice() -> None:
    sink = Collected()
    processors = make_app(sink)
    records = [Record(i, execution("qa", i * 3, i), 0, APPENDED_MS) for i in range(10)]

    async def scenario() -> None:
        async with processors.agent.test_context():
            await processors.process_partition(0, records[:6])
            await processors.process_partition(0, records)  # 0-5 again (a redelivery), then 6-9
            await processors.process_partition(0, records)  # all of it again

    asyncio.run(scenario())
    state = processors.state_of(0)
    assert state.position == 10 and state.records == 10
    assert processors.counters["skipped"] == 6 + 10 and processors.counters["records"] == 10
    counts = {e["window_start"]: e["count"] for _, e in sink.outputs}
    # t = 0, 3, ..., 27 s: windows [0, 10) and [10, 20) are closed by t = 27 (4 + 3 events).
    assert counts == {BASE.isoformat(): 4, (BASE + dt.timedelta(seconds=10)).isoformat(): 3}
    assert len(sink.outputs) == len({e["id"] for _, e in sink.outputs})


def test_a_failing_sink_stores_nothing_so_the_batch_is_processed_again() -> None:
    processors = make_app(Collected())
    records = [Record(i, execution("qa", i * 6, i), 0, APPENDED_MS) for i in range(5)]

    async def broken(outputs: list) -> None:
        raise ConnectionError("broker gone")

    async def scenario() -> None:
        async with processors.agent.test_context():
            processors.sink = broken
            with pytest.raises(ConnectionError):
                await processors.process_partition(0, records)
            assert processors.state_of(0) is None
            retry = Collected()
            processors.sink = retry
            await processors.process_partition(0, records)
            assert processors.state_of(0).position == 5 and retry.outputs

    asyncio.run(scenario())


def test_states_are_stored_at_the_snapshot_cadence_and_a_takeover_resumes_from_the_stored_one() -> None:
    sink, clock, states = Collected(), FakeClock(), StoredStates()
    processors = make_app(sink, every_records=6, clock=clock, states=states)
    records = [Record(i, execution("qa", i * 3, i), 0, APPENDED_MS) for i in range(12)]

    async def scenario() -> None:
        async with processors.agent.test_context():
            await processors.process_partition(0, records[:4])
            assert processors.state_of(0) is None  # 4 < 6 records: nothing stored yet
            await processors.process_partition(0, records[4:8])
            assert processors.state_of(0).position == 8  # 8 >= 6: stored
            await processors.process_partition(0, records[8:9])
            clock.now += 61  # the time cadence (60 s) stores the state without more records
            await processors.snapshot_due()
            assert processors.state_of(0).position == 9
            await processors.process_partition(0, records[9:11])  # folded, not stored
            # A rebalance takes partition 0 away and gives it back (as to a new owner):
            # the live state is dropped, the stored one (position 9) is where it resumes.
            await processors._on_revoked(None, {TP(processors.source.get_topic_name(), 0)})
            await processors.process_partition(0, records[8:])  # redelivered from offset 8
            await processors.snapshot(0)

    asyncio.run(scenario())
    assert processors.counters["skipped"] == 1  # offset 8 was already in the stored state
    state = processors.state_of(0)
    assert state is not None and state.position == 12 and state.records == 12
    windows = {}
    for _, event in sink.outputs:  # windows re-emitted after the takeover carry the same ids
        windows.setdefault(event["id"], event["count"])
    assert sum(windows.values()) == 4 + 3 + 3  # [0,10) [10,20) [20,30) closed by t = 33 s
    # Every stored state went to the changelog partition of its source partition, once per
    # snapshot: after 8 records, on time, and the final one.
    assert states.stored == [(0, b"0")] * 3


def test_a_state_whose_changelog_send_fails_is_not_stored_and_its_events_stay_unacked() -> None:
    processors = make_app(Collected(), every_records=100)
    records = [Record(i, execution("qa", i * 3, i), 0, APPENDED_MS) for i in range(4)]
    held = [object() for _ in records]

    async def refused(partition: int, key: bytes, value: bytes) -> None:
        raise ConnectionError("changelog not acknowledged")

    async def scenario() -> None:
        async with processors.agent.test_context():
            await processors.process_partition(0, records, held)
            processors.state_sink = refused
            with pytest.raises(ConnectionError):
                await processors.snapshot(0)

    asyncio.run(scenario())
    assert processors.state_of(0) is None  # nothing stored locally either
    assert processors._held[0] == held  # not acked: their offsets cannot be committed



class Broker:
    """The fetch hook: serves reads of a partition's log, and records what was asked."""

    def __init__(self, log: list[Record]) -> None:
        self.log, self.asked = log, []

    async def __call__(self, partition: int, start: int, end: int) -> list[Record]:
        self.asked.append((partition, start, end))
        return [r for r in self.log if start <= r.offset < end]


def fold_straight(records: list[Record]) -> list[tuple[str, dict]]:
    """The outputs of ``records`` delivered whole, in one batch."""
    straight = Collected()
    reference = make_app(straight, every_records=100)

    async def fold_all() -> None:
        async with reference.agent.test_context():
            await reference.process_partition(0, records)

    asyncio.run(fold_all())
    return straight.outputs


def test_records_missing_from_the_delivery_are_read_from_the_broker_and_folded_in_their_place() -> None:
    sink = Collected()
    records = [Record(i, execution("qa", i * 3, i), 0, APPENDED_MS) for i in range(12)]
    broker = Broker(records)
    processors = make_app(sink, every_records=100)
    processors.fetch = broker
    delivered = [r for r in records if r.offset not in (4, 8, 9)]  # lost on the way (seen around rebalances)
    events = [object() for _ in delivered]

    async def scenario() -> None:
        async with processors.agent.test_context():
            await processors.process_partition(0, delivered[:3], events[:3])  # 0-2
            await processors.process_partition(0, delivered[3:], events[3:])  # 3, hole, 5-7, hole, 10-11

    asyncio.run(scenario())
    assert broker.asked == [(0, 4, 5), (0, 8, 10)]
    state = processors._live[0]
    assert state.position == 12 and state.records == 12
    assert sink.outputs == fold_straight(records)  # the same windows as an unbroken delivery
    assert processors.counters["holes"] == 2 and processors.counters["records"] == 12
    assert processors.counters["skipped"] == 0 and processors._held[0] == events


def test_a_hole_at_the_start_of_a_restored_partition_is_filled_and_redeliveries_below_it_are_skipped() -> None:
    # A takeover: the stored state is at 5, the group's committed offset passed it (Faust
    # acked a record it skipped): the delivery starts at 7.  Then 3-6 come again.
    sink = Collected()
    records = [Record(i, execution("qa", i * 3, i), 0, APPENDED_MS) for i in range(10)]
    broker = Broker(records)
    processors = make_app(sink, every_records=5)
    processors.fetch = broker

    async def scenario() -> None:
        async with processors.agent.test_context():
            await processors.process_partition(0, records[:5])
            assert processors.state_of(0).position == 5
            processors.drop(0)  # the partition moves away and back: resume from the stored state
            await processors.process_partition(0, records[7:])
            await processors.process_partition(0, records[3:])

    asyncio.run(scenario())
    assert broker.asked == [(0, 5, 7)]
    assert processors._live[0].position == 10 and processors._live[0].records == 10
    kept = {}  # what the projector keeps: the first output of each id
    for name, event in sink.outputs:
        kept.setdefault(event["id"], (name, event))
    assert list(kept.values()) == fold_straight(records)


def test_records_gone_from_the_log_too_are_folded_over_with_an_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    records = [Record(i, execution("qa", i * 3, i), 0, APPENDED_MS) for i in range(8)]
    broker = Broker([r for r in records if r.offset != 2])  # offset 2 deleted by retention
    processors = make_app(Collected(), every_records=100)
    processors.fetch = broker

    async def scenario() -> None:
        async with processors.agent.test_context():
            await processors.process_partition(0, [r for r in records if r.offset != 2])

    asyncio.run(scenario())
    state = processors._live[0]
    assert broker.asked == [(0, 2, 3)] and state.position == 8 and state.records == 7
    assert "1 of them from the log too" in caplog.text


def test_records_of_a_partition_the_worker_no_longer_owns_are_dropped_unfolded() -> None:
    sink = Collected()
    processors = make_app(sink)
    processors.assigned = [1]  # as after a rebalance that left this worker partition 1 only

    async def scenario() -> None:
        async with processors.agent.test_context() as agent:
            for i in range(3):  # still in the agent's buffer from before the rebalance
                await agent.put(execution("triage", i, 100 + i), key=b"acme\x00triage", partition=2, wait=False)
            agent.sent_offset = 0  # test_context numbers messages across partitions
            for i in range(4):
                await agent.put(execution("qa", i, i), key=b"acme\x00qa", partition=1, wait=False)
            await wait_for(lambda: processors.counters["records"] == 4 and processors.counters["dropped"] == 3)

    asyncio.run(scenario())
    assert processors.state_of(1).records == 4 and processors.state_of(2) is None
