"""Faust settings that Faust does not expose, applied by patching it in this process.

``shorten_fetch_wait(s)``: Faust builds its aiokafka consumer with ``fetch_max_wait_ms``
fixed at 1500.  A worker's consumer also holds partitions without new records (the state
changelog, Faust's leader topic, quiet events partitions), and aiokafka keeps one fetch
in flight per broker: while the busy partitions' records are still buffered, the next
fetch asks only for the idle ones and the broker holds it for the full wait.  Measured
on the mock cluster: fetches came in bursts with ~1.4 s pauses between them, and one
worker folded 1,300 events/s with 1.5 s against 3,100 with 0.1 s (bench/kafka_bench.py).
The price of a short wait is an idle worker asking its brokers ~10 times a second.

Process-wide (every Faust worker consumer created afterwards); calling it again sets a
new value.
"""

from __future__ import annotations

from typing import Any

_WAIT_MS: list[int] = []


def shorten_fetch_wait(max_wait_s: float) -> None:
    """Make Faust worker consumers created from now on wait at most ``max_wait_s`` per fetch.

    Raises:
        ValueError: ``max_wait_s`` is not positive.
    """
    if max_wait_s <= 0:
        raise ValueError("the fetch wait must be positive")
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if not _WAIT_MS:
        create = AIOKafkaConsumerThread._create_worker_consumer

        def create_with_wait(self: Any, transport: Any) -> Any:
            consumer = create(self, transport)
            # Read by AIOKafkaConsumer.start() when it builds its fetcher (not yet started here).
            consumer._fetch_max_wait_ms = _WAIT_MS[0]
            return consumer

        # A deliberate monkeypatch of a method, which a type checker rightly refuses on the
        # class's declared type: assign through an untyped alias of the class.
        thread_class: Any = AIOKafkaConsumerThread
        thread_class._create_worker_consumer = create_with_wait
        _WAIT_MS.append(0)
    _WAIT_MS[0] = max(1, int(round(max_wait_s * 1000)))
