"""One optimization, start to end, with no daemon state: load, score, compile, score, save.

``run_optimization`` runs in the job manager's worker thread (never on the event loop).
Every LM call of the run goes through one ``BudgetLM`` (``budget``), so the budget covers
the baseline scoring, the optimizer's own calls and the final scoring; a run that
reaches it stops with status ``budget_exhausted``.  ``progress(stage, details)`` is
called between stages (the job manager turns it into ``optimizer_run`` events).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptd.daemon.optimize.budget import Budget, BudgetExhausted
from adaptd.daemon.optimize.recommend import spec_of
from adaptd.daemon.optimize.settings import OptimizeProgram

logger = logging.getLogger("adaptd.optimize")

Progress = Callable[[str, dict[str, Any]], None]


class SetupError(ValueError):
    """The program's registration cannot be loaded (import path, LM, examples)."""


def load_object(path: str) -> Any:
    """The object at ``package.module:attribute``.

    Raises:
        SetupError: the module or the attribute does not exist (message names them).
    """
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SetupError(f"cannot import {module_name!r} (from {path!r}): {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SetupError(f"{module_name!r} has no attribute {attr!r} (from {path!r})") from None
    return obj


@dataclass
class RunResult:
    """How a run ended and what it spent."""

    status: str  # succeeded | failed | budget_exhausted
    score_before: float | None = None
    score_after: float | None = None
    path: str | None = None
    lm_calls: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def to_dspy(examples: Sequence[Mapping[str, Any]]) -> list[Any]:
    """``{"inputs", "outputs"}`` dicts as ``dspy.Example``s with their inputs marked."""
    import dspy

    return [dspy.Example(**ex["inputs"], **ex["outputs"]).with_inputs(*ex["inputs"]) for ex in examples]


def score(program: Any, metric: Callable[..., Any], devset: Sequence[Any]) -> float:
    """Mean metric over ``devset`` (bool as 0/1, a Prediction's ``score``); an example
    whose run or metric raises an ``Exception`` scores 0.  Empty devset: 0.0.

    Raises:
        BudgetExhausted: the budget ran out mid-way.
    """
    total = 0.0
    for ex in devset:
        try:
            value = metric(ex, program(**ex.inputs()))
            value = getattr(value, "score", value)
            total += float(value or 0.0)
        except Exception as exc:  # a failing example scores 0, as in dspy.Evaluate
            logger.debug("example failed while scoring: %s", exc)
    return total / len(devset) if devset else 0.0


def build_optimizer(name: str, params: Mapping[str, Any], metric: Callable[..., Any], *, train_size: int,
                    reflection_lm: Any = None) -> tuple[Any, dict[str, Any]]:
    """The DSPy optimizer for catalog entry ``name`` with ``params``, and the compile
    keyword arguments it needs.  Single-threaded: the daemon shares its cores.

    Raises:
        SetupError: unknown optimizer name.
    """
    import dspy

    spec = spec_of(name)
    if spec is None:
        raise SetupError(f"unknown optimizer {name!r}")
    kw = dict(params)
    cls = spec.dspy_class
    if cls == "BootstrapFewShot":
        return dspy.BootstrapFewShot(metric=metric, **kw), {}
    if cls == "BootstrapFewShotWithRandomSearch":
        return dspy.BootstrapFewShotWithRandomSearch(metric=metric, num_threads=1, **kw), {}
    if cls == "MIPROv2":
        return dspy.MIPROv2(metric=metric, num_threads=1, **kw), {}
    if cls == "GEPA":
        return dspy.GEPA(metric=metric, reflection_lm=reflection_lm, num_threads=1, **kw), {}
    if cls == "SIMBA":
        return dspy.SIMBA(metric=metric, bsize=max(1, min(32, train_size)), num_threads=1, **kw), {}
    if cls == "COPRO":
        return dspy.COPRO(metric=metric, **kw), {"eval_kwargs": {"num_threads": 1, "display_progress": False}}
    return dspy.BootstrapFinetune(metric=metric, num_threads=1, **kw), {}


def load_program(entry: OptimizeProgram, state_path: str | None) -> Any:
    """A fresh program from the factory, with the saved state at ``state_path`` if given."""
    program = load_object(entry.factory)()
    if state_path:
        program.load(state_path)
    return program


def run_optimization(entry: OptimizeProgram, *, optimizer: str, params: Mapping[str, Any],
                     train: Sequence[Mapping[str, Any]], dev: Sequence[Mapping[str, Any]], budget: Budget,
                     base_path: str | None, out_path: Path, progress: Progress,
                     clock: Callable[[], float] = time.monotonic) -> RunResult:
    """Score the current version on ``dev``, compile with ``optimizer``, score the result
    and save it to ``out_path`` (JSON state; written only on success).

    Returns:
        The result; ``failed`` with ``error`` for any exception (setup or optimizer), and
        ``budget_exhausted`` when the budget stopped it (scores so far kept).
    """
    import dspy

    from adaptd.daemon.optimize.budget_lm import BudgetLM

    started = clock()
    result = RunResult(status="failed")
    try:
        if entry.lm is None:
            raise SetupError(f"optimize {entry.program!r}: set lm = 'module:function' (the LM used while optimizing)")
        if entry.metric is None:
            raise SetupError(f"optimize {entry.program!r}: set metric = 'module:function'")
        metric = load_object(entry.metric)
        lm = BudgetLM(load_object(entry.lm)(), budget)
        reflection = BudgetLM(load_object(entry.reflection_lm)(), budget) if entry.reflection_lm else None
        trainset, devset = to_dspy(train), to_dspy(dev)
        with dspy.context(lm=lm):
            base = load_program(entry, base_path)
            result.score_before = score(base, metric, devset)
            progress("baseline", {"score_before": result.score_before, "lm_calls": budget.calls,
                                  "cost_usd": budget.spent_usd})
            opt, compile_kw = build_optimizer(optimizer, params, metric, train_size=len(trainset),
                                              reflection_lm=reflection)
            compiled = opt.compile(load_program(entry, base_path), trainset=trainset, **compile_kw)
            progress("compiled", {"lm_calls": budget.calls, "cost_usd": budget.spent_usd})
            result.score_after = score(compiled, metric, devset)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.stem + ".tmp.json")
        compiled.save(str(tmp))
        tmp.replace(out_path)
        result.path, result.status = str(out_path), "succeeded"
    except BudgetExhausted as exc:
        result.status, result.error = "budget_exhausted", str(exc)
    except Exception as exc:  # any failure of user code or the optimizer ends the job, never the daemon
        logger.warning("optimization of %s failed: %s", entry.program, exc, exc_info=True)
        result.error = f"{type(exc).__name__}: {exc}"[:2000]
    result.lm_calls, result.cost_usd = budget.calls, round(budget.spent_usd, 6)
    result.seconds = round(clock() - started, 3)
    return result
