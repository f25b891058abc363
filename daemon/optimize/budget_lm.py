"""``BudgetLM``: the ``dspy.BaseLM`` that charges every call of an optimization to its ``Budget``.

Imported only when a job runs (DSPy is slow to import; see ``budget``).
"""

from __future__ import annotations

from typing import Any

import dspy

from adaptd.daemon.optimize.budget import Budget


class BudgetLM(dspy.BaseLM):
    """A ``dspy.BaseLM`` that delegates to ``inner`` within a ``Budget``.

    Copies (DSPy copies LMs with new settings) share the budget and wrap ``inner``'s copy.
    """

    def __init__(self, inner: dspy.BaseLM, budget: Budget) -> None:
        super().__init__(model=getattr(inner, "model", "budgeted"), model_type=getattr(inner, "model_type", "chat"),
                         cache=False, num_retries=0)
        self.inner, self.budget = inner, budget
        self.kwargs = dict(getattr(inner, "kwargs", {}) or {})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.budget.reserve()
        last = self._last()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self._charge(last)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        self.budget.reserve()
        last = self._last()
        try:
            return await self.inner.acall(*args, **kwargs)
        finally:
            self._charge(last)

    def _last(self) -> Any:
        history = getattr(self.inner, "history", None)
        return history[-1] if history else None

    def _charge(self, last: Any) -> None:
        # Compared by identity: a history at its size cap keeps its length while moving on.
        entry = self._last()
        if entry is not None and entry is not last and isinstance(entry, dict):
            self.budget.charge(entry.get("cost"))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Not used: ``__call__`` / ``acall`` delegate whole calls to ``inner``."""
        raise NotImplementedError("BudgetLM delegates whole calls; call it")

    def copy(self, **kwargs: Any) -> BudgetLM:
        return BudgetLM(self.inner.copy(**kwargs), self.budget)

    def __deepcopy__(self, memo: dict[int, Any]) -> BudgetLM:
        return self  # shared runtime state, like a provider client

    def __getattr__(self, name: str) -> Any:
        # Capability probes (supports_function_calling, ...) answer as the inner LM does.
        if name in ("inner", "budget"):
            raise AttributeError(name)
        return getattr(self.inner, name)
