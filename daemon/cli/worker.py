"""``adaptd worker --log kafka://HOST:PORT[/NAMESPACE]``: the processors as a Faust worker.

Start as many as the events topic has partitions to spread (each partition is folded by
one worker at a time); Kafka's consumer group moves a dead worker's partitions, with their
state restored from the table's changelog, to the others.  The daemon (``adaptd up`` with
the same ``--log``) ingests into Kafka and projects the derived topics into DuckDB.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from adaptd.daemon.cli.common import SETTINGS_ENV, config_option, fail
from adaptd.daemon.config import ConfigError, load_settings
from adaptd.streams.log.base import LogError

logger = logging.getLogger("adaptd.worker")


def events_partitions(servers: str, namespace: str, timeout: float) -> int:
    """The partition count of the namespace's events topic (asks the cluster).

    Raises:
        LogError: the cluster did not answer or the topic is missing.
    """
    from adaptd.streams.kafka.log import KafkaLog
    from adaptd.streams.kafka.topics import events_topic

    log = KafkaLog(servers, events_topic(namespace), timeout=timeout)
    try:
        return log.partitions
    finally:
        log.close()


@click.command(epilog=SETTINGS_ENV)
@click.option("--log", "log_url", envvar="ADAPTD_LOG__URL", show_envvar=True,
              help="kafka://HOST:PORT[,HOST:PORT...][/NAMESPACE] (default: the config's log.url).")
@config_option
@click.option("--data-dir", type=click.Path(path_type=Path), help="Faust's working directory (default: data_dir/worker-PID).")
@click.option("--commit-interval", type=click.FloatRange(0.1, 60), default=2.0, show_default=True,
              help="Seconds between source-offset commits.")
@click.option("--session-timeout", type=click.FloatRange(1, 300), default=30.0, show_default=True,
              help="Seconds without heartbeat before the group hands this worker's partitions to another.")
@click.option("--standby-replicas", type=click.IntRange(0, 5), default=1, show_default=True,
              help="Workers keeping a warm copy of each partition's state.")
@click.option("--batch", type=click.IntRange(1, 100_000), default=256, show_default=True,
              help="Most Kafka messages per processing step (a packed message holds up to 4,095 events).")
@click.option("--replication-factor", type=click.IntRange(1, 10), default=1, show_default=True,
              help="Replication of the topics the worker creates (its state changelog); 3 in production.")
@click.option("--loglevel", default="warning", show_default=True, help="Faust's log level.")
@click.option("--mock-cluster", is_flag=True, hidden=True,
              help="Work around librdkafka mock-cluster group quirks (tests and benchmarks only).")
def worker(log_url: str | None, config: Path | None, data_dir: Path | None, commit_interval: float,
           session_timeout: float, standby_replicas: int, batch: int, replication_factor: int, loglevel: str,
           mock_cluster: bool) -> None:
    """Run the processors as a faust-streaming worker on Kafka (until SIGTERM / Ctrl+C)."""
    import faust

    from adaptd.daemon.runtime import build_processors, runtime_options
    from adaptd.streams.kafka.app import ProcessorApp, WorkerOptions
    from adaptd.streams.kafka.log import parse_kafka_url
    from adaptd.streams.kafka.topics import DEFAULT_NAMESPACE, events_topic

    try:
        settings = load_settings(config)
        url = log_url or settings.log.url
        if not url.startswith("kafka://"):
            raise ConfigError(f"adaptd worker needs a kafka log: pass --log kafka://HOST:PORT (got {url!r})")
        servers, namespace = parse_kafka_url(url)
        namespace = namespace or DEFAULT_NAMESPACE
        partitions = events_partitions(servers, namespace, timeout=15.0)
    except ConfigError as exc:
        fail(str(exc))
    except LogError as exc:
        fail(f"cannot reach the events topic at {url!r}: {exc}")
    ps = settings.processors
    options = WorkerOptions(batch=batch, commit_interval_s=commit_interval, session_timeout_s=session_timeout,
                            heartbeat_interval_s=max(0.5, session_timeout / 10), standby_replicas=standby_replicas,
                            declare_topics=not mock_cluster, replication_factor=replication_factor,
                            **{k: v for k, v in runtime_options(ps).items()})  # type: ignore[arg-type]
    if mock_cluster:
        from adaptd.streams.kafka.mock_cluster import tolerate_mock_cluster_sync

        tolerate_mock_cluster_sync()
    workdir = data_dir or Path(settings.data_dir) / f"worker-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    app = ProcessorApp(servers.split(","), partitions, build_processors(ps), namespace=namespace, options=options,
                       datadir=str(workdir / "faust"))
    click.echo(f"adaptd worker: {events_topic(namespace)} ({partitions} partitions) -> {namespace}.derived.*",
               err=True)
    if settings.routing:  # the routing policy reads derived events, which workers do not follow yet
        click.echo("adaptd worker: [[routing]] is not run by Kafka workers yet (embedded mode only)", err=True)
    faust.Worker(app.app, loglevel=loglevel, workdir=str(workdir), quiet=True).execute_from_commandline()
