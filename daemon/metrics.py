"""The daemon's figures as Prometheus metrics, for ``GET /metrics``.

``metric_families`` is the pure mapping: the dict ``Runtime.stats()`` returns (the one
``/v1/stats`` shows admins) to metric families, every name prefixed ``adaptd_`` and every
counter ending ``_total``.  ``StatsCollector`` reads the figures at scrape time;
``exposition`` renders them in the Prometheus text format (0.0.4) through a registry of
its own, never the process-wide default one, so several daemons in one process (the
tests) never share a series.

What a caller sees (``viewer``): an admin (``None``) every series; a tenant that is not an
admin only the series labelled ``tenant=<its name>`` (its ingest counters, its processor
key evictions and refusals) plus ``adaptd_ready`` and ``adaptd_uptime_seconds``: no log
offsets, lags, processor or alert totals, which tell about the other tenants' traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

#: The media type of ``exposition``'s output (every Prometheus version reads it).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Ingest counters (``runtime.COUNTER_NAMES``), per tenant: stats key -> (name, help).
INGEST_COUNTERS: dict[str, tuple[str, str]] = {
    "events_acked": ("adaptd_events_acked_total",
                     "Events acknowledged: appended to the log and fsynced."),
    "dead_letters": ("adaptd_dead_letters_total",
                     "Items refused by validation and stored as dead letters."),
    "dead_letters_suppressed": ("adaptd_dead_letters_suppressed_total",
                                "Dead letters not stored: the tenant's dead-letter rate limit was spent."),
    "events_future": ("adaptd_events_future_total",
                      "Events refused for a timestamp further ahead of the daemon's clock than"
                      " limits.max_future_s."),
    "batches_acked": ("adaptd_batches_acked_total", "Ingest requests (batches) acknowledged."),
    "requests_refused": ("adaptd_requests_refused_total",
                         "Ingest requests refused as a whole (too large, malformed, log unavailable)."),
    "dropped": ("adaptd_events_dropped_total",
                "Events not stored because the log refused the append (answered 503: the client retries)."),
}
#: Series every caller sees: they tell nothing about other tenants.
PUBLIC = frozenset({"adaptd_ready", "adaptd_uptime_seconds"})


def _number(value: Any) -> float | None:
    """``value`` as a sample value; None for a figure that is missing or not a number."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _gauge(name: str, doc: str, value: Any) -> Iterator[Metric]:
    if (v := _number(value)) is not None:
        yield GaugeMetricFamily(name, doc, value=v)


def _counter(name: str, doc: str, value: Any) -> Iterator[Metric]:
    if (v := _number(value)) is not None:
        yield CounterMetricFamily(name, doc, value=v)


def _ingest(stats: Mapping[str, Any], tenants: Iterable[str]) -> Iterator[Metric]:
    """The ingest counters per tenant: every tenant in ``tenants`` (zeros until it sends,
    so ``rate()`` sees its first increase), then the ones in the stats.  What the totals
    count beyond the tenants' sum (a refusal before the tenant was known) is the series
    with an empty ``tenant`` label, so ``sum()`` over a family is the daemon's total."""
    per_tenant: Mapping[str, Mapping[str, Any]] = stats.get("tenants") or {}
    names = list(dict.fromkeys([*tenants, *per_tenant]))
    for key, (name, doc) in INGEST_COUNTERS.items():
        family = CounterMetricFamily(name, doc, labels=["tenant"])
        attributed = 0.0
        for tenant in names:
            value = _number((per_tenant.get(tenant) or {}).get(key, 0)) or 0.0
            attributed += value
            family.add_metric([tenant], value)
        total = _number(stats.get(key))
        if total is not None and total > attributed:
            family.add_metric([""], total - attributed)
        yield family


def _log(stats: Mapping[str, Any]) -> Iterator[Metric]:
    yield from _gauge("adaptd_log_end_offset", "The offset the next durable log record will have.",
                      stats.get("log_end_offset"))
    yield from _gauge("adaptd_log_start_offset", "The lowest log offset still held (after retention).",
                      stats.get("log_start_offset"))
    yield from _gauge("adaptd_log_truncated_bytes", "Torn-tail bytes cut from the log when it was opened.",
                      stats.get("log_truncated_bytes"))
    yield from _counter("adaptd_log_write_faults_total", "Log appends that failed (disk full, I/O error).",
                        stats.get("log_write_faults"))
    if "log_write_failing" in stats:
        yield GaugeMetricFamily("adaptd_log_write_failing", "1 while the log refuses appends (a disk fault being"
                                " retried), else 0.", value=float(stats["log_write_failing"] is not None))


