"""A real Kafka-protocol broker for tests: librdkafka's mock cluster on 127.0.0.1.

The mock cluster lives inside the confluent-kafka client that creates it (config
``test.mock.num.brokers``); other clients, in this process or others (aiokafka under
Faust included), reach it at the brokers' address, read back from the cluster metadata.
It auto-creates topics (4 partitions) on first use and does not answer CreateTopics.

Use it from a test module with ``from kafka_broker import kafka_bootstrap  # noqa: F401``.
``WorkerProcess`` / ``worker_factory`` run ``adaptd worker`` subprocesses against it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

REPO = Path(__file__).resolve().parents[1]


class MockCluster:
    """Owns a mock cluster of ``brokers`` brokers until ``close``."""

    def __init__(self, brokers: int = 1) -> None:
        self._owner = Producer({"test.mock.num.brokers": brokers, "log_level": 3})
        metadata = self._owner.list_topics(timeout=10)
        self.bootstrap = ",".join(f"{b.host}:{b.port}" for b in metadata.brokers.values())
        if not self.bootstrap:
            raise RuntimeError("the mock cluster reported no brokers")

    def close(self) -> None:
        """Stop the brokers (clients still connected see the connection closed)."""
        self._owner.flush(1)
        del self._owner


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``HOST:PORT`` of a mock Kafka cluster shared by the whole test session."""
    cluster = MockCluster()
    yield cluster.bootstrap
    cluster.close()


class WorkerProcess:
    """``adaptd worker --log URL`` in a subprocess, its output in ``log_path``."""

    def __init__(self, url: str, workdir: Path, *, session_timeout: float = 6.0, commit_interval: float = 0.5,
                 batch: int = 2000) -> None:
        self.url, self.workdir = url, workdir
        self.log_path = workdir.parent / f"{workdir.name}.log"
        self.args = [sys.executable, "-m", "adaptd.daemon.cli", "worker", "--log", url, "--data-dir", str(workdir),
                     "--session-timeout", str(session_timeout), "--commit-interval", str(commit_interval),
                     "--batch", str(batch), "--mock-cluster"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self._out = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("ADAPTD_CONFIG", None)
        self.proc = subprocess.Popen(self.args, cwd=REPO, env=env, stdout=self._out, stderr=subprocess.STDOUT)
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def assigned(self) -> list[int] | None:
        """The events partitions of the worker's last assignment (None before the first).

        Raises:
            AssertionError: the worker exited.
        """
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}: {self.output()[-3000:]}")
        found = re.findall(r"assigned \S+\.events partitions \[([\d, ]*)\]", self.output())
        return None if not found else [int(p) for p in found[-1].split(",") if p.strip()]

    def kill9(self) -> None:
        """SIGKILL, no goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL past ``timeout``.  Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()
        return self.proc.returncode


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers in ``tmp_path``; every one started is ended after the test."""
    started: list[WorkerProcess] = []

    def make(url: str, name: str, **kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(url, tmp_path / name, **kwargs)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop(timeout=10)
