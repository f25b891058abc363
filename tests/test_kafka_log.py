"""The Kafka log backend: the shared log contract on a real Kafka-protocol broker
(librdkafka's mock cluster), plus what only Kafka has (keys, followed topics, url)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from kafka_broker import kafka_bootstrap  # noqa: F401
from log_contract import TIMEOUT, LogContract

from adaptd.streams.kafka.log import KafkaLog, parse_kafka_url
from adaptd.streams.log import LogError, StreamLog


def topic_for(path: Path) -> str:
    """One topic per log path: the same path reopens the same topic."""
    return "contract-" + hashlib.sha1(str(path).encode()).hexdigest()[:20]


class TestKafkaLogContract(LogContract):
    @pytest.fixture(autouse=True)
    def _broker(self, kafka_bootstrap: str) -> None:  # noqa: F811
        self.bootstrap = kafka_bootstrap

    def open_log(self, path: Path) -> StreamLog:
        return KafkaLog(self.bootstrap, topic_for(path))


# ---------------------------------------------------------------------- Kafka only


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic no other test uses."""
    return "t-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:20]


def test_records_with_the_same_key_share_a_partition_and_keep_their_order(kafka_bootstrap: str, topic: str) -> None:  # noqa: F811
    log = KafkaLog(kafka_bootstrap, topic)
    try:
        assert log.partitions == 4  # the mock cluster auto-creates topics with 4
        keys = [b"tenant\x00prog-%d" % (i % 5) for i in range(100)]
        log.append([b"%d" % i for i in range(100)], keys=keys, timeout=TIMEOUT)
        seen: dict[bytes, list[int]] = {}
        for partition in range(log.partitions):
            for record in log.read(0, 1000, partition):
                seen.setdefault(keys[int(record.value)], []).append(int(record.value))
        assert sorted(seen) == sorted(set(keys))
        assert all(values == sorted(values) for values in seen.values())
        assert sum(map(len, seen.values())) == 100
        assert len({log.read(0, 1, p)[0].partition for p in range(4) if log.read(0, 1, p)}) > 1
    finally:
        log.close()


def test_followed_topics_are_read_as_further_partitions(kafka_bootstrap: str, topic: str) -> None:  # noqa: F811
    writer = KafkaLog(kafka_bootstrap, topic + ".derived")
    log = KafkaLog(kafka_bootstrap, topic, follow=[topic + ".derived"])
    try:
        writer.append([b"derived-0", b"derived-1"], timeout=TIMEOUT)
        log.append([b"own"], timeout=TIMEOUT)
        assert log.partitions == 8
        assert [r.value for r in log.read(0, 10, 0)] == [b"own"]
        followed = log.read(0, 10, 4)  # partition 0 of the followed topic
        assert [(r.value, r.partition) for r in followed] == [(b"derived-0", 4), (b"derived-1", 4)]
        assert log.end_offset(4) == 2 and log.wait(1, timeout=TIMEOUT, partition=4)
        log.commit("projector", 2, partition=4)
        assert log.committed("projector", partition=4) == 2 and log.committed("projector", partition=0) is None
        with pytest.raises(ValueError, match="partition"):
            log.read(0, 1, 8)
    finally:
        log.close()
        writer.close()


def test_the_daemon_log_keys_events_by_tenant_and_program(kafka_bootstrap: str, tmp_path: Path) -> None:  # noqa: F811
    from adaptd.streams.kafka.topics import EVENTS_TOPIC, derived_topic, event_key
    from adaptd.streams.log import open_log

    log = open_log(f"kafka://{kafka_bootstrap}", tmp_path)
    other = open_log(f"kafka://{kafka_bootstrap}/team-2", tmp_path)
    try:
        assert isinstance(log, KafkaLog) and log.topic == EVENTS_TOPIC
        assert derived_topic("history") in log.follow and derived_topic("anomaly") in log.follow
        assert other.topic == "team-2.events" and "team-2.derived.drift" in other.follow
        assert event_key(b'{"tenant": "acme", "program": "qa"}') == b"acme\x00qa"
        assert event_key(b'{"program": "qa"}') == b"default\x00qa"
        assert event_key(b"not json") is None and event_key(b"[1]") is None
    finally:
        log.close()
        other.close()


@pytest.mark.parametrize("url", ["kafka://", "kafka://host", "kafka://host:port", "http://host:9092", "kafka://h:1/bad/ns"])
def test_a_bad_kafka_url_is_refused_with_the_expected_form(url: str) -> None:
    with pytest.raises(LogError, match="kafka://HOST:PORT|namespace"):
        parse_kafka_url(url)


def test_a_kafka_url_gives_servers_and_an_optional_namespace() -> None:
    assert parse_kafka_url("kafka://a:9092,b:9093") == ("a:9092,b:9093", None)
    assert parse_kafka_url("kafka://a:9092/team-1") == ("a:9092", "team-1")


def test_an_unreachable_cluster_is_a_log_error_naming_it(free_port_number: int) -> None:
    address = f"127.0.0.1:{free_port_number}"
    with pytest.raises(LogError, match=f"cannot reach Kafka at {address}"):
        KafkaLog(address, "nowhere", timeout=0.5)


@pytest.fixture
def free_port_number() -> int:
    from conftest import free_port

    return free_port()