def _projector(stats: Mapping[str, Any]) -> Iterator[Metric]:
    yield from _gauge("adaptd_projector_position", "The log offset the read model has projected up to.",
                      stats.get("projector_position"))
    yield from _gauge("adaptd_projector_lag", "Log records acknowledged but not projected yet.",
                      stats.get("projector_lag"))
    yield from _counter("adaptd_projector_errors_total", "Projector batches that failed (retried).",
                        stats.get("projector_errors"))
    yield from _counter("adaptd_events_projected_total", "Events projected into the read model since start.",
                        stats.get("events_projected"))
    store: Mapping[str, Any] = stats.get("store") or {}
    yield from _gauge("adaptd_dead_letters_stored", "Dead letters held in the read model (every tenant).",
                      store.get("dead_letters_stored"))
    yield from _counter("adaptd_dead_letters_expired_total", "Dead letters deleted by expiry since start.",
                        store.get("dead_letters_expired"))


#: Figures of the processors runtime: key -> (name, help, counter?).
PROCESSOR_RUNTIME: dict[str, tuple[str, str, bool]] = {
    "position": ("adaptd_processors_position", "The log offset the processors have read up to.", False),
    "lag": ("adaptd_processors_lag", "Log records the processors have not read yet.", False),
    "snapshot_position": ("adaptd_processors_snapshot_position", "The log offset of the last state snapshot.",
                          False),
    "records_read": ("adaptd_processors_records_read_total", "Log records the processors read since start.",
                     True),
    "events": ("adaptd_processors_events_total", "Events the processors folded since start.", True),
    "unreadable": ("adaptd_processors_unreadable_total", "Log records the processors could not decode.", True),
    "late_events": ("adaptd_processors_late_events_total", "Events that arrived after their window closed.",
                    True),
    "outputs": ("adaptd_processors_outputs_total", "Derived events the processors appended.", True),
    "snapshots": ("adaptd_processors_snapshots_total", "State snapshots written.", True),
    "errors": ("adaptd_processors_errors_total", "Processor steps that failed (retried).", True),
}
#: Figures of one processor (``Processor.metrics``), labelled ``processor``.
PROCESSOR_FIGURES: dict[str, tuple[str, str, bool]] = {
    "keys": ("adaptd_processor_keys", "Keys the processor holds state for.", False),
    "keys_per_tenant_cap": ("adaptd_processor_keys_per_tenant_cap",
                            "The most keys the processor holds for one tenant.", False),
    "open_incidents": ("adaptd_processor_open_incidents", "Incidents open (not resolved yet).", False),
    "signals": ("adaptd_processor_signals_total", "Signal events the processor emitted.", True),
}
#: Per-tenant figures of one processor (``KeyBudget.metrics``), labelled ``processor`` and ``tenant``.
PROCESSOR_TENANT_FIGURES: dict[str, tuple[str, str]] = {
    "keys_evicted": ("adaptd_processor_keys_evicted_total",
                     "Idle keys evicted to make room for the tenant's new ones (keys_per_tenant_cap)."),
    "keys_refused": ("adaptd_processor_keys_refused_total",
                     "New keys refused: the tenant was at keys_per_tenant_cap and no key was idle."),
}


def _family(name: str, doc: str, counter: bool, labels: list[str]) -> CounterMetricFamily | GaugeMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels) if counter else GaugeMetricFamily(name, doc, labels=labels)


def _processors(processors: Mapping[str, Any] | None) -> Iterator[Metric]:
    if not processors:  # processors disabled
        return
    for key, (name, doc, counter) in PROCESSOR_RUNTIME.items():
        yield from (_counter if counter else _gauge)(name, doc, processors.get(key))
    per: Mapping[str, Any] = processors.get("processors") or {}
    for key, (name, doc, counter) in PROCESSOR_FIGURES.items():
        family = _family(name, doc, counter, ["processor"])
        for processor, figures in per.items():
            if isinstance(figures, Mapping) and (v := _number(figures.get(key))) is not None:
                family.add_metric([processor], v)
        if family.samples:
            yield family
    for key, (name, doc) in PROCESSOR_TENANT_FIGURES.items():
        family = CounterMetricFamily(name, doc, labels=["processor", "tenant"])
        for processor, figures in per.items():
            by_tenant = figures.get(key) if isinstance(figures, Mapping) else None
            for tenant, value in (by_tenant or {}).items() if isinstance(by_tenant, Mapping) else ():
                if (v := _number(value)) is not None:
                    family.add_metric([processor, str(tenant)], v)
        if family.samples:
            yield family


