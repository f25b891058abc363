"""Non-blocking reads of Kafka partitions for :class:`adaptd.streams.kafka.log.KafkaLog`.

A ``PartitionReader`` owns one confluent-kafka consumer that is never a group member: it
assigns partitions by hand and seeks, so ``read(offset)`` can start anywhere.  Records
the consumer fetched are kept per partition until asked for; a partition whose buffer is
full is paused, so memory stays bounded whatever the caller reads.

One reader serves one thread (the log keeps one per thread): the projector and the
processors then each keep their own fetch position instead of seeking each other away.

A ``packed`` reader speaks log offsets of the packed layout (``streams.kafka.packing``):
it unpacks each message into its records, seeks to the message of an offset, and hands
out records from there; plain messages are one record each.  An unpacked reader's
offsets are Kafka's.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from adaptd.streams.kafka.packing import log_end, log_offset, message_of, unpack
from adaptd.streams.log.base import LogError, Record

logger = logging.getLogger("adaptd.log.kafka")

#: Records buffered per partition before it is paused (bounds a reader's memory).
MAX_BUFFERED = 20_000


class PartitionReader:
    """Reads the partitions ``tps`` (index ``i`` is the log's partition ``i``)."""

    def __init__(self, config: dict[str, object], tps: Sequence[tuple[str, int]], *, fetch_timeout: float,
                 packed: bool = False) -> None:
        """Args:
            config: consumer configuration (bootstrap servers and the like).
            tps: (topic, partition) of each log partition.
            fetch_timeout: longest wait for records the broker already acknowledged.
            packed: offsets are the packed layout's log offsets, messages are unpacked.
        """
        # A seek waits for the fetch in flight, so fetches are kept short: an idle
        # partition then costs ~20 requests/s, a random read ~50 ms instead of ~500.
        self._consumer = Consumer({"fetch.wait.max.ms": 50, "fetch.error.backoff.ms": 20, **config,
                                   "enable.auto.commit": False, "enable.partition.eof": False,
                                   "auto.offset.reset": "earliest"})
        self._tps = list(tps)
        self._index = {tp: i for i, tp in enumerate(self._tps)}
        self._fetch_timeout = fetch_timeout
        self._buffers: dict[int, deque[Record]] = {}
        #: Per assigned partition: the offset the next record handed out must be at least.
        self._next: dict[int, int] = {}
        self._paused: set[int] = set()
        #: Per assigned partition: the offset just past the last message fetched since
        #: the last seek (what a wait for records below an end offset compares with).
        self._fetched: dict[int, int] = {}
        self._packed = packed

    def cached_end(self, partition: int) -> int | None:
        """The high watermark of the last fetch response (no network), or None if unknown."""
        if partition not in self._next:
            return None
        topic, part = self._tps[partition]
        try:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, part), cached=True)
        except KafkaException:
            return None
        return None if high < 0 else self._end_of(high)

    def _end_of(self, kafka_offset: int) -> int:
        return log_end(kafka_offset) if self._packed else kafka_offset

    def read(self, partition: int, offset: int, max_records: int, end: int) -> list[Record]:
        """Up to ``max_records`` records from ``offset`` of a partition known to end at ``end``.

        Waits (at most ``fetch_timeout``) only for records below ``end``, which the broker
        has acknowledged (until ``max_records`` came or the messages up to ``end`` were
        fetched); returns ``[]`` when ``offset >= end``.

        Raises:
            LogError: the consumer failed (broker unreachable past its retries, ...).
        """
        if max_records <= 0 or offset >= end:
            return []
        self._position(partition, offset)
        buffer = self._buffers[partition]
        self._pump(0)
        deadline = time.monotonic() + self._fetch_timeout
        while len(buffer) < max_records and self._fetched[partition] < end and time.monotonic() < deadline:
            self._pump(min(0.05, max(0.0, deadline - time.monotonic())))
        records: list[Record] = []
        while buffer and len(records) < max_records:
            records.append(buffer.popleft())
        if records:
            self._next[partition] = records[-1].offset + 1
        if partition in self._paused and len(buffer) < MAX_BUFFERED // 2:
            self._consumer.resume([TopicPartition(*self._tps[partition])])
            self._paused.discard(partition)
        return records

    def _position(self, partition: int, offset: int) -> None:
        """Make the next record handed out for ``partition`` the one at ``offset``."""
        topic, part = self._tps[partition]
        if partition not in self._next:
            self._consumer.incremental_assign([TopicPartition(topic, part, self._message_of(offset))])
            self._buffers[partition] = deque()
            self._next[partition] = self._fetched[partition] = offset
            return
        buffer = self._buffers[partition]
        if offset == self._next[partition]:
            return
        if buffer and buffer[0].offset <= offset <= buffer[-1].offset:
            while buffer[0].offset < offset:  # forward within what is fetched: no seek
                buffer.popleft()
            self._next[partition] = offset
            return
        buffer.clear()
        self._next[partition] = self._fetched[partition] = offset
        at = self._message_of(offset)
        try:
            self._consumer.seek(TopicPartition(topic, part, at))
        except KafkaException:  # not fetching yet (just assigned): re-assign at the offset
            self._consumer.incremental_unassign([TopicPartition(topic, part)])
            self._consumer.incremental_assign([TopicPartition(topic, part, at)])
        if partition in self._paused:
            self._consumer.resume([TopicPartition(topic, part)])
            self._paused.discard(partition)

    def _pump(self, timeout: float) -> None:
        """Move what the consumer fetched into the per-partition buffers."""
        try:
            messages = self._consumer.consume(num_messages=5000, timeout=timeout)
        except KafkaException as exc:
            raise LogError(f"kafka read failed: {exc}") from exc
        for m in messages:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise LogError(f"kafka read failed: {error.str()}")
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("kafka consumer: %s", error.str())
                continue
            # topic, partition and offset are None only on error events, skipped above.
            topic, part, offset = m.topic(), m.partition(), m.offset()
            if topic is None or part is None or offset is None:
                continue
            partition = self._index.get((topic, part))
            if partition is None:
                continue
            first = self._next.get(partition, 0)
            message_end = self._end_of(offset + 1)
            if message_end <= first:
                continue  # fetched before a seek: stale
            buffer = self._buffers[partition]
            value, stamp = m.value() or b"", m.timestamp()[1]
            values = unpack(value) if self._packed else None
            if values is None:
                records = [Record(message_end - 1 if self._packed else offset, value, partition, stamp)]
            else:
                n = len(values)
                records = [Record(log_offset(offset, i, n), v, partition, stamp) for i, v in enumerate(values)]
            last = buffer[-1].offset if buffer else -1
            # Skip what is before the position (a read from inside a message) and what
            # was already buffered (re-delivered after a seek back and forth).
            buffer.extend(r for r in records if r.offset >= first and r.offset > last)
            if message_end > self._fetched[partition]:
                self._fetched[partition] = message_end
            if len(buffer) >= MAX_BUFFERED and partition not in self._paused:
                self._consumer.pause([TopicPartition(*self._tps[partition])])
                self._paused.add(partition)

    def _message_of(self, offset: int) -> int:
        return message_of(offset) if self._packed else offset

    def close(self) -> None:
        """Leave (no group to leave: only closes the connections).  Idempotent."""
        try:
            self._consumer.close()
        except RuntimeError:  # already closed
            pass


def committed_offset(tp: TopicPartition) -> int | None:
    """The stored offset of a committed-offsets answer, None when the group has none."""
    if tp.error is not None:
        raise LogError(f"kafka committed-offset lookup failed: {tp.error}")
    return None if tp.offset in (OFFSET_INVALID,) or tp.offset < 0 else tp.offset
