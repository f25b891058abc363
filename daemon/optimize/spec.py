"""A job's specification (what its ``queued`` event's details hold) and path-safe names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_SLUG = re.compile(r"[^\w.-]")


def slug(name: str) -> str:
    """``name`` safe as one path component."""
    return _SLUG.sub("_", name)[:120] or "_"


@dataclass
class JobSpec:
    """Everything a job needs to run (stored in its ``queued`` event's details)."""

    job_id: str
    tenant: str
    program: str
    optimizer: str
    params: dict[str, Any]
    train_path: str
    dev_path: str
    train_size: int
    dev_size: int
    budget_usd: float | None
    budget_lm_calls: int | None
    base_version: str | None = None
    base_path: str | None = None
    attempt: int = 1
    spent_lm_calls: int = 0
    spent_usd: float = 0.0
    trigger: str = "manual"
    caused_by: list[str] = field(default_factory=list)
    incident_id: str | None = None
    est_lm_calls: int | None = None
    recommendation: dict[str, Any] | None = None
    #: Set for a member of an ensemble: its id and every member's job id (plan order).
    ensemble_id: str | None = None
    ensemble_members: list[str] = field(default_factory=list)

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> JobSpec:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in details.items() if k in names})
