"""The inverse of each adaptation (pure): what undoes it, and why some cannot be undone."""

from __future__ import annotations

import pytest

from adaptd.daemon.adaptation.revert import Inverse, NotRevertible, inverse


def a(action: str, route: str | None = None, **details) -> dict:
    return {"action": action, "program": "qa", "route": route, "details": details}


def test_pin_reverts_to_the_previous_pin_or_to_unpin() -> None:
    assert inverse(a("pin", "b"), []) == Inverse("unpin", None)
    assert inverse(a("pin", "b"), [a("pin", "a")]) == Inverse("pin", "a")
    assert inverse(a("pin", "b"), [a("pin", "a"), a("unpin")]) == Inverse("unpin", None)
    assert inverse(a("pin", "b"), [a("pin", "b")]) == Inverse("unpin", None)


def test_unpin_reverts_to_the_route_pinned_before_and_needs_one() -> None:
    assert inverse(a("unpin"), [a("pin", "a"), a("canary", "b", share=0.1)]) == Inverse("pin", "a")
    with pytest.raises(NotRevertible, match="no route was pinned"):
        inverse(a("unpin"), [])


def test_canary_and_promote_roll_back_and_rollback_restores_the_last_canary_share() -> None:
    assert inverse(a("canary", "b"), []) == Inverse("rollback", "b")
    assert inverse(a("promote", "b"), []) == Inverse("rollback", "b")
    assert inverse(a("rollback", "b"), [a("canary", "b", share=0.2), a("canary", "c", share=0.3)]) == \
        Inverse("canary", "b", {"share": 0.2})
    assert inverse(a("rollback", "b"), []) == Inverse("canary", "b", {"share": 0.05})


@pytest.mark.parametrize("action, why", [
    ("routing_table", "computed by the policy"), ("breaker_open", "follow the route's outcomes"),
    ("signal_ack", "acknowledgement"), ("optimizer_deploy", "no inverse admin action is known"),
])
def test_decisions_without_an_inverse_say_why(action: str, why: str) -> None:
    with pytest.raises(NotRevertible, match=why):
        inverse(a(action, "b"), [])


def test_a_route_action_without_its_route_cannot_be_reverted() -> None:
    with pytest.raises(NotRevertible, match="without a route"):
        inverse(a("canary"), [])
