"""Authorization with tenants configured: admin is opt-in per tenant, every admin write
endpoint (routing actions, optimization jobs, revert, acknowledge) refuses a non-admin
tenant with 403 and a reason, tenants without usable tokens are refused at config load,
and the OpenAPI document and its UIs need a bearer token.

Every test uses two tenants: ``ops`` (an admin) and a non-admin one (``guest``, with
``admin = false``, or ``newbie``, which does not say and so is not an admin)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import DaemonProcess, free_port, run_cli
from dash_workload import optimize_config
from fastapi.testclient import TestClient
from optimize_kit import wait_job

from adaptd.daemon.config import ConfigError, Settings, load_settings
from adaptd.daemon.http.app import create_app
from adaptd.streams.events import new_id

ADMIN, GUEST, NEWBIE = "tok-ops-0123456789", "tok-guest-0123456789", "tok-newbie-0123456789"

TENANTS = f"""
[[tenants]]
name = "ops"
tokens = ["{ADMIN}"]
admin = true

[[tenants]]
name = "guest"
tokens = ["{GUEST}"]
admin = false

[[tenants]]
name = "newbie"
tokens = ["{NEWBIE}"]
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One daemon for the module: the tenants above, routing for ``qa`` and the toy
    program ``summarize`` registered for optimization."""
    root = tmp_path_factory.mktemp("authz")
    (root / "adaptd.toml").write_text(TENANTS + optimize_config(root))
    process = DaemonProcess(root / "data", config=root / "adaptd.toml", env={"ADAPTD_TEST_TOKEN": ADMIN}).start()
    try:
        yield process
    finally:
        process.stop()


def assert_refused(answer: httpx.Response, tenant: str) -> None:
    assert answer.status_code == 403, (answer.status_code, answer.text)
    detail = answer.json()["detail"]
    assert f"tenant {tenant!r} is not an admin" in detail and "admin = true" in detail, detail


# -- 1. admin is opt-in ----------------------------------------------------------------


def test_a_tenant_that_does_not_say_admin_is_not_an_admin(daemon) -> None:
    """``newbie`` has no ``admin`` key: it is refused where ``ops`` (admin = true) may act."""
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        missing = new_id()
        assert_refused(client.post(f"/v1/adaptations/{missing}/revert", headers=bearer(NEWBIE)), "newbie")
        assert_refused(client.post(f"/v1/signals/{missing}/ack", headers=bearer(NEWBIE)), "newbie")
        assert_refused(client.post("/v1/routing/qa/pin", json={"route": "backup"}, headers=bearer(NEWBIE)), "newbie")
        # the admin passes the admin check and reaches the handler (nothing to revert / ack: 404)
        assert client.post(f"/v1/adaptations/{missing}/revert", headers=bearer(ADMIN)).status_code == 404
        assert client.post(f"/v1/signals/{missing}/ack", headers=bearer(ADMIN)).status_code == 404
        # reading stays open to every tenant
        assert client.get("/v1/routing/qa", headers=bearer(NEWBIE)).status_code == 200


def test_tenant_model_defaults_to_not_admin(monkeypatch) -> None:
    monkeypatch.delenv("ADAPTD_CONFIG", raising=False)
    settings = Settings(tenants=[{"name": "ops", "tokens": [ADMIN], "admin": True},
                                 {"name": "newbie", "tokens": [NEWBIE]}])
    assert [(t.name, t.admin) for t in settings.tenants] == [("ops", True), ("newbie", False)]


# -- 2. tenants without usable tokens are refused at load ------------------------------


@pytest.mark.parametrize(("tokens", "needle"), [
    ('tokens = [""]', "tokens must not be empty or whitespace"),
    ('tokens = ["   "]', "tokens must not be empty or whitespace"),
    ('tokens = []', "needs at least one token"),
    ("", "needs at least one token"),  # no tokens key at all
])
def test_a_tenant_without_a_usable_token_fails_up_with_a_clear_message(tmp_path: Path, tokens: str,
                                                                       needle: str) -> None:
    config = tmp_path / "adaptd.toml"
    config.write_text(f'[[tenants]]\nname = "ops"\ntokens = ["{ADMIN}"]\nadmin = true\n\n'
                      f'[[tenants]]\nname = "guest"\n{tokens}\n')
    result = run_cli("up", "--config", str(config), "--data-dir", str(tmp_path / "d"), "--port", str(free_port()),
                     timeout=30)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "tenants.1.tokens" in lines[0] and needle in lines[0], lines[0]
    assert not (tmp_path / "d").exists()  # refused before anything was opened


def test_load_settings_raises_config_error_for_an_empty_token(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "adaptd.toml"
    monkeypatch.setenv("ADAPTD_CONFIG", str(config))  # load_settings sets it; undone after the test
    config.write_text(f'[[tenants]]\nname = "ops"\ntokens = ["{ADMIN}"]\nadmin = true\n\n'
                      '[[tenants]]\nname = "guest"\ntokens = ["ok-token", ""]\n')
    with pytest.raises(ConfigError, match=r"tenants\.1\.tokens: .*must not be empty"):
        load_settings(config)


# -- 3. one admin dependency on every admin write endpoint -----------------------------


@pytest.mark.parametrize(("action", "body"), [
    ("pin", {"route": "backup", "reason": "maintenance"}),
    ("unpin", {}),
    ("canary", {"route": "primary", "share": 0.2}),
    ("promote", {"route": "primary"}),
    ("rollback", {"route": "primary"}),
])
def test_routing_actions_need_an_admin(daemon, action: str, body: dict) -> None:
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        assert_refused(client.post(f"/v1/routing/qa/{action}", json=body, headers=bearer(GUEST)), "guest")
        done = client.post(f"/v1/routing/qa/{action}", json=body, headers=bearer(ADMIN))
        assert done.status_code == 202, done.text
        assert done.json()["action"] == action and done.json()["program"] == "qa"
        # a missing or unknown token is still 401, not 403
        assert client.post(f"/v1/routing/qa/{action}", json=body).status_code == 401
        assert client.post(f"/v1/routing/qa/{action}", json=body, headers=bearer("nope")).status_code == 401


def test_queueing_an_optimization_job_needs_an_admin(daemon) -> None:
    job = {"program": "summarize", "optimizer": "BootstrapFewShot"}
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        assert_refused(client.post("/v1/optimization/jobs", json=job, headers=bearer(GUEST)), "guest")
        assert client.get("/v1/optimization/jobs", headers=bearer(GUEST)).json()["items"] == []  # nothing queued

        queued = client.post("/v1/optimization/jobs", json=job, headers=bearer(ADMIN))
        assert queued.status_code == 202, queued.text
        client.headers.update(bearer(ADMIN))
        final = wait_job(client, queued.json()["job_id"], timeout=120)
        assert final["status"] == "succeeded", final
        # reading is still open to the non-admin (its own, empty, job list)
        assert client.get("/v1/optimization/jobs", headers=bearer(GUEST)).status_code == 200


def test_revert_is_refused_to_a_non_admin_even_for_its_own_tenants_id(daemon) -> None:
    with httpx.Client(base_url=daemon.url, timeout=30) as client:
        pin = client.post("/v1/routing/qa/pin", json={"route": "backup"}, headers=bearer(ADMIN)).json()["id"]
        assert_refused(client.post(f"/v1/adaptations/{pin}/revert", headers=bearer(GUEST)), "guest")


def test_the_admin_check_compares_every_configured_token_in_constant_time(monkeypatch) -> None:
    """hmac.compare_digest runs once per configured token whichever one matches (no early
    exit), and a prefix of a real token is unknown (401)."""
    from adaptd.daemon.http import auth as auth_module  # here: one failing test, not the module, without it

    calls: list[tuple[bytes, bytes]] = []
    real = auth_module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    monkeypatch.delenv("ADAPTD_CONFIG", raising=False)
    settings = Settings(tenants=[{"name": "ops", "tokens": [ADMIN, "second-ops-token"], "admin": True},
                                 {"name": "guest", "tokens": [GUEST]}])
    client = TestClient(create_app(settings))  # no lifespan: no runtime needed for /openapi.json
    for token in (ADMIN, GUEST):
        calls.clear()
        assert client.get("/openapi.json", headers=bearer(token)).status_code == 200
        assert len(calls) == 3 and all(isinstance(a, bytes) for a, _ in calls)
    assert client.get("/openapi.json", headers=bearer(ADMIN[:-1])).status_code == 401
    assert client.get("/openapi.json", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/openapi.json", headers={"Authorization": f"Basic {ADMIN}"}).status_code == 401


# -- 4. the OpenAPI document and its UIs need a token when tenants are configured ------


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_openapi_and_docs_need_a_bearer_token(daemon, path: str) -> None:
    without = httpx.get(f"{daemon.url}{path}", timeout=10)
    assert without.status_code == 401 and "missing bearer token" in without.json()["detail"]
    assert without.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{daemon.url}{path}", headers=bearer("nope"), timeout=10).status_code == 401
    for token in (ADMIN, GUEST):  # any tenant may read the docs, admin or not
        answer = httpx.get(f"{daemon.url}{path}", headers=bearer(token), timeout=10)
        assert answer.status_code == 200, answer.text
    if path == "/openapi.json":
        spec = httpx.get(f"{daemon.url}{path}", headers=bearer(GUEST), timeout=10).json()
        assert "/v1/events" in spec["paths"] and "/v1/routing/{program}/{action}" in spec["paths"]
        assert not {"/openapi.json", "/docs", "/redoc"} & set(spec["paths"])


def test_openapi_and_docs_stay_open_without_tenants_and_close_with_two(monkeypatch) -> None:
    monkeypatch.delenv("ADAPTD_CONFIG", raising=False)
    open_app = TestClient(create_app(Settings()))
    closed_app = TestClient(create_app(Settings(tenants=[{"name": "ops", "tokens": [ADMIN], "admin": True},
                                                         {"name": "guest", "tokens": [GUEST]}])))
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert open_app.get(path).status_code == 200
        assert closed_app.get(path).status_code == 401
        assert closed_app.get(path, headers=bearer(GUEST)).status_code == 200
    assert "swagger" in open_app.get("/docs").text.lower() and "redoc" in open_app.get("/redoc").text.lower()
