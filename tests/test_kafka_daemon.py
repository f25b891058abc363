"""`adaptd up --log kafka://...`: the daemon acknowledges after the broker did, and its
projector follows Kafka into DuckDB (real daemon, real mock-cluster broker)."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
import orjson
from conftest import run_cli, wait_until
from kafka_broker import kafka_bootstrap  # noqa: F401

from adaptd.streams.events import new_id
from adaptd.streams.kafka.log import KafkaLog


def executions(n: int, program: str, start: dt.datetime) -> list[dict]:
    return [{"id": str(new_id()), "kind": "execution", "program": program, "module": "answer",
             "ts": (start + dt.timedelta(milliseconds=10 * i)).isoformat(), "duration_ms": 5.0 + i % 7}
            for i in range(n)]


def projected_ids(client: httpx.Client) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(20):  # bounded pagination: 20 pages of 1000 are far more than sent
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/executions", params=params).json()
        ids += [item["id"] for item in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return ids


def test_acked_events_survive_kill_9_and_are_projected_from_kafka_exactly_once(
    daemon_factory, kafka_bootstrap: str  # noqa: F811
) -> None:
    namespace = f"daemon-{uuid.uuid4().hex[:8]}"
    env = {"ADAPTD_LOG__URL": f"kafka://{kafka_bootstrap}/{namespace}"}
    daemon = daemon_factory("kafka", env=env).start()
    start = dt.datetime(2026, 11, 22, 8, tzinfo=dt.UTC)
    sent = [executions(150, program, start) for program in ("qa", "summarize", "triage")]
    acked: list[str] = []
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        for batch in sent:
            answer = client.post("/v1/events", content=orjson.dumps(batch))
            assert answer.status_code == 200, answer.text
            acked += [e["id"] for e in batch]
    daemon.kill9()  # right after the last ack: projection may lag, Kafka holds the events

    log = KafkaLog(kafka_bootstrap, f"{namespace}.events", pack=True)  # the daemon packs its appends
    try:
        in_kafka = {orjson.loads(r.value)["id"] for p in range(log.partitions) for r in log.read(0, 10_000, p)}
        partitions_used = sum(1 for p in range(log.partitions) if log.end_offset(p) > 0)
    finally:
        log.close()
    assert set(acked) <= in_kafka
    assert partitions_used > 1  # keyed by (tenant, program), not all on one partition

    daemon.start()
    more = executions(50, "qa", start + dt.timedelta(minutes=5))
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        assert client.post("/v1/events", content=orjson.dumps(more)).status_code == 200
        acked += [e["id"] for e in more]
        ids = wait_until(lambda: (got := projected_ids(client)) and len(got) >= len(acked) and got, timeout=60)
        stats = client.get("/v1/stats").json()
    assert sorted(ids) == sorted(acked)  # every acked event, once
    assert stats["processors"] is None  # with kafka:// the processors are `adaptd worker`'s
    assert daemon.stop() == 0


def test_an_unreachable_kafka_is_one_clear_cli_error(tmp_path) -> None:
    from conftest import free_port

    answer = run_cli("up", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()),
                     "--log", f"kafka://127.0.0.1:{free_port()}", timeout=60)
    assert answer.returncode == 2
    assert "cannot open the stream log" in answer.stderr and "cannot reach Kafka" in answer.stderr
