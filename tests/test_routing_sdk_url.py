"""``AdaptiveLM`` refreshes its table from the daemon ``adaptd.adapters.configure(url=...)``
named, on any port, whether ``configure`` came before or after the LM was built."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import httpx
import pytest
from conftest import free_port, wait_until

import adaptd.adapters as adapters
from adaptd.adapters.adaptive_lm import AdaptiveLM
from adaptd.daemon.adaptation.config import ProgramRouting, RouteConfig
from adaptd.daemon.config import Settings


@pytest.fixture
def sdk(monkeypatch):
    """The SDK's default client slot, emptied for the test and restored after it; no
    $ADAPTD_URL, and 127.0.0.1:7710 replaced by a port nothing listens on."""
    monkeypatch.setattr(adapters, "_default", None)
    monkeypatch.setenv("ADAPTD_URL", f"http://127.0.0.1:{free_port()}")
    yield adapters
    if adapters._default is not None:
        adapters._default.shutdown(timeout=5)


@pytest.fixture
def daemon(inprocess_daemon, tmp_path):
    routing = ProgramRouting(program="qa", routes=[RouteConfig(name="a", model="openai/a"),
                                                   RouteConfig(name="b", model="openai/b")])
    return inprocess_daemon(Settings(data_dir=tmp_path / "data", log_level="warning", routing=[routing]))


def routes() -> dict[str, dspy.LM]:
    return {n: dspy.LM("openai/m", mock_response="x", cache=False, num_retries=0) for n in "ab"}


def pin_b(url: str) -> None:
    assert httpx.post(f"{url}/v1/routing/qa/pin", json={"route": "b"}, timeout=10).status_code == 202


def test_adaptive_lm_polls_the_daemon_configure_named_on_another_port(sdk, daemon):
    sdk.configure(url=daemon.url, spill_dir=False)
    lm = AdaptiveLM("qa", routes(), poll_wait_s=1, poll_min_interval_s=0.05)
    try:
        pin_b(daemon.url)
        wait_until(lambda: lm.table.version >= 1 and lm.table.by_name["b"].pinned, timeout=30)
        assert lm.poller.endpoint == f"{daemon.url}/v1/routing/qa"
    finally:
        lm.close()


def test_adaptive_lm_built_before_configure_follows_the_url_configured_later(sdk, daemon):
    lm = AdaptiveLM("qa", routes(), poll_wait_s=1, poll_min_interval_s=0.02)
    try:
        # nothing listens on $ADAPTD_URL: the poller fails and keeps the uniform table
        wait_until(lambda: lm.poller.counts["errors"] >= 1, timeout=10)
        assert lm.table.version == 0
        sdk.configure(url=daemon.url, spill_dir=False)
        pin_b(daemon.url)
        wait_until(lambda: lm.table.version >= 1 and lm.table.by_name["b"].pinned, timeout=30)
    finally:
        lm.close()


def test_an_explicit_url_still_wins_over_the_configured_client(sdk, daemon):
    sdk.configure(url=f"http://127.0.0.1:{free_port()}", spill_dir=False)
    lm = AdaptiveLM("qa", routes(), url=daemon.url, poll_wait_s=1, poll_min_interval_s=0.05)
    try:
        wait_until(lambda: lm.poller.counts["updates"] >= 1, timeout=30)
        assert lm.poller.endpoint == f"{daemon.url}/v1/routing/qa"
    finally:
        lm.close()
