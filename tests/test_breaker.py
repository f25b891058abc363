"""The per-route circuit breaker: every transition, on injected event time."""

from __future__ import annotations

import pickle

import pytest

from adaptd.daemon.adaptation.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    US,
    Breaker,
    BreakerConfig,
    due_us,
    record,
    tick,
)

CFG = BreakerConfig(window_s=10, error_rate=0.5, min_requests=6, consecutive_failures=4, cooldown_s=5,
                    max_cooldown_s=12, backoff=2, probes=3, probe_successes=2)


def feed(b: Breaker, outcomes: str, start_s: float = 0.0, step_s: float = 0.1) -> list:
    """Record outcomes ('o' ok, 'x' error) ``step_s`` apart; return all transitions."""
    out = []
    for i, c in enumerate(outcomes):
        out += record(b, CFG, int((start_s + i * step_s) * US), c == "o")
    return out


def opened(cooldown_s: float = 5) -> Breaker:
    b = Breaker()
    assert [t.to for t in feed(b, "xxxx")] == [OPEN]
    assert b.cooldown_us == cooldown_s * US
    return b


def test_consecutive_failures_open_the_breaker():
    b = Breaker()
    assert feed(b, "xxx") == []
    (t,) = feed(b, "x", start_s=0.3)
    assert (t.frm, t.to, b.state) == (CLOSED, OPEN, OPEN)
    assert t.numbers["consecutive"] == 4 and "4 consecutive failures" in t.reason


def test_a_success_resets_the_consecutive_count():
    cfg = BreakerConfig(min_requests=100, consecutive_failures=4, recent_errors=10)  # only the consecutive rule
    b = Breaker()
    out = [t for i, c in enumerate("xxxoxxx") for t in record(b, cfg, i * US // 10, c == "o")]
    assert out == [] and b.state == CLOSED and b.consecutive == 3


def test_error_rate_over_the_window_opens_once_min_requests_are_seen():
    b = Breaker()
    assert feed(b, "oxoxo") == []  # 2/5: below min_requests and rate
    (t,) = feed(b, "x", start_s=0.5)  # 3/6 = 0.5 >= 0.5 with 6 requests
    assert t.to == OPEN and t.numbers["window_requests"] == 6 and t.numbers["window_errors"] == 3


def test_a_brownout_opens_the_default_breaker_within_ten_calls_without_failures_in_a_row():
    """Defaults: one call in three fails, never three in a row, after a minute of
    successes that keep the 30 s error rate low: the last-10-calls rule trips it."""
    cfg, b = BreakerConfig(), Breaker()
    for i in range(600):  # 60 s of successes
        assert record(b, cfg, i * US // 10, True) == []
    out = []
    for i, c in enumerate("oxoxooxoxo"):
        out += record(b, cfg, (60 + i / 10) * US, c == "o")
    (t,) = out
    assert t.to == OPEN and t.reason == "4 failures in the last 10 calls"
    assert t.numbers["recent_errors"] == 4 and t.numbers["window_errors"] == 4


def test_random_errors_at_2_percent_rarely_open_the_default_breaker():
    import random

    rng, cfg, b = random.Random(4), BreakerConfig(), Breaker()
    opened = sum(1 for i in range(20_000) for t in record(b, cfg, i * US // 10, rng.random() > 0.02)
                 if t.to == OPEN)
    assert opened <= 2


def test_errors_below_min_requests_do_not_open():
    b = Breaker()
    assert feed(b, "xoxox"[:5]) == [] and b.state == CLOSED


def test_old_errors_leave_the_sliding_window():
    b = Breaker()
    feed(b, "oxoxo")  # at t = 0..0.4 s
    # 20 s later the window (10 s) holds only the new outcomes: 1 error of 6
    assert feed(b, "oooox", start_s=20) == [] and b.state == CLOSED
    assert b.to_dict()["window_requests"] == 5


def test_open_turns_half_open_after_the_cool_down():
    b = opened()
    assert tick(b, CFG, int(4.9 * US)) == []
    assert due_us(b) == b.opened_us + 5 * US
    (t,) = tick(b, CFG, b.opened_us + 5 * US)
    assert (t.frm, t.to, b.state) == (OPEN, HALF_OPEN, HALF_OPEN)
    assert due_us(b) is None


def test_outcomes_while_open_never_close_it():
    b = opened()
    assert feed(b, "oooooo", start_s=1) == [] and b.state == OPEN


def test_half_open_closes_after_probe_successes():
    b = opened()
    tick(b, CFG, 10 * US)
    assert record(b, CFG, 10 * US, True) == []
    (t,) = record(b, CFG, 11 * US, True)
    assert (t.frm, t.to, b.state) == (HALF_OPEN, CLOSED, CLOSED)
    assert b.to_dict()["window_requests"] == 0 and b.trips == 0


def test_half_open_tolerates_probe_failures_up_to_k_minus_m():
    b = opened()
    tick(b, CFG, 10 * US)
    assert record(b, CFG, 10 * US, False) == []  # 1 failure: 2 successes still reachable in 3 probes
    assert record(b, CFG, 11 * US, True) == []
    (t,) = record(b, CFG, 12 * US, True)
    assert t.to == CLOSED


def test_a_second_probe_failure_reopens_with_a_growing_cool_down():
    b = opened()
    tick(b, CFG, 10 * US)
    record(b, CFG, 10 * US, False)
    (t,) = record(b, CFG, 10 * US + 1, False)
    assert (t.frm, t.to) == (HALF_OPEN, OPEN)
    assert t.numbers["cooldown_s"] == 10 and t.numbers["trips"] == 2
    tick(b, CFG, 30 * US)
    record(b, CFG, 30 * US, False)
    (t,) = record(b, CFG, 30 * US, False)
    assert t.numbers["cooldown_s"] == 12  # 20 s capped at max_cooldown_s


def test_cool_down_resets_after_the_breaker_closes():
    b = opened()
    tick(b, CFG, 10 * US)
    feed(b, "oo", start_s=10)
    assert b.state == CLOSED
    (t,) = feed(b, "xxxx", start_s=20)
    assert t.numbers["cooldown_s"] == 5


def test_time_never_runs_backwards():
    b = opened()
    opened_at = b.opened_us
    assert tick(b, CFG, 0) == [] and b.now_us >= opened_at
    record(b, CFG, 0, True)  # a late outcome counts at the breaker's clock
    assert b.buckets[-1][0] == b.now_us // US


def test_state_survives_pickle_and_is_json_ready():
    b = opened()
    again = pickle.loads(pickle.dumps(b, protocol=5))
    assert again == b
    d = b.to_dict()
    assert d["state"] == OPEN and d["window_errors"] == 4


@pytest.mark.parametrize("bad", [dict(probes=1, probe_successes=2), dict(error_rate=0), dict(cooldown_s=0),
                                 dict(max_cooldown_s=0.5), dict(window_s=0), dict(recent_errors=11),
                                 dict(recent=0)])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        BreakerConfig(**bad)
