"""Alert settings: the sinks signals go to and the filters before them (``[alerts]``).

Pure configuration (pydantic models, validated when the config loads); the delivery
workers are in ``alert_delivery``, the dispatcher in ``alerts``.  Secrets (a PagerDuty
routing key, Apprise URLs) are ``SecretStr``: they never show in a repr or a dump.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

#: adaptd's signal severities, in order.
SEVERITY = {"info": 0, "warning": 1, "critical": 2}

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

Severity = Literal["info", "warning", "critical"]
PagerDutySeverity = Literal["critical", "error", "warning", "info"]


def _same_severity() -> dict[Severity, PagerDutySeverity]:
    return {"info": "info", "warning": "warning", "critical": "critical"}


def _http_url(value: str, what: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{what} url {value!r} must start with http:// or https://")
    return value


class HttpSink(BaseModel):
    """What every HTTP sink shares: timeout and retries (connection errors, 408, 429, 5xx)."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=5.0, gt=0, le=300)
    retries: int = Field(default=3, ge=0, le=20, description="attempts after the first")
    backoff_s: float = Field(default=0.5, ge=0, le=60, description="first pause; doubles per retry")
    max_retry_after_s: float = Field(
        default=60.0, ge=0, le=3600, description="longest pause a 429's Retry-After header may ask for")


class WebhookSink(HttpSink):
    """POST each signal as JSON to ``url``."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return _http_url(value, "webhook")


class SlackSink(HttpSink):
    """POST each signal to a Slack incoming webhook (``text`` + Block Kit ``blocks``)."""

    url: str = Field(description="the incoming webhook URL (https://hooks.slack.com/services/...): a secret")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return _http_url(value, "slack")


class PagerDutySink(HttpSink):
    """Send each signal to PagerDuty's Events API v2: ``open`` / ``update`` trigger,
    ``resolved`` resolves, the incident id is the ``dedup_key``."""

    routing_key: SecretStr = Field(description="the integration key of a PagerDuty service (Events API v2)")
    url: str = Field(default=PAGERDUTY_EVENTS_URL, description="the Events API v2 endpoint")
    severity: dict[Severity, PagerDutySeverity] = Field(
        default_factory=_same_severity,
        description="adaptd severity -> PagerDuty severity (those not given map to the same name)")
    source: str = Field(default="adaptd", min_length=1, max_length=255, description="payload.source")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return _http_url(value, "pagerduty")

    @field_validator("severity")
    @classmethod
    def _complete(cls, value: dict[Severity, PagerDutySeverity]) -> dict[Severity, PagerDutySeverity]:
        return {**_same_severity(), **value}

    @field_validator("routing_key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("pagerduty routing_key must not be empty (the service's Events API v2 integration key)")
        return value


class AppriseSink(BaseModel):
    """Notify through Apprise (Opsgenie, Microsoft Teams, email, ...: one URL per service).

    Each URL is its own delivery worker with its own counters.  Apprise tells success or
    failure, not why, so every failure is retried (``retries``, with backoff).
    """

    model_config = ConfigDict(extra="forbid")

    urls: list[SecretStr] = Field(min_length=1, description="Apprise URLs, e.g. opsgenie://KEY, msteams://...")
    retries: int = Field(default=3, ge=0, le=20, description="attempts after the first")
    backoff_s: float = Field(default=0.5, ge=0, le=60, description="first pause; doubles per retry")

    @field_validator("urls")
    @classmethod
    def _known(cls, urls: list[SecretStr]) -> list[SecretStr]:
        # Only here (a configured apprise sink) is Apprise imported: a daemon without one stays lean.
        try:
            apprise = importlib.import_module("apprise")
        except ImportError:
            raise ValueError("alerts.apprise needs the apprise package: pip install 'apprise>=1.9'") from None
        quiet, level = logging.getLogger("apprise"), logging.getLogger("apprise").level
        quiet.setLevel(logging.CRITICAL)  # its complaint about a bad URL repeats the URL (a secret)
        try:
            for i, url in enumerate(urls):
                if apprise.Apprise.instantiate(url.get_secret_value()) is None:
                    scheme = url.get_secret_value().partition("://")[0]
                    raise ValueError(f"apprise url #{i + 1} ({scheme}://…) is not a URL Apprise can notify; "
                                     "see https://github.com/caronc/apprise/wiki")
        finally:
            quiet.setLevel(level)
        return urls


class FileSink(BaseModel):
    """Append each signal to ``path`` as one JSON line."""

    model_config = ConfigDict(extra="forbid")

    path: Path


class CommandSink(BaseModel):
    """Run ``argv`` (no shell) with the signal JSON on stdin."""

    model_config = ConfigDict(extra="forbid")

    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=10.0, gt=0, le=600)


class AlertSettings(BaseModel):
    """Where signals go (``[alerts]`` in the config; ``ADAPTD_ALERTS__...`` in the env)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="run the dispatcher when at least one sink is configured")
    webhooks: list[WebhookSink] = Field(default_factory=list)
    slack: list[SlackSink] = Field(default_factory=list)
    pagerduty: list[PagerDutySink] = Field(default_factory=list)
    apprise: list[AppriseSink] = Field(default_factory=list)
    commands: list[CommandSink] = Field(default_factory=list)
    files: list[FileSink] = Field(default_factory=list)
    states: list[Literal["open", "update", "resolved"]] = Field(default=["open", "resolved"], min_length=1)
    min_severity: Severity = Field(
        default="info", description="open / update signals below it are not sent (resolved always are)")
    max_age_s: float | None = Field(default=3600.0, gt=0, description="skip signals older than this (event time vs now)")
    from_beginning: bool = Field(default=False, description="first start: read the whole log (default: only new signals)")
    queue_size: int = Field(default=1000, ge=1, description="signals waiting per sink; beyond, the oldest is dropped")
    batch: int = Field(default=1000, ge=1)
    poll_s: float = Field(default=0.5, gt=0, le=60)

    @property
    def has_sinks(self) -> bool:
        """True when at least one sink is configured."""
        return bool(self.webhooks or self.slack or self.pagerduty or self.apprise or self.commands or self.files)
