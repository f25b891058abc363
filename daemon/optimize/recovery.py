"""Which unfinished jobs the daemon may resume after a restart, and with what.

A job is resumed from its own ``optimizer_run`` rows (source ``adaptd.optimize``, which
ingest refuses from clients).  Rows of that source written by an older daemon that did
not refuse them, or a log edited by hand, must still not make the daemon read or write
arbitrary files, act for another tenant or spend past the configured budget.  So a job
is rebuilt from its rows under these rules, and refused (with the reason) otherwise:

- the tenant, job id, program and optimizer come from the row's columns, never from
  the ``details`` the specification travels in;
- the program is configured (``[[optimize]]``) and the optimizer is known;
- the example files are the job's own snapshot, ``data_dir/optimize/jobs/<job_id>/
  {train,dev}.jsonl`` (after resolving symlinks), and the base program, if any, is a
  saved version of the same tenant and program under ``data_dir/optimize/programs``;
- budgets are capped by the program's configured ``budget_usd`` / ``budget_lm_calls``,
  and what earlier attempts spent is a non-negative number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from adaptd.daemon.optimize.recommend import spec_of
from adaptd.daemon.optimize.settings import OptimizeProgram
from adaptd.daemon.optimize.spec import JobSpec, slug


class UntrustedJob(Exception):
    """A stored job cannot be resumed; the message says why."""


Number = TypeVar("Number", int, float)


def cap(requested: Number | None, ceiling: Number | None) -> Number | None:
    """``requested`` held to ``ceiling`` (None: no ceiling); no request means the ceiling."""
    if requested is None:
        return ceiling
    return requested if ceiling is None else min(requested, ceiling)


def _inside(path: Any, folder: Path, what: str) -> str:
    if not isinstance(path, str) or not path:
        raise UntrustedJob(f"its {what} is not a path")
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise UntrustedJob(f"its {what} {path!r} is outside {folder}")
    return str(resolved)


def _number(value: Any, what: str, *, integer: bool = False, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if not ok or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise UntrustedJob(f"its {what} {value!r} is not a non-negative number")
    return value


def _members(value: Any, job_id: str) -> list[str]:
    """An ensemble's member job ids: a short list of strings holding the job itself
    (nothing else is trusted: the list only says which jobs' rows to read)."""
    if value is None or value == []:
        return []
    if not isinstance(value, list) or len(value) > 32 or not all(isinstance(v, str) for v in value) \
            or job_id not in value:
        raise UntrustedJob("its ensemble members are not a list of job ids holding the job")
    return [v[:64] for v in value]


def resume_spec(first: Mapping[str, Any], latest: Mapping[str, Any], root: Path,
                programs: Mapping[str, OptimizeProgram]) -> JobSpec:
    """The specification to run again for the job whose first ``queued`` row is ``first``
    and latest row is ``latest`` (rows of ``optimizer_runs``), under the module's rules.

    Args:
        root: ``data_dir/optimize``.
        programs: the configured programs by name.

    Raises:
        UntrustedJob: a rule is broken; the message says which.
    """
    details = first.get("details")
    if not isinstance(details, Mapping):
        raise UntrustedJob("its queued event has no specification")
    tenant, job_id, program = first["tenant"], first["job_id"], first["program"]
    entry = programs.get(program)
    if entry is None:
        raise UntrustedJob(f"program {program!r} has no [[optimize]] configuration")
    if spec_of(first["optimizer"]) is None:
        raise UntrustedJob(f"optimizer {first['optimizer']!r} is unknown")
    later: Mapping[str, Any] = latest["details"] if isinstance(latest.get("details"), Mapping) else {}
    given = {**details, **{k: v for k, v in later.items() if k in ("attempt", "spent_lm_calls", "spent_usd")}}
    params = given.get("params", {})
    if not isinstance(params, Mapping):
        raise UntrustedJob("its optimizer params are not an object")
    job_dir = root / "jobs" / slug(job_id)
    versions = root / "programs" / slug(tenant) / slug(program)
    base_path = given.get("base_path")
    attempt = given.get("attempt", 1)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise UntrustedJob(f"its attempt {attempt!r} is not a positive integer")
    try:
        spec = JobSpec(
            job_id=job_id, tenant=tenant, program=program, optimizer=first["optimizer"], params=dict(params),
            train_path=_inside(given.get("train_path"), job_dir, "training file"),
            dev_path=_inside(given.get("dev_path"), job_dir, "dev file"),
            train_size=_number(given.get("train_size", 0), "train_size", integer=True),
            dev_size=_number(given.get("dev_size", 0), "dev_size", integer=True),
            budget_usd=cap(_number(given.get("budget_usd"), "budget_usd", allow_none=True), entry.budget_usd),
            budget_lm_calls=cap(_number(given.get("budget_lm_calls"), "budget_lm_calls", integer=True,
                                        allow_none=True), entry.budget_lm_calls),
            base_version=given.get("base_version") if isinstance(given.get("base_version"), str) else None,
            base_path=None if base_path is None else _inside(base_path, versions, "base program"),
            attempt=attempt,
            spent_lm_calls=_number(given.get("spent_lm_calls", 0), "spent_lm_calls", integer=True),
            spent_usd=float(_number(given.get("spent_usd", 0.0), "spent_usd")),
            trigger=str(given.get("trigger", "manual"))[:64],
            caused_by=[str(c) for c in given.get("caused_by", [])] if isinstance(given.get("caused_by"), list) else [],
            incident_id=str(given["incident_id"]) if given.get("incident_id") is not None else None,
            est_lm_calls=given.get("est_lm_calls") if isinstance(given.get("est_lm_calls"), int) else None,
            ensemble_id=str(given["ensemble_id"])[:64] if given.get("ensemble_id") is not None else None,
            ensemble_members=_members(given.get("ensemble_members"), job_id),
        )
    except KeyError as exc:
        raise UntrustedJob(f"its row lacks {exc}") from None
    return spec
