"""Kafka stream log: the StreamLog interface over Kafka topics (confluent-kafka).

- **Appends** go to one topic through an idempotent producer with ``acks=all``; a batch's
  future resolves with the offsets only once the broker acknowledged every record of it
  (delivery reports, served by a poller thread).  A batch is produced under a lock, so
  its records are contiguous in their partition and batches keep submission order.
- **Partitions**: the log's partition ``i`` is the ``i``-th (topic, partition) of the
  append topic followed by the ``follow`` topics (e.g. the derived topics the Faust
  workers write), so one projector follows all of them through one log.
- **Keys**: records with a key (given, or computed by ``key_of`` from the value) go to
  the key's partition (murmur2, like the Java client and Faust); records without one go
  to partition 0, so a log used without keys is one ordered sequence.
- **Packing** (``pack=True``, the daemon's log): a batch's records of one partition (by
  their keys' murmur2, as unpacked) go out as one Kafka message, in their order
  (``streams.kafka.packing``: cut past 4,095 records or ``pack_bytes``), so consumers
  pay their per-message cost once per partition and batch instead of once per record.
  Offsets are then the packed layout's log offsets: strictly increasing, consecutive
  within a message, with a gap after each message; ``end_offset`` is where a reader that
  read everything stands, as without packing.  Reads unpack; a plain message (Faust's
  derived topics, a log written before packing) is one record.  Without packing, offsets
  are Kafka's (consecutive).
- **Reads** use hand-assigned consumers (one per reading thread, see kafka_reader) with
  seek: never a rebalance, never a block longer than fetching what is acknowledged.
- **Positions** are committed to Kafka as the consumer group ``<group_prefix><group>``.

Topics are not created here: a real cluster should have them made with the partition
count and retention wanted (see the docs); a cluster with topic auto-creation (and
librdkafka's mock cluster) makes them on first use.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from adaptd.streams.kafka.log_reader import PartitionReader, committed_offset
from adaptd.streams.kafka.packing import MAX_BYTES, log_end, log_offset, message_of, pack, partition_of, split
from adaptd.streams.log.base import LogClosed, LogError, LogStats, Record, StreamLog
from adaptd.streams.log.positions import check_group

logger = logging.getLogger("adaptd.log.kafka")

_NAMESPACE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")


def parse_kafka_url(url: str) -> tuple[str, str | None]:
    """The bootstrap servers and namespace of ``kafka://HOST:PORT[,HOST:PORT...][/NAMESPACE]``.

    Returns:
        ``(servers, namespace)``; namespace is None when the url has none.

    Raises:
        LogError: not a kafka:// url, a host without a port, or a bad namespace.
    """
    if not url.startswith("kafka://"):
        raise LogError(f"not a kafka url: {url!r} (expected kafka://HOST:PORT)")
    servers, _, namespace = url[len("kafka://"):].partition("/")
    hosts = [h for h in servers.split(",") if h]
    if not hosts or any(":" not in h or not h.rsplit(":", 1)[1].isdigit() for h in hosts):
        raise LogError(f"bad kafka url {url!r}: expected kafka://HOST:PORT[,HOST:PORT...][/NAMESPACE]")
    namespace = namespace.strip("/")
    if namespace and not _NAMESPACE.match(namespace):
        raise LogError(f"bad namespace {namespace!r} in {url!r}: use letters, digits, '.', '_' or '-'")
    return ",".join(hosts), namespace or None


class _Batch:
    """Offsets of one submitted batch, filled in by delivery reports (``missing`` counts
    the Kafka messages not yet acknowledged)."""

    __slots__ = ("future", "offsets", "missing", "error", "nbytes")

    def __init__(self, future: Future[list[int]], size: int, nbytes: int, messages: int | None = None) -> None:
        self.future, self.offsets = future, [-1] * size
        self.missing = size if messages is None else messages
        self.error: LogError | None = None
        self.nbytes = nbytes


class KafkaLog(StreamLog):
    """A StreamLog on Kafka.  See the module docstring."""

    def __init__(self, bootstrap: str, topic: str, *, follow: Sequence[str] = (),
                 key_of: Callable[[bytes], bytes | None] | None = None, group_prefix: str = "adaptd.",
                 timeout: float = 10.0, fetch_timeout: float = 5.0, producer_config: dict | None = None,
                 consumer_config: dict | None = None, pack: bool = False, pack_bytes: int = MAX_BYTES) -> None:
        """Args:
            bootstrap: ``HOST:PORT[,HOST:PORT...]``.
            topic: the topic appends go to (log partitions ``0..n-1``).
            follow: more topics to read (their partitions come after, in order).
            key_of: computes a record's partition key from its value when no keys are
                given (None: no key, partition 0).
            group_prefix: prefixed to consumer group names in Kafka.
            timeout: longest wait for metadata, offsets and the final flush.
            fetch_timeout: longest wait in ``read`` for records already acknowledged.
            producer_config, consumer_config: extra librdkafka settings.
            pack: one Kafka message per key and batch, packed-layout offsets (see the
                module docstring); False: one message per record, Kafka's offsets.
            pack_bytes: largest packed message (values' bytes).

        Raises:
            LogError: the cluster did not answer within ``timeout`` or a topic is missing.
        """
        self.bootstrap, self.topic, self.follow = bootstrap, topic, tuple(follow)
        self._key_of, self._prefix, self._timeout = key_of, group_prefix, timeout
        self._fetch_timeout = fetch_timeout
        self.packed, self._pack_bytes = pack, pack_bytes
        base = {"bootstrap.servers": bootstrap, "log_level": 3}
        self._consumer_config = {**base, **(consumer_config or {})}
        self._producer = Producer({
            **base, "enable.idempotence": True, "acks": "all", "linger.ms": 2,
            # A batch the cluster cannot take fails within 30 s (librdkafka waits 300 s by
            # default), so ingest answers 503 while clients still wait for the answer.
            "message.timeout.ms": 30_000, "partitioner": "murmur2_random", **(producer_config or {}),
        })
        try:
            self._tps = [(t, p) for t in (topic, *self.follow) for p in range(self._partition_count(t))]
        except BaseException:
            self._producer.flush(0)
            raise
        self._own = sum(1 for t, _ in self._tps if t == topic)
        self._partition_of: dict[bytes, int] = {}
        self.partitions = len(self._tps)
        self._meta = Consumer({**self._consumer_config, "group.id": f"{group_prefix}meta"})
        self._groups: dict[str, Consumer] = {}
        self._groups_lock = threading.Lock()
        self._readers: list[PartitionReader] = []
        self._local = threading.local()
        self._produce_lock = threading.Lock()
        self._acked = threading.Condition()
        self._acked_end = [0] * self.partitions  # highest acknowledged offset + 1 we saw
        self._stats = LogStats(extra={"failed_batches": 0})
        self._closed = False
        self._pending = 0
        self._poller = threading.Thread(target=self._poll_loop, name="adaptd-kafka-poller", daemon=True)
        self._poller.start()

    # ------------------------------------------------------------------ setup

    def _partition_count(self, topic: str) -> int:
        try:
            md = self._producer.list_topics(topic, timeout=self._timeout)
        except KafkaException as exc:
            raise LogError(f"cannot reach Kafka at {self.bootstrap} within {self._timeout}s: {exc}") from None
        info = md.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            reason = info.error.str() if info is not None and info.error is not None else "no partitions"
            raise LogError(f"kafka topic {topic!r} is not usable at {self.bootstrap} ({reason}): create it,"
                           f" e.g. kafka-topics --create --topic {topic} --partitions 12")
        return len(info.partitions)

    # ------------------------------------------------------------------ appending

    def submit(self, values: list[bytes], keys: list[bytes] | None = None) -> Future[list[int]]:
        """Produce a batch; the future resolves once the broker acknowledged all of it.

        Raises:
            TypeError: a value is not bytes (nothing of the batch is produced).
        """
        future: Future[list[int]] = Future()
        future.set_running_or_notify_cancel()  # produced at once: it cannot be cancelled
        if self._closed:
            future.set_exception(LogClosed(f"kafka log {self.topic!r} is closed"))
            return future
        if not values:
            future.set_result([])
            return future
        if any(not isinstance(v, (bytes, bytearray, memoryview)) for v in values):
            raise TypeError("log records must be bytes")
        record_keys: Sequence[bytes | None] | None = keys
        if record_keys is None and self._key_of is not None:
            record_keys = [self._key_of(bytes(v)) for v in values]
        if self.packed:
            return self._submit_packed(future, values, record_keys)
        batch = _Batch(future, len(values), sum(len(v) for v in values))
        with self._produce_lock:
            if self._closed:
                future.set_exception(LogClosed(f"kafka log {self.topic!r} is closed"))
                return future
            self._pending += 1
            for i, value in enumerate(values):
                key = record_keys[i] if record_keys is not None else None
                try:
                    self._produce(value, key, lambda err, msg, i=i: self._delivered(batch, i, err, msg))
                except (BufferError, KafkaException) as exc:
                    # Records before i may still be written: the batch is failed, not retried.
                    self._fail(batch, LogError(f"kafka producer refused the batch: {exc}"), len(values) - i)
                    break
        return future

    def _submit_packed(self, future: Future[list[int]], values: list[bytes],
                       keys: Sequence[bytes | None] | None) -> Future[list[int]]:
        """Produce one packed message per partition (and size cut) of the batch."""
        sizes = [len(v) for v in values]
        if keys is None:
            partitions = [0] * len(values)
        else:
            cache, partitions = self._partition_of, []
            for k in keys:
                p = 0 if k is None else cache.get(k)
                partitions.append(self._place(k) if p is None else p)
        messages = split(partitions, sizes, self._pack_bytes)
        batch = _Batch(future, len(values), sum(sizes), len(messages))
        with self._produce_lock:
            if self._closed:
                future.set_exception(LogClosed(f"kafka log {self.topic!r} is closed"))
                return future
            self._pending += 1
            for j, (partition, indices) in enumerate(messages):
                value = pack([values[i] for i in indices])
                try:
                    self._produce(value, None, lambda err, msg, ix=indices: self._delivered_packed(batch, ix, err, msg),
                                  partition)
                except (BufferError, KafkaException) as exc:
                    self._fail(batch, LogError(f"kafka producer refused the batch: {exc}"), len(messages) - j)
                    break
        return future

    def _place(self, key: bytes | None) -> int:
        """The partition of ``key`` (murmur2, like the producer's partitioner), cached:
        keys are (tenant, program) pairs, few and recurring (the cache is cleared past
        100,000 of them, so it stays bounded)."""
        if key is None:
            return 0
        if len(self._partition_of) >= 100_000:
            self._partition_of.clear()
        partition = self._partition_of[key] = partition_of(key, self._own)
        return partition

    def _delivered_packed(self, batch: _Batch, indices: list[int], err: KafkaError | None, msg: object) -> None:
        """Delivery report of the packed message holding records ``indices`` of ``batch``."""
        if err is not None:
            self._fail(batch, LogError(f"kafka did not acknowledge a record: {err.str()}"), 1)
            return
        offset: int = msg.offset()  # type: ignore[attr-defined]
        n = len(indices)
        for i, index in enumerate(indices):
            batch.offsets[index] = log_offset(offset, i, n)
        self._acknowledged(batch, msg.partition(), log_end(offset + 1))  # type: ignore[attr-defined]

    def _produce(self, value: bytes, key: bytes | None, callback: Callable, partition: int = 0) -> None:
        """Produce one record (without a key: to ``partition``); when the local queue is
        full, wait (bounded) for room."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                if key is None:
                    self._producer.produce(self.topic, value, partition=partition, on_delivery=callback)
                else:
                    self._producer.produce(self.topic, value, key, on_delivery=callback)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise
                self._producer.poll(0.01)

    def _delivered(self, batch: _Batch, i: int, err: KafkaError | None, msg: object) -> None:
        """Delivery report of record ``i`` (runs on the poller or the closing thread)."""
        if err is not None:
            self._fail(batch, LogError(f"kafka did not acknowledge a record: {err.str()}"), 1)
            return
        batch.offsets[i] = msg.offset()  # type: ignore[attr-defined]
        self._acknowledged(batch, msg.partition(), msg.offset() + 1)  # type: ignore[attr-defined]

    def _acknowledged(self, batch: _Batch, partition: int, end: int) -> None:
        """One more message of ``batch`` acknowledged, ending at log offset ``end``."""
        with self._acked:
            if end > self._acked_end[partition]:
                self._acked_end[partition] = end
            batch.missing -= 1
            done = batch.missing == 0 and batch.error is None
            if done:
                self._stats.appended += len(batch.offsets)
                self._stats.batches += 1
                self._stats.bytes_written += batch.nbytes
                self._pending -= 1
            self._acked.notify_all()
        if done:
            batch.future.set_result(batch.offsets)

    def _fail(self, batch: _Batch, error: LogError, records: int) -> None:
        with self._acked:
            batch.missing -= records
            first = batch.error is None
            if first:
                batch.error = error
                self._stats.extra["failed_batches"] += 1
                self._pending -= 1
        if first:
            batch.future.set_exception(error)

    def _poll_loop(self) -> None:
        while not self._closed:
            try:
                self._producer.poll(0.05)
            except Exception as exc:  # a user callback raised: keep serving the others
                logger.error("kafka delivery callback failed: %s", exc)

    # ------------------------------------------------------------------ reading

    def _reader(self) -> PartitionReader:
        reader = getattr(self._local, "reader", None)
        if reader is None:
            if self._closed:
                raise LogClosed(f"kafka log {self.topic!r} is closed")
            reader = PartitionReader({**self._consumer_config, "group.id": f"{self._prefix}reader"},
                                     self._tps, fetch_timeout=self._fetch_timeout, packed=self.packed)
            self._local.reader = reader
            with self._groups_lock:
                self._readers.append(reader)
        return reader

    def read(self, offset: int, max_records: int = 1000, partition: int = 0) -> list[Record]:
        """Records from ``offset`` (see StreamLog.read); waits only for acknowledged ones.

        Raises:
            LogError: the log is closed or the consumer failed.
        """
        self._check_partition(partition)
        if max_records <= 0:
            return []
        if self._closed:
            raise LogClosed(f"kafka log {self.topic!r} is closed")
        reader = self._reader()
        end = max(self._acked_end[partition], reader.cached_end(partition) or 0)
        if offset >= end and reader.cached_end(partition) is None:
            end = self.end_offset(partition)  # never assigned yet: ask the broker once
        return reader.read(partition, max(offset, 0), max_records, end)

    def _watermarks(self, partition: int) -> tuple[int, int]:
        topic, part = self._tps[partition]
        try:
            return self._meta.get_watermark_offsets(TopicPartition(topic, part), timeout=self._timeout)
        except (KafkaException, RuntimeError) as exc:
            raise LogError(f"kafka offsets of {topic}[{part}] unavailable: {exc}") from None

    def end_offset(self, partition: int = 0) -> int:
        """The broker's high watermark (a network round trip), at least what we saw acked
        (as a log offset: see the module docstring on packing)."""
        self._check_partition(partition)
        return max(self._acked_end[partition], self._log_end(self._watermarks(partition)[1]))

    def start_offset(self, partition: int = 0) -> int:
        """The broker's low watermark (a network round trip), as a log offset."""
        self._check_partition(partition)
        return self._log_end(self._watermarks(partition)[0])

    def _log_end(self, kafka_offset: int) -> int:
        return log_end(kafka_offset) if self.packed else kafka_offset

    def wait(self, offset: int, timeout: float, partition: int = 0) -> bool:
        """Wait for ``offset`` to be acknowledged: woken by our own acks at once, and asks
        the broker every 50 ms for what other producers wrote."""
        deadline = time.monotonic() + timeout
        while True:
            if self._closed:
                return False
            if self.end_offset(partition) > offset:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._acked:
                self._acked.wait_for(lambda: self._acked_end[partition] > offset or self._closed,
                                     min(0.05, remaining))

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} out of range: this log has {self.partitions}")

    # ------------------------------------------------------------------ positions

    def _group(self, group: str) -> Consumer:
        check_group(group)
        with self._groups_lock:
            if self._closed:
                raise LogClosed(f"kafka log {self.topic!r} is closed")
            consumer = self._groups.get(group)
            if consumer is None:  # never subscribes: it only stores and fetches offsets
                consumer = Consumer({**self._consumer_config, "group.id": self._prefix + group,
                                     "enable.auto.commit": False})
                self._groups[group] = consumer
            return consumer

    def commit(self, group: str, offset: int, partition: int = 0) -> None:
        """Commit ``group``'s position in Kafka (synchronously).

        Raises:
            ValueError: unsafe group name or partition out of range.
            LogError: the broker refused or did not answer.
        """
        self._check_partition(partition)
        consumer = self._group(group)
        topic, part = self._tps[partition]
        # Packed: Kafka stores the message to resume from (what lag monitors read), the
        # metadata the exact log offset (a position inside a message).
        tp = (TopicPartition(topic, part, message_of(offset), metadata=str(offset)) if self.packed
              else TopicPartition(topic, part, offset))
        try:
            answer = consumer.commit(offsets=[tp], asynchronous=False)
        except KafkaException as exc:
            raise LogError(f"cannot commit {group!r} to kafka: {exc}") from None
        for tp in answer or ():
            if tp.error is not None:
                raise LogError(f"cannot commit {group!r} to kafka: {tp.error}")

    def committed(self, group: str, partition: int = 0) -> int | None:
        """``group``'s position stored in Kafka, or None if it never committed.

        Raises:
            ValueError: unsafe group name or partition out of range.
            LogError: the broker did not answer.
        """
        self._check_partition(partition)
        consumer = self._group(group)
        topic, part = self._tps[partition]
        try:
            [tp] = consumer.committed([TopicPartition(topic, part)], timeout=self._timeout)
        except KafkaException as exc:
            raise LogError(f"cannot read {group!r}'s position from kafka: {exc}") from None
        at = committed_offset(tp)
        if at is None or not self.packed:
            return at
        exact = tp.metadata or ""
        if exact.isdigit() and message_of(int(exact)) == at:
            return int(exact)
        return log_end(at)

    # ------------------------------------------------------------------ the rest

    def stats(self) -> LogStats:
        """Counters: appended / batches are acknowledged ones; extra has failed_batches and
        pending_batches (submitted, not yet acknowledged)."""
        with self._acked:
            return LogStats(appended=self._stats.appended, batches=self._stats.batches,
                            bytes_written=self._stats.bytes_written,
                            extra={**self._stats.extra, "pending_batches": self._pending,
                                   "partitions": self.partitions})

    def close(self) -> None:
        """Refuse new appends, wait (up to ``timeout``) for the pending ones to be
        acknowledged, then close every client.  Idempotent; safe from a future callback."""
        with self._produce_lock:
            if self._closed:
                return
            self._closed = True
        with self._acked:
            self._acked.notify_all()
        if threading.current_thread() is not self._poller:
            self._poller.join(self._timeout)
        left = self._producer.flush(self._timeout)  # runs the last delivery reports here
        if left:
            logger.error("kafka log closed with %d records not acknowledged", left)
        with self._groups_lock:
            clients = [*self._groups.values(), self._meta]
            readers = list(self._readers)
        for client in clients:
            client.close()
        for reader in readers:
            reader.close()
