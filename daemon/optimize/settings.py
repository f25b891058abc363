"""``[[optimize]]``: the programs adaptd may re-optimize, and how (a config list).

```toml
[[optimize]]
program = "qa"
factory = "mypkg.qa:make_program"        # () -> dspy.Module
metric = "mypkg.qa:exact_match"          # (example, prediction, trace=None) -> float | bool
lm = "mypkg.qa:make_lm"                  # () -> dspy.BaseLM used while optimizing
trainset = "data/qa_train.jsonl"         # optional; else harvested from executions
devset = "data/qa_dev.jsonl"             # optional; else a held-out share of the trainset
harvest_threshold = 0.8
budget_usd = 1.0
budget_lm_calls = 2000
margin = 0.05
routes = ["blue", "green"]               # two routes of the program's [[routing]]
ensemble = 2                             # drift-triggered runs: the top-2 optimizers within the budget
```

Example files are JSONL, one ``{"inputs": {...}, "outputs": {...}}`` per line (what
``adaptd trainset export`` writes).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _check_path(value: str | None) -> str | None:
    if value is not None and not _IMPORT_PATH.match(value):
        raise ValueError(f"{value!r} is not an import path: write 'package.module:attribute'")
    return value


class OptimizeProgram(BaseModel):
    """One registered program: where its code, metric and examples are, and the limits
    of its automatic re-optimization.

    Raises (at construction): ``pydantic.ValidationError`` for a malformed import path,
    two identical routes, or out-of-range numbers.
    """

    model_config = ConfigDict(extra="forbid")

    program: str = Field(min_length=1, max_length=256)
    factory: str = Field(description="import path of a () -> dspy.Module factory")
    metric: str | None = Field(None, description="import path of metric(example, prediction, trace=None)")
    feedback_metric: bool = Field(
        False, description="the metric returns dspy.Prediction(score=, feedback=) and takes GEPA's 5 arguments")
    lm: str | None = Field(None, description="import path of a () -> dspy.BaseLM used while optimizing")
    reflection_lm: str | None = Field(None, description="import path of a () -> dspy.BaseLM for GEPA / SIMBA")
    finetunable: bool = Field(False, description="the task LM can be fine-tuned (BootstrapFinetune)")
    trainset: str | None = Field(None, description="JSONL file of examples; none: harvested from executions")
    devset: str | None = Field(None, description="JSONL file; none: a held-out share of the trainset")
    devset_share: float = Field(0.3, gt=0, lt=1, description="held-out share when there is no devset file")
    harvest_threshold: float = Field(0.8, description="feedback score an execution needs to become an example")
    harvest_limit: int = Field(1000, ge=1, le=100_000, description="most harvested examples (newest first)")
    min_examples: int = Field(4, ge=1, description="fewer examples than this: the job fails with the reason")
    budget_usd: float | None = Field(1.0, ge=0, description="cost ceiling of one optimization (None: none)")
    budget_lm_calls: int | None = Field(2000, ge=1, description="LM-call ceiling of one optimization")
    margin: float = Field(0.05, ge=0, le=1, description="devset gain (metric units) needed to roll out")
    min_interval_s: float = Field(3600.0, ge=0, description="least time between two automatic runs")
    trigger_on_drift: bool = Field(True, description="a quality-drift signal starts a re-optimization")
    optimizer: str | None = Field(None, description="always use this optimizer (else: recommended)")
    ensemble: int = Field(1, ge=1, le=9, description="automatic runs: the top-k optimizers that fit the one budget"
                          " (1: the recommended one alone)")
    ensemble_choice: Literal["cheaper", "ranked"] = Field(
        "cheaper", description="which member an ensemble keeps: the best devset score, ties to the cheaper run;"
                               " or 'ranked': scores within the devset's sampling error tie, to the recommender's rank")
    #: Two routes of the program's ``[[routing]]`` that serve program versions: the live
    #: one and the slot a new version is canaried on; they swap roles at each promotion.
    routes: list[str] | None = Field(None, min_length=2, max_length=2)
    canary_share: float = Field(0.2, gt=0, le=0.5)
    min_live_samples: int = Field(20, ge=1, description="canary feedback scores before a verdict")
    live_tolerance: float = Field(0.0, ge=0, le=1, description="canary quality may trail the live one by this")
    canary_timeout_s: float = Field(3600.0, gt=0, description="no verdict by then: roll the canary back")
    resume: bool = Field(True, description="re-run a job interrupted by a restart (once), else mark it interrupted")

    @field_validator("factory", "metric", "lm", "reflection_lm")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return _check_path(value)

    @model_validator(mode="after")
    def _check(self) -> OptimizeProgram:
        if self.routes is not None and self.routes[0] == self.routes[1]:
            raise ValueError(f"optimize {self.program!r}: routes must be two different routes")
        return self