#: Figures of one alert sink, labelled ``sink`` (its kind) and ``name`` (redacted).
SINK_FIGURES: dict[str, tuple[str, str, bool]] = {
    "delivered": ("adaptd_alert_sink_delivered_total", "Signals the sink delivered.", True),
    "failed": ("adaptd_alert_sink_failed_total", "Signals the sink failed to deliver (retries spent).", True),
    "retries": ("adaptd_alert_sink_retries_total", "Delivery attempts retried.", True),
    "dropped": ("adaptd_alert_sink_dropped_total", "Signals dropped: the sink's queue was full.", True),
    "queued": ("adaptd_alert_sink_queued", "Signals waiting in the sink's queue.", False),
}


def _alerts(alerts: Mapping[str, Any] | None) -> Iterator[Metric]:
    if not alerts:  # no alert sinks configured
        return
    yield from _gauge("adaptd_alerts_lag", "Log records the alert dispatcher has not read yet.", alerts.get("lag"))
    yield from _counter("adaptd_alerts_signals_total", "Signals the alert dispatcher passed to its sinks.",
                        alerts.get("signals"))
    yield from _counter("adaptd_alerts_errors_total", "Alert dispatcher steps that failed.", alerts.get("errors"))
    sinks = [s for s in alerts.get("sinks") or () if isinstance(s, Mapping)]
    for key, (name, doc, counter) in SINK_FIGURES.items():
        family = _family(name, doc, counter, ["sink", "name"])
        for sink in sinks:
            if (v := _number(sink.get(key))) is not None:
                family.add_metric([str(sink.get("sink", "")), str(sink.get("name", ""))], v)
        if family.samples:
            yield family


def _all(stats: Mapping[str, Any], tenants: Iterable[str]) -> Iterator[Metric]:
    yield from _ingest(stats, tenants)
    yield from _log(stats)
    yield from _projector(stats)
    yield from _processors(stats.get("processors"))
    yield from _alerts(stats.get("alerts"))
    if "ready" in stats:
        yield GaugeMetricFamily("adaptd_ready", "1 when the daemon can acknowledge and project events"
                                " (as GET /v1/ready answers 200), else 0.", value=float(bool(stats["ready"])))
    yield from _gauge("adaptd_uptime_seconds", "Seconds since the daemon started.", stats.get("uptime_s"))


def _only(family: Metric, tenant: str) -> Metric | None:
    """``family`` cut to ``tenant``'s samples; None when it has no sample labelled with it."""
    samples = [s for s in family.samples if s.labels.get("tenant") == tenant]
    if not samples:
        return None
    mine = Metric(family.name, family.documentation, family.type, family.unit)
    mine.samples = samples
    return mine


def metric_families(stats: Mapping[str, Any], *, tenants: Iterable[str] = (),
                    viewer: str | None = None) -> list[Metric]:
    """The metric families of ``stats`` (as ``Runtime.stats()`` returns them).

    Args:
        stats: the figures; a missing or None part (``processors`` when they are
            disabled, ``alerts`` without sinks) gives no family.
        tenants: the configured tenants, each given its ingest series (zeros before it
            sends anything).
        viewer: None for an admin (every series); else a tenant's name: only the series
            labelled with it, and ``adaptd_ready`` and ``adaptd_uptime_seconds``.
    """
    families = list(_all(stats, tenants))
    if viewer is None:
        return families
    visible = []
    for family in families:
        mine = family if family.name in PUBLIC else _only(family, viewer)
        if mine is not None:
            visible.append(mine)
    return visible


class StatsCollector(Collector):
    """Reads ``read()`` (``Runtime.stats``) at every scrape and maps it with ``metric_families``."""

    def __init__(self, read: Callable[[], Mapping[str, Any]], *, tenants: Iterable[str] = (),
                 viewer: str | None = None) -> None:
        self._read = read
        self._tenants = tuple(tenants)
        self._viewer = viewer

    def collect(self) -> Iterable[Metric]:
        return metric_families(self._read(), tenants=self._tenants, viewer=self._viewer)


def exposition(read: Callable[[], Mapping[str, Any]], *, tenants: Iterable[str] = (),
               viewer: str | None = None) -> bytes:
    """The Prometheus text exposition (``CONTENT_TYPE``) of ``read()``'s figures as
    ``viewer`` may see them, through a registry of its own.  Blocking: ``read`` runs here."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(read, tenants=tenants, viewer=viewer))
    return generate_latest(registry)
