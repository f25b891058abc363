"""Counting an optimization's LM calls and cost, and stopping it at its budget.

``Budget`` is the account (no DSPy here: the daemon imports this at start, and DSPy takes
seconds to import); ``budget_lm.BudgetLM`` wraps the LM an optimization uses (task, teacher, reflection: all of them).
Each call first asks the shared ``Budget`` whether one more call fits; past the budget it
raises ``BudgetExhausted``, a ``BaseException`` on purpose: DSPy's optimizers and its
``ParallelExecutor`` catch ``Exception`` per example and carry on, which would turn a
stop into a long series of failing calls.  Afterwards it adds the call's cost (the
provider's ``cost`` in the LM history entry, when it reports one).

A DSPy callback could count calls too, but DSPy swallows exceptions raised in callbacks,
so only a wrapper can stop the run.
"""

from __future__ import annotations

import threading


class BudgetExhausted(BaseException):
    """The optimization reached its LM-call or cost ceiling (stops the run)."""


class Budget:
    """LM calls and USD spent against optional ceilings (thread-safe).

    ``spent_*`` start at what an earlier attempt of the same job already spent, so a
    resumed job cannot spend its budget twice.
    """

    def __init__(self, max_usd: float | None = None, max_calls: int | None = None, *,
                 spent_usd: float = 0.0, spent_calls: int = 0) -> None:
        self.max_usd, self.max_calls = max_usd, max_calls
        self.spent_usd, self.calls = float(spent_usd), int(spent_calls)
        self.exhausted: str | None = None
        self._lock = threading.Lock()

    def reserve(self) -> None:
        """Count one call about to be made.

        Raises:
            BudgetExhausted: the call would exceed ``max_calls``, or ``max_usd`` is
                already reached (the reason is kept in ``exhausted``).
        """
        with self._lock:
            if self.max_calls is not None and self.calls >= self.max_calls:
                self.exhausted = f"LM-call budget of {self.max_calls} reached"
            elif self.max_usd is not None and self.spent_usd >= self.max_usd:
                self.exhausted = f"cost budget of ${self.max_usd:g} reached (spent ${self.spent_usd:.4f})"
            if self.exhausted is not None:
                raise BudgetExhausted(self.exhausted)
            self.calls += 1

    def charge(self, usd: float | None) -> None:
        """Add a finished call's cost (None or negative: nothing)."""
        if usd is not None and usd > 0:
            with self._lock:
                self.spent_usd += float(usd)
