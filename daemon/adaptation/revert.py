"""What undoes an adaptation (pure): the inverse admin action, or why there is none.

The inverse of an operator or policy decision is another admin action appended to the
log, never a deletion: the timeline keeps both, and a replay reaches the same state.

======================  ==========================================================
decision                inverse
======================  ==========================================================
``pin R``               ``pin P`` if ``P`` was pinned just before, else ``unpin``
``unpin``               ``pin P`` of the route pinned just before
``canary R``            ``rollback R``
``promote R``           ``rollback R``
``rollback R``          ``canary R`` with the share of ``R``'s last canary (default 0.05)
======================  ==========================================================

Everything else (routing tables the policy computed, breaker transitions, signal
acknowledgements, optimizer actions) has no inverse admin action: ``NotRevertible`` says
what to do instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Default share of a canary restored by reverting a rollback (the admin API's default).
DEFAULT_CANARY_SHARE = 0.05

_WHY_NOT = {
    "routing_table": "routing tables are computed by the policy; revert the admin action that caused it, "
                     "or pin a route",
    "breaker_open": "breaker transitions follow the route's outcomes; pin another route to steer traffic",
    "breaker_half_open": "breaker transitions follow the route's outcomes; pin another route to steer traffic",
    "breaker_close": "breaker transitions follow the route's outcomes; pin another route to steer traffic",
    "signal_ack": "an acknowledgement is a note on a signal, not a routing decision",
}


class NotRevertible(ValueError):
    """The adaptation has no inverse admin action; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Inverse:
    """The admin action that undoes an adaptation."""

    action: str
    route: str | None
    details: dict[str, Any] = field(default_factory=dict)


def inverse(adaptation: Mapping[str, Any], earlier: Sequence[Mapping[str, Any]]) -> Inverse:
    """The admin action undoing ``adaptation``.

    Args:
        adaptation: the adaptation row (``action``, ``program``, ``route``, ``details``).
        earlier: the same program's ``pin`` / ``unpin`` / ``canary`` actions logged before
            it, oldest first (only consulted for ``pin``, ``unpin`` and ``rollback``).

    Returns:
        The inverse action; ``details`` holds a canary's ``share``.

    Raises:
        NotRevertible: the action has no inverse, or the state before it cannot be told.
    """
    action, route = adaptation.get("action"), adaptation.get("route")
    if action in _WHY_NOT:
        raise NotRevertible(f"{action} cannot be reverted: {_WHY_NOT[action]}")
    if action not in ("pin", "unpin", "canary", "promote", "rollback"):
        raise NotRevertible(f"{action} cannot be reverted: no inverse admin action is known for it")
    if action != "unpin" and not route:
        raise NotRevertible(f"{action} without a route cannot be reverted")
    if action in ("canary", "promote"):
        return Inverse("rollback", route)
    if action == "rollback":
        shares = [a.get("details", {}).get("share") for a in earlier
                  if a.get("action") == "canary" and a.get("route") == route]
        share = next((s for s in reversed(shares) if isinstance(s, (int, float))), DEFAULT_CANARY_SHARE)
        return Inverse("canary", route, {"share": float(share)})
    previous = _pinned_before(earlier)
    if action == "pin":
        return Inverse("pin", previous) if previous and previous != route else Inverse("unpin", None)
    if previous is None:
        raise NotRevertible("unpin cannot be reverted: no route was pinned before it")
    return Inverse("pin", previous)


def _pinned_before(earlier: Sequence[Mapping[str, Any]]) -> str | None:
    """The route pinned after ``earlier`` (oldest first), or None."""
    pinned = None
    for a in earlier:
        if a.get("action") == "pin":
            pinned = a.get("route")
        elif a.get("action") == "unpin":
            pinned = None
    return pinned
