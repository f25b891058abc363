"""Filling a hole in a worker's delivery: the records are read from the broker (the mock
cluster) by a reader outside the workers' group."""

from __future__ import annotations

import asyncio
import uuid

from kafka_broker import kafka_bootstrap  # noqa: F401
from log_contract import TIMEOUT

from adaptd.streams.kafka.app import ProcessorApp, WorkerOptions
from adaptd.streams.kafka.log import KafkaLog
from adaptd.streams.processors.history.processor import HistoryProcessor


def test_a_worker_reads_the_offsets_missing_from_its_delivery_from_the_broker(kafka_bootstrap: str) -> None:  # noqa: F811
    namespace = f"fill-{uuid.uuid4().hex[:8]}"
    log = KafkaLog(kafka_bootstrap, f"{namespace}.events")
    try:
        log.append([b"event-%d" % i for i in range(10)], keys=[b"acme\x00qa"] * 10, timeout=TIMEOUT)
        partition = next(p for p in range(log.partitions) if log.read(0, 1, p))
    finally:
        log.close()
    app = ProcessorApp([kafka_bootstrap], 4, [HistoryProcessor(["10s"])], namespace=namespace,
                       options=WorkerOptions(fill_timeout_s=5.0))
    got = asyncio.run(app.read_missing(partition, 3, 7))
    assert [(r.offset, r.value, r.partition) for r in got] == [(i, b"event-%d" % i, partition) for i in range(3, 7)]
    assert all(r.timestamp_ms > 0 for r in got)  # the append time: the watermark's future bound needs it
