"""Daemon configuration: a TOML file, overridden by ``ADAPTD_*`` environment variables.

Precedence, highest first: explicit keyword arguments (CLI flags), environment variables
(``ADAPTD_PORT=8000``, nested with ``__``: ``ADAPTD_LOG__FSYNC=interval``), the TOML file
named by ``--config`` or ``ADAPTD_CONFIG``, then the defaults in ``config/adaptd.toml``
(mirrored by the field defaults below).
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from adaptd.daemon.adaptation.config import ProgramRouting
from adaptd.daemon.adaptation.policy_state import PolicyConfig
from adaptd.daemon.alerts import AlertSettings
from adaptd.daemon.optimize.settings import OptimizeProgram


class ConfigError(Exception):
    """The configuration is invalid; the message says which setting and how to fix it."""


class LogSettings(BaseModel):
    """The stream log."""

    url: str = Field(default="file", description="'file' (embedded, under data_dir/log) or kafka://HOST:PORT")
    fsync: Literal["batch", "interval"] = Field(
        default="batch", description="fsync after every group of batches, or at most every interval_ms"
    )
    fsync_interval_ms: int = Field(default=5, ge=0, le=10_000)
    segment_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    retention_bytes: int | None = Field(default=None, ge=0, description="None keeps everything")
    retention_hours: float | None = Field(default=None, ge=0, description="None keeps everything")
    max_pending_batches: int = Field(default=1024, ge=1)
    fault_retry_ms: int = Field(
        default=500, ge=0, le=60_000,
        description="after a disk fault (ENOSPC, EIO) appends fail at once (503) for this long, then are retried")


class LimitSettings(BaseModel):
    """Ingest limits (answers 413 or 422 past them)."""

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_batch_events: int = Field(default=10_000, ge=1)
    max_event_bytes: int = Field(default=256 * 1024, ge=256)
    max_depth: int = Field(
        default=64, ge=2, le=200, description="deepest nesting of an event (the event is level 1); deeper: dead letter")
    max_future_s: float | None = Field(
        default=300.0, ge=0, description="an event time further ahead of the receive time is dead-lettered (None: no bound)")
    dead_letters_per_s: float = Field(
        default=100.0, ge=0, description="dead letters written in full per tenant per second; beyond, answered and counted only")


class OtlpSettings(BaseModel):
    """OTLP/HTTP trace ingestion (``POST /v1/traces``)."""

    capture_content: bool = Field(
        default=False,
        description="keep the raw input/output text of spans (input.value, output.value, messages...)"
        " besides their features; off: features only (sizes, hashes, text sketch)",
    )


class ProcessorSettings(BaseModel):
    """The embedded processors (performance history; anomaly and drift build on it)."""

    enabled: bool = Field(default=True, description="run the processors in the daemon")
    lateness_s: float = Field(default=5.0, ge=0, le=86_400, description="how far the watermark trails event time")
    max_future_s: float | None = Field(
        default=0.0, ge=0, description="event times further ahead of the log's append time move the watermark only up to"
        " append time + this; keep it below lateness_s, or one client's clock makes every tenant's events late"
    )
    batch: int = Field(default=20_000, ge=1, description="most log records per processing step")
    snapshot_every_records: int = Field(default=100_000, ge=1)
    snapshot_every_s: float = Field(default=10.0, ge=0)
    close_quiet_windows: bool = Field(
        default=True, description="when live traffic goes quiet, close its windows on wall time: the daemon appends"
        " tick records that move the watermark (replay sees the same ticks)")
    history_windows: list[str] = Field(default=["10s", "1m", "1h"], min_length=1,
                                       description="ascending window sizes, each dividing the next")
    dedupe_events: int = Field(default=100_000, ge=1, description="re-sent ids are recognised within this many events")
    join_events: int = Field(default=500_000, ge=1, description="feedback joins executions within this many events")
    max_keys_per_tenant: int = Field(
        default=10_000, ge=1, description="history and error-burst keys (program, module, route, model) a tenant holds;"
        " a new key beyond it evicts the tenant's longest-idle key or is refused (counted)")
    max_detector_keys_per_tenant: int = Field(
        default=1_000, ge=1, description="anomaly keys and drift programs a tenant holds (each keeps detectors)")
    drift_enabled: bool = Field(default=True, description="run the drift processor")
    drift_window: str = Field(default="5m", description="drift windows per program, in event time")
    drift_min_executions: int = Field(default=500, ge=1, description="a drift window extends until it holds this many")
    drift_resolve_windows: int = Field(default=3, ge=1, description="clean windows before a drift incident resolves")
    drift_reference_windows: int = Field(default=5, ge=1, description="first windows per program that form the reference")
    drift_golden_quality: dict[str, list[float]] = Field(
        default={}, description="program -> golden-set scores: quality drift is tested against their mean")
    drift_reference: str = Field(
        default="7d", description="the reference each drift window is compared with, in event time: the clean windows"
        " of this span at the same time of the season (hour of the day by default), so daily cycles are not drift;"
        ' "" compares with the first drift_reference_windows windows, frozen')
    drift_season: str = Field(default="1d", description='the cycle the drift reference follows ("7d": weekly)')
    drift_season_buckets: int = Field(
        default=24, ge=1, description="buckets per season (24: hours of the day; 168 with a 7d season: hours of the week)")
    drift_alpha: float = Field(default=1e-4, gt=0, lt=1,
                               description="false-alarm probability per program and drift window, over all its tests")
    drift_min_samples: int = Field(default=50, ge=2, description="values a feature needs in a window and in its"
                                   " reference to be tested; a window with fewer is reported not_tested")
    drift_numeric_min_effect: float = Field(
        default=0.1, gt=0, le=1, description="smallest drift of a number (latency, tokens, lengths) that is flagged:"
        " the Kolmogorov-Smirnov distance, the largest gap between the two cumulative distributions")
    drift_categorical_min_effect: float = Field(
        default=0.1, gt=0, le=1, description="smallest drift of a category mix (route, model, status) that is flagged:"
        " the Jensen-Shannon distance of the shares")
    drift_text_min_auc: float = Field(
        default=0.55, gt=0.5, le=1, description="smallest content drift of a text field that is flagged: how well a"
        " classifier tells the window's texts from the reference's at equal length (0.5: not at all)")
    drift_quality_min_drop: float = Field(
        default=0.05, gt=0, le=1, description="smallest drop of the mean feedback score (0..1) that is flagged")

    @field_validator("drift_golden_quality")
    @classmethod
    def _drift_golden_quality(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for program, scores in value.items():
            if len([s for s in scores if math.isfinite(s)]) < 2:
                raise ValueError(f"drift_golden_quality.{program}: needs at least 2 finite scores")
        return value

    @field_validator("drift_window")
    @classmethod
    def _drift_window(cls, value: str) -> str:
        from adaptd.streams.processors.windows import parse_size

        parse_size(value)
        return value

    @model_validator(mode="after")
    def _drift_reference(self) -> ProcessorSettings:
        self.drift_detector_config()  # a reference, season or bucket count that do not fit: say which
        return self

    def drift_detector_config(self) -> Any:
        """The drift detector's ``DriftConfig`` from these settings (seed and caps: its defaults).

        Raises:
            ValueError: a reference, season or bucket count that do not fit together.
        """
        from adaptd.streams.processors.drift.detector import DriftConfig

        return DriftConfig(
            reference_windows=self.drift_reference_windows, reference=self.drift_reference, season=self.drift_season,
            season_buckets=self.drift_season_buckets, alpha=self.drift_alpha, min_samples=self.drift_min_samples,
            numeric_min_effect=self.drift_numeric_min_effect, categorical_min_effect=self.drift_categorical_min_effect,
            text_min_auc=self.drift_text_min_auc, quality_min_drop=self.drift_quality_min_drop)

    @field_validator("max_future_s")
    @classmethod
    def _future_below_lateness(cls, value: float | None, info: Any) -> float | None:
        lateness = info.data.get("lateness_s")
        if value is not None and value > 0 and lateness is not None and value >= lateness:
            raise ValueError(f"max_future_s ({value:g}) must be below lateness_s ({lateness:g}): else one client's"
                             " clock running ahead makes every tenant's live events late")
        return value

    @field_validator("history_windows")
    @classmethod
    def _windows_nest(cls, value: list[str]) -> list[str]:
        from adaptd.streams.processors.windows import check_nested, parse_size

        check_nested([parse_size(w) for w in value])
        return value


class RetentionSettings(BaseModel):
    """``[retention]``: how long the DuckDB read model keeps each table's rows (by event
    time ``ts``, against the wall clock), and how many at most.  The log's own retention
    is ``[log] retention_hours`` / ``retention_bytes``; dead letters expire by
    ``dead_letter_max_age_days``.

    A table not named keeps its rows forever.  The daemon applies it every ``interval_s``
    (and ``adaptd retention apply`` at once), deleting ``batch_rows`` at a time so the
    projector waits at most one small batch.
    """

    days: dict[str, float] = Field(
        default_factory=dict,
        description="table -> days of rows kept, e.g. {executions = 30, lm_calls = 7}; absent: kept forever")
    max_rows: dict[str, int] = Field(
        default_factory=dict,
        description="table -> most rows kept (every tenant's; the oldest by ts go first), e.g. {lm_calls = 10000000};"
        " absent: no ceiling")
    interval_s: float = Field(default=3600.0, gt=0, le=7 * 86_400, description="how often the daemon applies it")
    batch_rows: int = Field(default=50_000, ge=100, le=10_000_000, description="rows deleted per transaction")

    @field_validator("days", "max_rows")
    @classmethod
    def _known_tables(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        from adaptd.daemon.readmodel.migrations import EVENT_TABLES

        tables = sorted(EVENT_TABLES.values())
        unknown = sorted(set(value) - set(tables))
        if unknown:
            raise ValueError(f"unknown table(s) {', '.join(unknown)} in retention.{info.field_name}:"
                             f" one of {', '.join(tables)}")
        bad = sorted(t for t, d in value.items() if not (d > 0 and math.isfinite(d)))
        if bad:
            what = "number of days" if info.field_name == "days" else "number of rows"
            raise ValueError(f"retention.{info.field_name} of {', '.join(bad)} must be a positive {what}"
                             " (leave a table out to keep its rows)")
        return value


class Tenant(BaseModel):
    """A tenant and the bearer tokens that act for it.

    ``admin`` is opt-in: only a tenant with ``admin = true`` may use the write endpoints
    (routing actions, optimization jobs, revert, acknowledge).
    """

    name: str
    tokens: list[str] = Field(
        default_factory=list, validate_default=True,
        description="bearer tokens that act for the tenant: at least one, none empty",
    )
    admin: bool = Field(default=False, description="may use the admin (write) endpoints")

    @field_validator("tokens")
    @classmethod
    def _tokens_given(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('a [[tenants]] entry needs at least one token: add tokens = ["<secret>"]')
        if any(not token.strip() for token in value):
            raise ValueError("tokens must not be empty or whitespace: give each token a secret value")
        return value


class Settings(BaseSettings):
    """Everything the daemon reads at start."""

    model_config = SettingsConfigDict(
        env_prefix="ADAPTD_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Path(".adaptd")
    host: str = "127.0.0.1"
    port: int = Field(default=7710, ge=0, le=65535)
    log: LogSettings = Field(default_factory=LogSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    otlp: OtlpSettings = Field(default_factory=OtlpSettings)
    tenants: list[Tenant] = Field(default_factory=list)
    projector_batch: int = Field(default=50_000, ge=1)
    max_streams_per_tenant: int = Field(
        default=16, ge=1, description="open live tails (GET /v1/stream) per tenant; one more is answered 429")
    duckdb_memory_limit_mb: int | None = Field(
        default=None, ge=64, description="DuckDB's memory limit for the read model (buffer pool and queries; beyond"
        " it DuckDB spills to disk); unset: DuckDB's default, 80 % of the machine's RAM")
    dead_letter_max_age_days: float = Field(
        default=7.0, ge=0, description="dead letters older than this are deleted from the read model (by their time,"
        " against the log's clock); 0 keeps them all. adaptd replay must use the same value"
    )
    processors: ProcessorSettings = Field(default_factory=ProcessorSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    #: Programs whose LM routes adaptd chooses (``[[routing]]``; see ``ProgramRouting``).
    routing: list[ProgramRouting] = Field(default_factory=list)
    #: The routing policy's global knobs and its circuit breakers (``[routing_policy]``).
    routing_policy: PolicyConfig = Field(default_factory=PolicyConfig)
    #: Programs adaptd re-optimizes (``[[optimize]]``; see ``adaptd.daemon.optimize.settings``).
    optimize: list[OptimizeProgram] = Field(default_factory=list)
    shutdown_timeout_s: float = Field(default=10.0, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("host must not be empty (use 127.0.0.1 for loopback)")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @property
    def is_loopback(self) -> bool:
        """True when the daemon only listens on this machine."""
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    def token_map(self) -> dict[str, Tenant]:
        """Bearer token -> tenant."""
        return {tok: t for t in self.tenants for tok in t.tokens}


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by ``ADAPTD_CONFIG`` (set by ``--config``)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("ADAPTD_CONFIG")
        return load_toml(Path(path)) if path else {}


def load_toml(path: Path) -> dict[str, Any]:
    """Read a config file.

    Raises:
        ConfigError: the file is missing or not valid TOML (message names the file).
    """
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found: pass an existing file to --config") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, ``config`` (or ADAPTD_CONFIG), env and overrides.

    Overrides whose value is None are ignored (unset CLI flags).

    Raises:
        ConfigError: one line per invalid setting, saying what to fix.
    """
    from pydantic import ValidationError

    if config is not None:
        os.environ["ADAPTD_CONFIG"] = str(config)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        ]
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None
