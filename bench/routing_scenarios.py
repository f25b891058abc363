"""Routing-bench scenarios added for issue 16, on top of ``adaptd.daemon.demo.scenarios``.

Written down before any run of them and never adjusted to the results (the policy's
defaults were not tuned on them either): they are the held-out scenarios of the
leave-one-scenario-out rule.

* ``brownout``: the best route fails 35% of requests from 30 s to 90 s, half with HTTP
  500 and half with 429 carrying ``Retry-After: 1``.
* ``latency_4x``: the best-quality route answers 4x slower (median 1.6 s instead of
  0.4 s) from 30 s to 90 s; answers stay correct.
* ``quality_regression_fast``: the cheap, quick route (quality 0.93, the objective's
  favourite before the fault) silently answers worse (0.5) from 30 s to 90 s; the strong
  route (0.95) is the best choice throughout; a slow, weaker backup is a fallback only.
"""

from __future__ import annotations

from dataclasses import replace

from adaptd.daemon.demo.scenarios import (
    ALT,
    DURATION,
    FAST,
    SCENARIOS,
    STRONG,
    T_FAULT,
    T_RECOVER,
    Behaviour,
    Phase,
    Scenario,
)


def _fault(during: Behaviour, before: Behaviour) -> list[Phase]:
    return [Phase(0, before), Phase(T_FAULT, during), Phase(T_RECOVER, before)]


QUICK = Behaviour(latency_ms=200, latency_sigma=0.2, quality=0.93, price_in_per_1k=0.0003, price_out_per_1k=0.0012)
SLOW_BACKUP = Behaviour(latency_ms=1500, latency_sigma=0.3, quality=0.8, price_in_per_1k=0.001,
                        price_out_per_1k=0.004)  # fmt: skip

NEW_SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="brownout",
            description="From 30 s to 90 s the best route fails 35% of requests: half 500, half 429 (Retry-After 1 s).",
            duration_s=DURATION,
            deployments={"strong": _fault(replace(STRONG, rate_500=0.175, rate_429=0.175, retry_after_s=1.0), STRONG),
                         "alt": [Phase(0, ALT)], "fast": [Phase(0, FAST)]},
            best="strong", affected=("strong",), fault_start_s=T_FAULT, fault_end_s=T_RECOVER,
        ),
        Scenario(
            name="latency_4x",
            description="From 30 s to 90 s the best-quality route is 4x slower (median 1.6 s); answers stay correct.",
            duration_s=DURATION,
            deployments={"strong": _fault(replace(STRONG, latency_ms=1600), STRONG),
                         "alt": [Phase(0, ALT)], "fast": [Phase(0, FAST)]},
            best="strong", affected=("strong",), fault_start_s=T_FAULT, fault_end_s=T_RECOVER,
        ),
        Scenario(
            name="quality_regression_fast",
            description=("From 30 s to 90 s the quick, cheap route silently answers worse (0.93 -> 0.5); the strong "
                         "route (0.95) stays; a slow backup (0.8) is a fallback only."),
            duration_s=DURATION,
            deployments={"quick": _fault(replace(QUICK, quality=0.5), QUICK), "strong": [Phase(0, STRONG)],
                         "slow": [Phase(0, SLOW_BACKUP)]},
            best="strong", affected=("quick",), fault_start_s=T_FAULT, fault_end_s=T_RECOVER,
            groups={"main": ("quick", "strong"), "backup": ("slow",)}, fallbacks={"main": ("backup",)},
        ),
    ]
}

#: Every scenario the routing bench knows: the demo's and these.
ALL_SCENARIOS: dict[str, Scenario] = {**SCENARIOS, **NEW_SCENARIOS}
