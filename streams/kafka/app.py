"""The processors as a faust-streaming app: one agent over the events topic.

Layout (names in streams.topics):

- source: ``<ns>.events``, partitioned by (tenant, program); every partition is folded
  by :class:`adaptd.streams.kafka.partition_fold.PartitionFold` (the same processor code as embedded);
- state: the Faust table ``<ns>-processors-partition_state`` (changelog-backed), key =
  the source partition number, value = the pickled ``PartitionState`` (processor states,
  position, watermark).  Its changelog partition is the source partition, so the worker
  that takes a partition over restores exactly that partition's state;
- outputs: each processor's events go to ``<ns>.derived.<processor>``, keyed like the
  source, packed per key and step; the daemon's projector follows those topics into DuckDB.

The daemon's log packs a request's events of one partition into one Kafka message, in
their order (``streams.kafka.packing``), so Faust's per-message cost is paid once per
group: the agent takes messages in batches, unpacks them and folds each partition's
events of a batch in one step.  Offsets and positions here are Kafka's (of messages):
a message is folded whole or not at all.

Per batch and partition the agent folds the records and sends the outputs (waiting for
the broker's acks); every ``snapshot_every_records`` events or ``snapshot_every_s``
seconds, and as soon as it has folded everything the partition holds (at most every
``snapshot_caught_up_s``), it stores the partition's state in the table, waits for the
broker's ack of its changelog record, and only then acks the messages that state holds
(the stream is ``noack``), so Faust never commits a source offset past a stored state.
A crash anywhere re-delivers records from the committed offset: those below the stored position
are skipped, the others give the same outputs with the same ids (the projector keeps one).

A partition's records are folded only as an unbroken run of offsets from the state's
position.  Faust can hand the agent a partition's records with one missing around a
rebalance (a fetched record dropped, or skipped and acked by Faust itself, so that even
the committed offset can pass a record the state never saw): at a hole the agent reads
the missing records straight from the broker (a reader outside the group) and folds
them in their place.  Records of a partition this worker no longer owns (still in the
agent's buffer after a rebalance) are dropped unacked: their owner reads them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from faust.types import TP

from adaptd.streams.kafka.log_reader import PartitionReader
from adaptd.streams.kafka.packing import pack, split
from adaptd.streams.kafka.partition_fold import PartitionFold, next_run
from adaptd.streams.kafka.topics import DEFAULT_NAMESPACE, derived_topic, events_topic, key_of_event
from adaptd.streams.kafka.tuning import shorten_fetch_wait
from adaptd.streams.log.base import Record

logger = logging.getLogger("adaptd.faust")

Sink = Callable[[list[tuple[str, dict]]], Awaitable[None]]
#: Stores a partition's state durably: ``(partition, key, value)``, returns once acked.
StateSink = Callable[[int, bytes, bytes], Awaitable[None]]
#: Reads the records of offsets ``[start, end)`` of a source partition from the broker:
#: ``(partition, start, end)``, in offset order (fewer, or later ones, if the log lost some).
Fetch = Callable[[int, int, int], Awaitable[list[Record]]]


@dataclass(slots=True)
class WorkerOptions:
    """How the Faust worker talks to Kafka (defaults suit a real cluster)."""

    #: Most Kafka messages per step (a packed message holds up to 4,095 events).
    batch: int = 256
    #: Longest wait for a batch to fill before processing what came: short, since a few
    #: packed messages already make a large step.
    batch_within_s: float = 0.05
    #: Kafka messages buffered per partition before Faust pauses fetching it (bounds a
    #: worker's memory: packed messages are up to 512 KiB).
    buffer_messages: int = 1024
    #: A partition's state is stored (and its events acked) after this many events or
    #: seconds: a state is ~1 MB to pickle and send, so not after every batch.
    snapshot_every_records: int = 20_000
    snapshot_every_s: float = 2.0
    #: Once a partition's state holds everything the broker has (its high watermark),
    #: it is stored (and its messages committed) this soon after the last store: an
    #: idle worker's commits trail its work by this much, not by ``snapshot_every_s``.
    snapshot_caught_up_s: float = 0.5
    commit_interval_s: float = 2.0
    session_timeout_s: float = 30.0
    heartbeat_interval_s: float = 3.0
    standby_replicas: int = 1
    lateness_s: float = 5.0
    max_future_s: float | None = 0.0
    #: Let Faust create the topics it needs (the state changelog, compacted, and its
    #: leader topic) when they are missing.  False against librdkafka's mock cluster,
    #: which auto-creates topics and does not answer CreateTopics.
    declare_topics: bool = True
    #: Replication factor of the topics Faust creates (3 on a production cluster).
    replication_factor: int = 1
    #: Largest record the worker produces: one partition's state holds every program of
    #: the partition (12 programs' windows and sketches already pass 1 MB), so the
    #: changelog topic needs ``max.message.bytes`` at least this large too.
    max_message_bytes: int = 16 * 1024 * 1024
    #: Longest wait for the records of a hole in a partition's delivery (read from the
    #: broker); what is still missing then is counted as gone from the log (retention):
    #: logged as an error and folded over.
    fill_timeout_s: float = 10.0
    #: Longest wait of one fetch (Faust fixes 1.5 s; see streams.faust_tuning).
    fetch_max_wait_s: float = 0.1


class ProcessorApp:
    """Builds the Faust app, its table and its agent.  ``counters`` are for tests/bench."""

    def __init__(self, brokers: Sequence[str], partitions: int, processors: Sequence[Any], *,
                 namespace: str = DEFAULT_NAMESPACE, options: WorkerOptions | None = None,
                 datadir: str | None = None, sink: Sink | None = None, state_sink: StateSink | None = None,
                 fetch: Fetch | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """Args:
            brokers: ``HOST:PORT`` of each bootstrap server.
            partitions: the events topic's partition count (the table's must match).
            processors: the processors (as ``adaptd.daemon.runtime.build_processors`` makes them).
            namespace: topic and group namespace.
            options: worker tuning.
            datadir: Faust's data directory (None: Faust's default).
            sink: where outputs go (default: their derived topics, acked before return).
            state_sink: where stored states go besides the table's local store (default:
                the table's changelog, on the source partition, acked before return).
            fetch: reads missing records (default: from the broker, see ``Fetch``).
            clock: monotonic seconds, for the time-based snapshot cadence only.
        """
        self.options = options or WorkerOptions()
        self.namespace = namespace
        self.fold = PartitionFold(processors, lateness_s=self.options.lateness_s,
                                  max_future_s=self.options.max_future_s)
        o = self.options
        conf: dict[str, Any] = dict(
            broker=[f"kafka://{b}" for b in brokers], store="memory://", topic_allow_declare=o.declare_topics,
            topic_replication_factor=o.replication_factor, producer_max_request_size=o.max_message_bytes,
            topic_partitions=partitions, web_enabled=False, processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest", broker_commit_interval=o.commit_interval_s,
            broker_session_timeout=o.session_timeout_s, broker_heartbeat_interval=o.heartbeat_interval_s,
            table_standby_replicas=o.standby_replicas, producer_acks=-1, stream_buffer_maxsize=o.buffer_messages,
            # Faust would wait, at every rebalance and at shutdown, for all events handed
            # to the agent to be acked: ours are acked only at the next stored state (up to
            # snapshot_every_s away, never once the timer stopped at shutdown: SIGTERM
            # then hung until killed).  Unacked events are simply not committed, and the
            # next owner re-reads them from the stored state's position.
            stream_wait_empty=False,
        )
        if datadir is not None:
            conf["datadir"] = datadir
        shorten_fetch_wait(o.fetch_max_wait_s)
        self.app = faust.App(f"{namespace}-processors", **conf)
        self.source = self.app.topic(events_topic(namespace), key_type=bytes, value_type=bytes,
                                     key_serializer="raw", value_serializer="raw", partitions=partitions)
        self.table = self.app.Table("partition_state", default=None, partitions=partitions,
                                    key_type=bytes, value_type=bytes)
        # Tables take no serializer arguments (they default to json); set them before the
        # changelog topic is made from them: keys and values are bytes as they are.
        # (faust's TableT does not declare the serializer attributes every table has.)
        self.table.key_serializer = self.table.value_serializer = "raw"  # type: ignore[attr-defined]
        self._topics = {name: self.app.topic(derived_topic(name, namespace), key_type=bytes, value_type=bytes,
                                             key_serializer="raw", value_serializer="raw")
                        for name in (p.name for p in self.fold.processors)}
        self.sink: Sink = sink or self._send
        self.state_sink: StateSink = state_sink or self._send_changelog
        self.fetch: Fetch = fetch or self.read_missing
        self._brokers, self._partitions = ",".join(brokers), partitions
        self.counters = {"records": 0, "events": 0, "skipped": 0, "outputs": 0, "batches": 0, "snapshots": 0,
                         "holes": 0, "dropped": 0}
        self._clock = clock
        self._stream: Any = None
        #: Per source partition: the state folded so far, the events it holds unacked,
        #: records since its last snapshot, and when that was (on ``clock``).
        self._live: dict[int, Any] = {}
        self._held: dict[int, list[Any]] = {}
        self._since: dict[int, int] = {}
        self._snapshot_at: dict[int, float] = {}
        self._lock = asyncio.Lock()
        self.agent = self.app.agent(self.source, name="processors")(self._process)
        #: The events partitions this worker folds now (after the last rebalance); None
        #: before the first assignment (and under ``test_context()``, which has none).
        self.assigned: list[int] | None = None
        # mode types every receiver as taking any positional arguments; these signals send
        # exactly (sender, partitions), which the receivers take.
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.timer(max(0.1, min(self.options.snapshot_every_s, self.options.snapshot_caught_up_s) / 2),
                       name="snapshot_due")(self._tick)

    async def _on_revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        """Drop live states of revoked partitions: their next owner restores the stored ones.

        Between batches (under the lock): a batch under way would otherwise put a dropped
        partition's state back, and store it later over its new owner's."""
        topic = self.source.get_topic_name()
        gone = {tp.partition for tp in revoked if tp.topic == topic}
        async with self._lock:
            for partition in gone:
                self.drop(partition)
            if self.assigned is not None:
                self.assigned = [p for p in self.assigned if p not in gone]

    async def _on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        """Log the events partitions this worker now owns (operators and tests read it)."""
        topic = self.source.get_topic_name()
        self.assigned = sorted(tp.partition for tp in assigned if tp.topic == topic)
        logger.warning("adaptd worker: assigned %s partitions %s", topic, self.assigned)

    async def _send(self, outputs: list[tuple[str, dict]]) -> None:
        """Send every output to its processor's topic and wait for all the acks.

        Packed (``streams.kafka.packing``): one message per (processor, key) of the step,
        in emission order, keyed like the events, so Faust's per-message cost is paid per
        group; the daemon's log unpacks them.  (Across keys the topic's order is not
        the emission order: the projector stores each derived event by its id, in any
        order.)"""
        groups: dict[tuple[str, bytes], list[bytes]] = {}
        for name, event in outputs:
            groups.setdefault((name, key_of_event(event)), []).append(orjson.dumps(event))
        pending = []
        for (name, key), values in groups.items():
            for _, part in split([0] * len(values), [len(v) for v in values]):
                pending.append(await self._topics[name].send(key=key, value=pack([values[i] for i in part])))
        await asyncio.gather(*pending)

    async def _send_changelog(self, partition: int, key: bytes, value: bytes) -> None:
        """Send a stored state to the table's changelog and wait for the broker's ack.

        Waiting matters: Faust's pre-commit flush gives up after 0.1 s with records still
        buffered, so without it a commit could pass the state the changelog holds (a
        takeover then finds a hole, filled from the broker, see ``_unbroken``).  The
        partition is explicit: a batch holds several partitions, so Faust's "current
        event" would name another.
        """
        await self.table.send_changelog(partition, key, value)

    async def read_missing(self, partition: int, start: int, end: int) -> list[Record]:
        """Read offsets ``[start, end)`` of a source partition from the broker, with a
        reader of its own (no group member: Faust's consumer and offsets stay untouched)."""
        return await asyncio.to_thread(self._read_log, partition, start, end)

    def _read_log(self, partition: int, start: int, end: int) -> list[Record]:
        topic = self.source.get_topic_name()
        reader = PartitionReader({"bootstrap.servers": self._brokers, "group.id": f"{self.namespace}.fill"},
                                 [(topic, p) for p in range(self._partitions)],
                                 fetch_timeout=self.options.fill_timeout_s)
        try:
            records: list[Record] = []
            while start < end:  # bounded: every round moves start past what it got, or stops
                got = reader.read(partition, start, end - start, end)
                if not got:
                    break
                records += got
                start = got[-1].offset + 1
            return records
        finally:
            reader.close()

    async def _process(self, stream: Any) -> Any:
        # noack: an event is acked (so its offset may be committed) only once a stored
        # state holds it; committed offsets never run past the stored positions.
        self._stream = stream
        o = self.options
        async for events in stream.noack_take(o.batch, within=o.batch_within_s):
            by_partition: dict[int, tuple[list[Record], list[Any]]] = {}
            owned = self.assigned
            for event in events:
                m = event.message
                if owned is not None and m.partition not in owned:
                    # Fetched before the last rebalance took the partition away: its owner
                    # reads it.  (Records of an owned partition fetched before a rebalance
                    # are safe to fold: below the position they are skipped, above it a
                    # hole before them is filled.)
                    self.counters["dropped"] += 1
                    continue
                stamp = round((m.timestamp or 0) * 1000)  # Faust gives seconds (float) of the ms stamp
                records, held = by_partition.setdefault(m.partition, ([], []))
                records.append(Record(m.offset, m.value or b"", m.partition, stamp))
                held.append(event)
            try:
                async with self._lock:
                    for partition, (records, held) in sorted(by_partition.items()):
                        await self.process_partition(partition, records, held)
                    await self.snapshot_due()
            except Exception as exc:
                # The unacked events will not come again in this session: stop the
                # worker so that the group hands its partitions (from their stored
                # states and committed offsets) to a worker that starts clean.
                logger.exception("processing failed; stopping the worker")
                await self.app.crash(exc)
                return
            self.counters["batches"] += 1
            yield len(events)

    async def _tick(self) -> None:
        """Store due states while no events come (the agent's loop only runs on events)."""
        try:
            async with self._lock:
                await self.snapshot_due()
        except Exception as exc:
            logger.exception("storing partition states failed; stopping the worker")
            await self.app.crash(exc)

    async def snapshot_due(self) -> None:
        """Store every live state whose cadence has come (events or seconds; the shorter
        ``snapshot_caught_up_s`` once its partition is caught up)."""
        for partition in list(self._live):
            if self._snapshot_due(partition):
                await self.snapshot(partition)

    def _snapshot_due(self, partition: int) -> bool:
        since = self._since.get(partition, 0)
        o = self.options
        age = self._clock() - self._snapshot_at.get(partition, 0.0)
        return (since > 0 or bool(self._held.get(partition))) and (
            since >= o.snapshot_every_records or age >= o.snapshot_every_s
            or (age >= o.snapshot_caught_up_s and self._caught_up(partition)))

    def _caught_up(self, partition: int) -> bool:
        """Whether the live state holds every message the broker has in the partition
        (by the high watermark of the consumer's last fetch); False when unknown (no
        consumer, as under ``test_context()``).  Under a backlog states keep their
        cadence; once the backlog is folded they are stored (and committed) promptly."""
        state = self._live.get(partition)
        if state is None or self.assigned is None:
            return False
        try:
            high = self.app.consumer.highwater(TP(self.source.get_topic_name(), partition))
        except Exception:
            return False
        return high is not None and state.position >= high

    async def process_partition(self, partition: int, records: list[Record], events: Sequence[Any] = ()) -> None:
        """Fold ``records`` (Kafka messages, plain or packed) of one source partition and
        send the outputs (acked by the broker before returning); store the state when the
        snapshot cadence says so.

        ``events`` are the Faust events of the records (one each, or none): acked once a
        stored state holds them.  Records are folded as an unbroken run of offsets from
        the state's position: below it they are skipped, and a hole (offsets that did not
        come) is filled with the records read from the broker (see the module docstring).

        Raises:
            Exception: a processor, the send or the read of a hole failed; the live state is dropped (the
                stored one stays), nothing is acked.
        """
        state = self._live.get(partition)
        if state is None:
            state = self.fold.loads(self.table.data.get(b"%d" % partition))
            self._snapshot_at.setdefault(partition, self._clock())
        try:
            run, filled = await self._unbroken(partition, state.position, records)
            folded = state.records
            state, outputs = self.fold.fold(state, run)
            events_folded = state.records - folded
            self._live[partition] = state
            self._held.setdefault(partition, []).extend(events)
            if outputs:
                await self.sink(outputs)
        except BaseException:
            self.drop(partition)
            raise
        self.counters["skipped"] += len(records) - (len(run) - filled)
        self.counters["records"] += len(run)
        self.counters["events"] += events_folded
        self.counters["outputs"] += len(outputs)
        self._since[partition] = self._since.get(partition, 0) + events_folded
        if self._snapshot_due(partition):
            await self.snapshot(partition)

    async def _unbroken(self, partition: int, position: int, records: list[Record]) -> tuple[list[Record], int]:
        """The records to fold onto a state at ``position``: ``records``' unbroken run of
        offsets from it, holes filled with records read from the broker; and how many
        records that read gave.

        Raises:
            LogError: the broker could not be read.
        """
        run: list[Record] = []
        filled_in = 0
        for _ in range(len(records) + 1):  # bounded: each round takes at least one record, or ends
            more, used = next_run(position, records)
            run += more
            position = more[-1].offset + 1 if more else position
            records = records[used:]
            if not records:
                return run, filled_in
            end = records[0].offset  # a hole: [position, end) did not come
            self.counters["holes"] += 1
            filled = [r for r in await self.fetch(partition, position, end) if position <= r.offset < end]
            if len(filled) < end - position:
                logger.error("partition %d: offsets %d to %d were missing from the delivery and %d of them from"
                             " the log too (retention?); folding on without them",
                             partition, position, end - 1, end - position - len(filled))
            else:
                logger.warning("partition %d: offsets %d to %d were missing from the delivery; read them from"
                               " the broker", partition, position, end - 1)
            run += filled
            filled_in += len(filled)
            position = end
        raise AssertionError("unreachable: every round consumes records")  # pragma: no cover

    async def snapshot(self, partition: int) -> None:
        """Store the partition's live state in the table (and its changelog), then ack
        the events it holds.  No-op without a live state."""
        state = self._live.get(partition)
        if state is None:
            return
        key, value = b"%d" % partition, self.fold.dumps(state)
        # Acked by the broker before the events it holds are acked (see _send_changelog).
        await self.state_sink(partition, key, value)
        self.table.data[key] = value
        self.counters["snapshots"] += 1
        self._since[partition] = 0
        self._snapshot_at[partition] = self._clock()
        held = self._held.pop(partition, [])
        if held and self._stream is not None:
            for event in held:
                await self._stream.ack(event)

    def drop(self, partition: int) -> None:
        """Forget the live state and held events of a partition (revoked, or failed)."""
        self._live.pop(partition, None)
        self._held.pop(partition, None)
        self._since.pop(partition, None)
        self._snapshot_at.pop(partition, None)

    def state_of(self, partition: int) -> Any:
        """The stored state of a source partition (None before its first batch)."""
        stored = self.table.data.get(b"%d" % partition)
        return None if stored is None else self.fold.loads(stored)
