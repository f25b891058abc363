"""The packed layout: one Kafka message per key and batch (streams.kafka.packing), the
packed KafkaLog's offsets (the StreamLog contract with sparse offsets), and the worker's
fold of packed messages (the same outputs as one message per event)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid

import orjson
import pytest
from kafka_broker import kafka_bootstrap  # noqa: F401
from log_contract import TIMEOUT

from adaptd.streams.kafka.app import ProcessorApp, WorkerOptions
from adaptd.streams.kafka.log import KafkaLog
from adaptd.streams.kafka.packing import (
    MAX_RECORDS,
    SHIFT,
    log_end,
    log_offset,
    message_of,
    murmur2,
    pack,
    split,
    unpack,
)
from adaptd.streams.kafka.partition_fold import PartitionFold
from adaptd.streams.log.base import Record
from adaptd.streams.processors.anomaly.error_burst import ErrorBurstProcessor
from adaptd.streams.processors.history.processor import HistoryProcessor

# ---------------------------------------------------------------------- the format


def test_a_packed_message_gives_back_its_records_in_order() -> None:
    values = [b"", b"a", b'{"x":1}', b"\x00AP1 inside", b"z" * 70_000]
    assert unpack(pack(values)) == values


@pytest.mark.parametrize("value", [b"", b"{}", b'{"kind":"execution"}', b"\x00AP1", b"\x00AP1\x02\x00\x00\x00",
                                   pack([b"ab"])[:-1], pack([b"ab"]) + b"c", b"\x00AP1\x00\x00\x00\x00"])
def test_a_plain_or_damaged_value_is_not_unpacked(value: bytes) -> None:
    assert unpack(value) is None  # the reader keeps it as one plain record


def test_pack_refuses_no_records_and_too_many() -> None:
    with pytest.raises(ValueError):
        pack([])
    with pytest.raises(ValueError):
        pack([b"x"] * (MAX_RECORDS + 1))


def test_log_offsets_increase_and_name_their_message() -> None:
    offsets = [log_offset(k, i, n) for k, n in ((0, 3), (1, 1), (2, MAX_RECORDS)) for i in range(n)]
    assert offsets == sorted(set(offsets))
    assert [message_of(o) for o in offsets] == [0] * 3 + [1] + [2] * MAX_RECORDS
    assert offsets[2] + 1 == log_end(1) and offsets[3] + 1 == log_end(2)  # a whole message read: at the next
    assert log_end(5) == 5 << SHIFT


def test_split_groups_by_partition_in_order_and_cuts_by_count_and_bytes() -> None:
    partitions = [1, 2, 1, 0, 1, 2]
    assert split(partitions, [1] * 6) == [(1, [0, 2, 4]), (2, [1, 5]), (0, [3])]
    assert split(partitions, [1] * 6, max_records=2) == [(1, [0, 2]), (1, [4]), (2, [1, 5]), (0, [3])]
    assert split([3] * 3, [5, 10, 5], max_bytes=12) == [(3, [0]), (3, [1]), (3, [2])]
    assert split([], []) == []


def test_murmur2_is_kafka_s() -> None:
    # Values of the Java client's Utils.murmur2 (its default partitioner's hash).
    assert murmur2(b"21") == (-973932308) & 0xFFFFFFFF
    assert murmur2(b"foobar") == (-790332482) & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == (-985981536) & 0xFFFFFFFF


# ---------------------------------------------------------------------- the packed log


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return "p-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]


def test_a_packed_log_sends_one_message_per_key_and_reads_every_record_once(
        kafka_bootstrap: str, topic: str) -> None:  # noqa: F811
    log = KafkaLog(kafka_bootstrap, topic, pack=True)
    plain = KafkaLog(kafka_bootstrap, topic)
    try:
        keys = [b"t\x00p%d" % (i % 3) for i in range(30)]
        unpacked = KafkaLog(kafka_bootstrap, topic + "-plain")  # one message per record: librdkafka places keys
        try:
            unpacked.append(keys[:3], keys=keys[:3], timeout=TIMEOUT)
            placed = {r.value: p for p in range(4) for r in unpacked.read(0, 10, p)}
        finally:
            unpacked.close()
        offsets = log.append([b"%d" % i for i in range(30)], keys=keys, timeout=TIMEOUT)
        offsets += log.append([b"%d" % i for i in range(30, 40)], keys=keys[:10], timeout=TIMEOUT)
        seen: dict[int, list[Record]] = {p: log.read(0, 1000, p) for p in range(log.partitions)}
        records = [r for rs in seen.values() for r in rs]
        assert sorted(int(r.value) for r in records) == list(range(40))
        by_value = {int(r.value): (r.partition, r.offset) for r in records}
        assert [by_value[i][1] for i in range(40)] == offsets  # append's offsets are the read's
        for partition, rs in seen.items():
            assert [r.offset for r in rs] == sorted({r.offset for r in rs})  # increasing
            assert log.end_offset(partition) == (rs[-1].offset + 1 if rs else 0)  # read it all: at the end
            # Kafka holds one message per partition and append, each key where librdkafka puts it.
            assert plain.end_offset(partition) == (2 if rs else 0)
            assert all(r.partition == placed[keys[int(r.value) % 30]] for r in rs)
            assert log.read(log.end_offset(partition), 10, partition) == []
            assert all(r.offset >> SHIFT < plain.end_offset(partition) for r in rs)
    finally:
        log.close()
        plain.close()


def test_a_packed_log_reads_from_any_offset_inside_or_between_messages(kafka_bootstrap: str, topic: str) -> None:  # noqa: F811
    log = KafkaLog(kafka_bootstrap, topic, pack=True)
    try:
        first = log.append([b"a%d" % i for i in range(5)], timeout=TIMEOUT)  # no key: partition 0
        second = log.append([b"b%d" % i for i in range(3)], timeout=TIMEOUT)
        every = first + second
        values = [b"a%d" % i for i in range(5)] + [b"b%d" % i for i in range(3)]
        for start in (2, 7, 0, 4, 5, 3):  # forwards, backwards, at a message's start
            got = log.read(every[start], 3)
            assert [r.value for r in got] == values[start:start + 3]
        assert [r.value for r in log.read(first[-1] + 1, 10)] == values[5:]  # the gap after a message
        assert [r.value for r in log.read(0, 100)] == values
        positions, position = [], 0
        while batch := log.read(position, 2):  # a reader that stops inside messages
            positions += [r.offset for r in batch]
            position = batch[-1].offset + 1
        assert positions == every and position == log.end_offset(0)
    finally:
        log.close()


def test_a_packed_log_commits_exact_positions_and_kafka_the_message_to_resume_from(
        kafka_bootstrap: str, topic: str) -> None:  # noqa: F811
    log = KafkaLog(kafka_bootstrap, topic, pack=True)
    plain = KafkaLog(kafka_bootstrap, topic, group_prefix="x.")
    try:
        offsets = log.append([b"a", b"b", b"c"], timeout=TIMEOUT)
        log.commit("projector", offsets[1], partition=0)  # inside the message
        assert log.committed("projector", partition=0) == offsets[1]
        log.commit("projector", offsets[2] + 1, partition=0)
        assert log.committed("projector", partition=0) == offsets[2] + 1 == log.end_offset(0)
        assert log.committed("other", partition=0) is None
    finally:
        log.close()
        plain.close()


def test_a_packed_log_reads_plain_messages_as_one_record_each(kafka_bootstrap: str, topic: str) -> None:  # noqa: F811
    plain = KafkaLog(kafka_bootstrap, topic)  # what Faust writes to the derived topics, or an older log
    log = KafkaLog(kafka_bootstrap, topic, pack=True)
    try:
        plain.append([b"old-0", b"old-1"], timeout=TIMEOUT)
        log.append([b"new-0", b"new-1"], timeout=TIMEOUT)
        got = log.read(0, 10)
        assert [r.value for r in got] == [b"old-0", b"old-1", b"new-0", b"new-1"]
        assert [r.offset for r in got] == [log_offset(0, 0, 1), log_offset(1, 0, 1), log_offset(2, 0, 2),
                                          log_offset(2, 1, 2)]
        assert log.wait(got[-1].offset, timeout=TIMEOUT) and log.end_offset(0) == got[-1].offset + 1
    finally:
        log.close()
        plain.close()


# ---------------------------------------------------------------------- the worker's fold

BASE = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC)
APPENDED_MS = int(BASE.timestamp() * 1000) + 3_600_000


def executions(n: int) -> list[bytes]:
    return [orjson.dumps({"id": str(uuid.UUID(int=i + 1)), "kind": "execution", "tenant": "acme",
                          "program": f"p{i % 2}", "ts": (BASE + dt.timedelta(seconds=i * 0.7)).isoformat(),
                          "status": "error" if i % 5 == 0 else "ok", "duration_ms": 10.0 + i})
            for i in range(n)]


def processors() -> list:
    return [HistoryProcessor(["10s"]), ErrorBurstProcessor()]


def test_folding_packed_messages_gives_the_outputs_of_one_message_per_event() -> None:
    values = executions(200)
    plain = [Record(i, v, 0, APPENDED_MS) for i, v in enumerate(values)]
    packed = [Record(k, pack(values[i:i + 37]), 0, APPENDED_MS) for k, i in enumerate(range(0, 200, 37))]
    fold = PartitionFold(processors(), lateness_s=0.0)
    one, one_out = fold.fold(fold.initial(), plain)
    many, many_out = fold.fold(fold.initial(), packed)
    assert many_out == one_out and one_out
    assert many.records == one.records == 200 and many.position == len(packed)  # a Kafka offset
    again, again_out = fold.fold(many, packed)  # redelivered: every message is below the position
    assert again_out == [] and again.records == 200


class Sink:
    def __init__(self) -> None:
        self.outputs: list[tuple[str, dict]] = []

    async def __call__(self, outputs: list[tuple[str, dict]]) -> None:
        self.outputs += outputs


async def _stored(partition: int, key: bytes, value: bytes) -> None:
    return None


def test_the_agent_folds_packed_messages_once_through_redeliveries_and_holes() -> None:
    values = executions(120)
    messages = [Record(k, pack(values[i:i + 10]), 0, APPENDED_MS) for k, i in enumerate(range(0, 120, 10))]
    asked: list[tuple[int, int, int]] = []

    async def fetch(partition: int, start: int, end: int) -> list[Record]:
        asked.append((partition, start, end))
        return messages[start:end]

    def make(sink: Sink) -> ProcessorApp:
        return ProcessorApp(["127.0.0.1:1"], 4, processors(), namespace=f"pack-{uuid.uuid4().hex[:6]}",
                            options=WorkerOptions(lateness_s=0.0, snapshot_every_records=25, snapshot_every_s=60.0),
                            sink=sink, state_sink=_stored, fetch=fetch, clock=lambda: 0.0)

    reference, sink = make(Sink()), Sink()
    app = make(sink)

    async def scenario() -> None:
        await reference.process_partition(0, messages)
        await app.process_partition(0, messages[:4])
        await app.process_partition(0, messages[2:6])  # 2-3 redelivered
        await app.process_partition(0, messages[7:])  # message 6 missing: read from the broker

    asyncio.run(scenario())
    assert asked == [(0, 6, 7)]
    assert sink.outputs == reference.sink.outputs and sink.outputs  # type: ignore[attr-defined]
    assert app._live[0].position == 12 and app._live[0].records == 120
    assert app.counters["events"] == 120 and app.counters["records"] == 12 and app.counters["snapshots"] == 2  # at 40 and 120 events
