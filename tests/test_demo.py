"""``adaptd demo --headless``: the scripted story is seen and acted on by a real daemon.

One run of the whole demo (a daemon subprocess, the mock provider, three DSPy programs on
the SDK) for 60 s of story; the printed narration is the specification: the outage, the
slowdown, the input drift and the quality regression were each signalled, routing moved
off the failing and the slow route, and a re-optimized program version went live.
"""

from __future__ import annotations

import re

import pytest
from conftest import run_cli

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("demo")
    result = run_cli("demo", "--headless", "--duration", "60", "--dir", str(workdir), timeout=300)
    return result, workdir


def _verdict(out: str, episode: str) -> str:
    match = re.search(rf"^  {episode} .*$", out, re.M)
    assert match, f"no verdict line for {episode}:\n{out[-3000:]}"
    return match.group(0)


def test_the_demo_tells_the_whole_story_and_exits_0(demo) -> None:
    result, workdir = demo
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "story complete" in result.stdout
    assert "calls that failed over every route: 0" in result.stdout


def test_the_outage_opens_the_breaker_and_routing_leaves_the_route(demo) -> None:
    out = demo[0].stdout
    assert re.search(r"signal   breaker open on qa/qa-strong", out), out[-3000:]
    line = _verdict(out, "outage")
    assert "detected at" in line and "by breaker signal" in line and "gives qa-strong 0.0" in line


def test_the_slowdown_moves_support_off_the_slow_route(demo) -> None:
    line = _verdict(demo[0].stdout, "slowdown")
    assert "detected at" in line and "adapted at" in line and "sup-fast 0.0" in line


def test_the_input_drift_is_signalled_with_the_input_features(demo) -> None:
    out = demo[0].stdout
    assert re.search(r"signal   drift (open|update) on support .*inputs\.question", out), out[-3000:]
    assert "detected at" in _verdict(out, "drift")


def test_the_quality_regression_is_reoptimized_and_the_new_version_goes_live(demo) -> None:
    out = demo[0].stdout
    # The regression changes the inputs' format too, so the signal's headline feature may
    # be an input one; quality must be among the drifted features.
    assert re.search(r"signal   drift (open|update) on triage \([^)]*\) drifted: [^\n]*\bquality\b", out), out[-3000:]
    steps = [m.group(1) for m in re.finditer(r"optimize (reoptimize|canary|program_version|rollout_promoted)\b", out)]
    for step in ("reoptimize", "program_version", "canary", "rollout_promoted"):
        assert step in steps, out[-3000:]
    assert re.search(r"routing  triage v\d+: blue=0\.00, green=1\.00", out), out[-3000:]
    assert "re-optimized version promoted on green" in _verdict(out, "quality regression")
