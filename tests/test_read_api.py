"""The read API over execution trees, against one real daemon with two tenants: filters by
trace / root / session / parent on executions, LM calls and feedback with cursor paging,
one call for a whole execution tree (matching what the DSPy callback sent), and 422 on
every read endpoint for a query parameter it does not know."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import httpx
import pytest
from conftest import DaemonProcess, wait_until
from dspy.utils import DummyLM
from dspy_programs import Pipeline

from adaptd.adapters import AdaptdCallback, Client, InMemoryExporter

ACME, BETA, OPS = "tok-read-acme-71c0e2", "tok-read-beta-9f3a55", "tok-read-ops-0d8b14"
CONFIG = f"""
[[tenants]]
name = "acme"
tokens = ["{ACME}"]

[[tenants]]
name = "beta"
tokens = ["{BETA}"]

[[tenants]]
name = "ops"
tokens = ["{OPS}"]
admin = true

[[routing]]
program = "qa"
[[routing.routes]]
name = "primary"
model = "openai/gpt-4o-mini"
"""
#: Ids both tenants use for their own (different) events: isolation must keep them apart.
TRACE, SESSION = "trace-shared-1", "session-shared-1"
ROOT = str(uuid.uuid4())
CHILD = str(uuid.uuid4())


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def hand_made(tenant: str, t0: dt.datetime) -> list[dict[str, Any]]:
    """A root with two children (one with a grandchild), three LM calls and two feedbacks;
    the root and the first child have the same ids in both tenants, the rest are own."""
    other = str(uuid.uuid4())
    grand = str(uuid.uuid4())

    def at(seconds: float) -> str:
        return (t0 + dt.timedelta(seconds=seconds)).isoformat()

    def execution(eid: str, seconds: float, parent: str | None, module: str) -> dict[str, Any]:
        return {"id": eid, "kind": "execution", "ts": at(seconds), "program": f"{tenant}-prog", "module": module,
                "parent_id": parent, "root_id": ROOT, "trace_id": TRACE, "duration_ms": 5.0,
                "attrs": {"session_id": SESSION}}

    events = [execution(ROOT, 0, None, "Top"), execution(CHILD, 1, ROOT, "a"), execution(other, 2, ROOT, "b"),
              execution(grand, 3, other, "b.c"),
              # an execution of another tree and session
              {**execution(str(uuid.uuid4()), 4, None, "Top"), "root_id": None, "trace_id": "trace-other",
               "attrs": {"session_id": "s-other"}}]
    for i, parent in enumerate((CHILD, grand, grand)):
        events.append({"id": str(uuid.uuid4()), "kind": "lm_call", "ts": at(5 + i), "program": f"{tenant}-prog",
                       "model": f"{tenant}-model", "execution_id": parent, "attrs": {"session_id": SESSION}})
    for i, target in enumerate((ROOT, grand)):
        events.append({"id": str(uuid.uuid4()), "kind": "feedback", "ts": at(9 + i), "execution_id": target,
                       "program": f"{tenant}-prog", "metric": "judge", "score": 0.5 + i / 10})
    return events


def dspy_events() -> list[dict[str, Any]]:
    """What the DSPy callback sends for two runs of a real nested program (DummyLM)."""
    exporter = InMemoryExporter()
    client = Client(exporter=exporter, spill_dir=False, schedule_delay_ms=10)
    lm = DummyLM([{"answer": "draft"}, {"reasoning": "r", "answer": "Paris"}] * 2)
    try:
        with dspy.context(lm=lm, callbacks=[AdaptdCallback(program="capitals", client=client)]):
            for _ in range(2):
                assert Pipeline()(question="Capital of France?").answer == "Paris"
        assert client.flush(30)
    finally:
        client.shutdown(5)
    return exporter.events


class World:
    def __init__(self, daemon: DaemonProcess, dspy_sent: list[dict[str, Any]]) -> None:
        self.daemon = daemon
        self.dspy_sent = dspy_sent

    def get(self, token: str, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.daemon.url + path, params=params, headers=headers(token), timeout=30)

    def items(self, token: str, path: str, **params: Any) -> list[dict[str, Any]]:
        answer = self.get(token, path, **params)
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root: Path = tmp_path_factory.mktemp("reads")
    daemon = DaemonProcess(root / "data", config_text=CONFIG, env={"ADAPTD_TEST_TOKEN": OPS}).start()
    try:
        t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=30)
        sent = dspy_events()
        for token, events in ((ACME, hand_made("acme", t0) + sent), (BETA, hand_made("beta", t0))):
            answer = httpx.post(daemon.url + "/v1/events", json=events, headers=headers(token), timeout=30)
            assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text
        world = World(daemon, sent)
        total = {ACME: 5 + sum(e["kind"] == "execution" for e in sent), BETA: 5}
        for token, n in total.items():
            wait_until(lambda t=token, n=n: len(world.items(t, "/v1/executions", limit=1000)) == n, timeout=30)
            wait_until(lambda t=token: len(world.items(t, "/v1/feedback")) == 2, timeout=30)
        yield world
    finally:
        daemon.stop()


def ids(rows: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in rows}


def test_executions_filter_by_trace_root_session_and_parent_within_the_tenant(world: World) -> None:
    for token, tenant in ((ACME, "acme"), (BETA, "beta")):
        by_trace = world.items(token, "/v1/executions", trace_id=TRACE)
        assert len(by_trace) == 4 and {r["tenant"] for r in by_trace} == {tenant}
        assert {r["program"] for r in by_trace} == {f"{tenant}-prog"}
        assert ids(world.items(token, "/v1/executions", root_id=ROOT)) == ids(by_trace)
        assert ids(world.items(token, "/v1/executions", session_id=SESSION)) == ids(by_trace)
        children = world.items(token, "/v1/executions", parent_id=ROOT)
        assert sorted(r["module"] for r in children) == ["a", "b"]
        assert world.items(token, "/v1/executions", trace_id="no-such-trace") == []
    # the shared ids are two events, one per tenant
    acme_child = world.items(ACME, "/v1/executions", parent_id=ROOT, module="a")
    beta_child = world.items(BETA, "/v1/executions", parent_id=ROOT, module="a")
    assert [r["id"] for r in acme_child] == [r["id"] for r in beta_child] == [CHILD]
    assert acme_child[0]["program"] == "acme-prog" and beta_child[0]["program"] == "beta-prog"


def test_lm_calls_and_feedback_filter_through_their_execution_and_page_by_cursor(world: World) -> None:
    calls = world.items(ACME, "/v1/lm_calls", trace_id=TRACE)
    assert len(calls) == 3 and {c["model"] for c in calls} == {"acme-model"}
    assert ids(world.items(ACME, "/v1/lm_calls", root_id=ROOT)) == ids(calls)
    assert ids(world.items(ACME, "/v1/lm_calls", session_id=SESSION)) == ids(calls)
    assert len(world.items(ACME, "/v1/lm_calls", execution_id=CHILD)) == 1
    assert {c["model"] for c in world.items(BETA, "/v1/lm_calls")} == {"beta-model"}
    # cursor paging: three pages of one, newest first, no repeats, then the end
    pages, cursor = [], None
    for _ in range(5):
        params: dict[str, Any] = {"trace_id": TRACE, "limit": 1, **({"cursor": cursor} if cursor else {})}
        answer = world.get(ACME, "/v1/lm_calls", **params).json()
        pages += answer["items"]
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert [c["id"] for c in pages] == [c["id"] for c in calls] and len(pages) == 3
    notes = world.items(ACME, "/v1/feedback", root_id=ROOT)
    assert len(notes) == 2 and {n["program"] for n in notes} == {"acme-prog"}
    assert ids(world.items(ACME, "/v1/feedback", session_id=SESSION)) == ids(notes)
    assert ids(world.items(ACME, "/v1/feedback", trace_id=TRACE)) == ids(notes)
    assert len(world.items(ACME, "/v1/feedback", execution_id=ROOT, metric="judge")) == 1
    assert world.items(ACME, "/v1/feedback", trace_id="trace-other") == []


def test_the_tree_of_a_hand_made_execution_nests_children_calls_and_feedback(world: World) -> None:
    for token, tenant in ((ACME, "acme"), (BETA, "beta")):
        tree = world.get(token, f"/v1/executions/{ROOT}/tree").json()
        assert (tree["executions"], tree["lm_calls"], tree["feedback"], tree["truncated"]) == (4, 3, 2, False)
        top = tree["execution"]
        assert top["id"] == ROOT and top["program"] == f"{tenant}-prog" and len(top["feedback"]) == 1
        assert [c["module"] for c in top["children"]] == ["a", "b"]
        a, b = top["children"]
        assert len(a["lm_calls"]) == 1 and a["children"] == []
        grand = b["children"][0]
        assert grand["module"] == "b.c" and len(grand["lm_calls"]) == 2 and len(grand["feedback"]) == 1
        assert {c["model"] for c in grand["lm_calls"]} == {f"{tenant}-model"}
    # a subtree: from the first child down only
    sub = world.get(BETA, f"/v1/executions/{CHILD}/tree").json()
    assert (sub["execution"]["id"], sub["executions"], sub["lm_calls"], sub["feedback"]) == (CHILD, 1, 1, 0)


def test_a_dspy_programs_tree_fetched_by_root_id_matches_the_callbacks_events(world: World) -> None:
    executions = [e for e in world.dspy_sent if e["kind"] == "execution"]
    calls = [e for e in world.dspy_sent if e["kind"] == "lm_call"]
    roots = [e for e in executions if e["parent_id"] is None]
    assert len(roots) == 2 and calls, world.dspy_sent
    for root in roots:
        sent = {e["id"]: e for e in executions if e["root_id"] == root["id"]}
        sent_calls = {c["id"]: c for c in calls if c["execution_id"] in sent}
        tree = world.get(ACME, f"/v1/executions/{root['id']}/tree").json()
        assert tree["executions"] == len(sent) == 4 and tree["lm_calls"] == len(sent_calls) == 2

        got: dict[str, dict[str, Any]] = {}
        got_calls: dict[str, str] = {}

        def walk(node: dict[str, Any], parent: str | None) -> None:
            assert node["parent_id"] == parent
            got[node["id"]] = node
            got_calls.update({c["id"]: c["execution_id"] for c in node["lm_calls"]})
            assert all(c["execution_id"] == node["id"] for c in node["lm_calls"])
            for child in node["children"]:
                walk(child, node["id"])

        walk(tree["execution"], None)
        assert set(got) == set(sent)
        for eid, event in sent.items():
            assert (got[eid]["module"], got[eid]["parent_id"], got[eid]["status"]) == (
                event["module"], event["parent_id"], event["status"])
        assert got_calls == {cid: c["execution_id"] for cid, c in sent_calls.items()}
        # the listing by root id is the same set
        assert ids(world.items(ACME, "/v1/executions", root_id=root["id"])) == set(sent)


def test_another_tenants_execution_tree_is_not_found(world: World) -> None:
    dspy_root = next(e["id"] for e in world.dspy_sent if e["kind"] == "execution" and e["parent_id"] is None)
    answer = world.get(BETA, f"/v1/executions/{dspy_root}/tree")
    assert answer.status_code == 404 and "no execution" in answer.json()["detail"]
    assert world.items(BETA, "/v1/executions", root_id=dspy_root) == []
    assert world.items(BETA, "/v1/lm_calls", root_id=dspy_root) == []
    assert world.get(ACME, f"/v1/executions/{dspy_root}/tree").status_code == 200


def test_bad_ids_bounds_and_cursors_answer_422_with_the_reason(world: World) -> None:
    for path, params in (("/v1/executions", {"root_id": "not-a-uuid"}), ("/v1/lm_calls", {"execution_id": "x"}),
                         ("/v1/feedback", {"cursor": "garbage"}), ("/v1/lm_calls", {"since": "yesterday"}),
                         ("/v1/executions/not-a-uuid/tree", {})):
        answer = world.get(ACME, path, **params)
        assert answer.status_code == 422, (path, params, answer.text)
    assert "cursor" in world.get(ACME, "/v1/feedback", cursor="garbage").json()["detail"]


def _fill(path: str, op: dict[str, Any]) -> str:
    for p in op.get("parameters", []):
        if p["in"] == "path":
            fmt = p.get("schema", {}).get("format")
            path = path.replace("{" + p["name"] + "}", str(uuid.uuid4()) if fmt == "uuid" else "qa")
    return path


def test_every_read_endpoint_answers_422_naming_an_unknown_query_parameter(world: World) -> None:
    """Generated from the OpenAPI document, so a read endpoint added later is covered."""
    doc = world.get(OPS, "/openapi.json").json()
    reads = [(path, ops["get"]) for path, ops in doc["paths"].items() if "get" in ops]
    assert len(reads) >= 20
    wrong = []
    for path, op in reads:
        url = _fill(path, op)
        declared = sorted(p["name"] for p in op.get("parameters", []) if p["in"] == "query")
        answer = world.get(OPS, url, root_idx="x")
        detail = answer.json().get("detail", "") if answer.headers.get("content-type", "").startswith(
            "application/json") else ""
        if answer.status_code != 422 or "'root_idx'" not in detail or not all(d in detail for d in declared):
            wrong.append(f"GET {url}: {answer.status_code} {answer.text[:200]}")
    assert not wrong, "expected 422 naming root_idx and the accepted parameters:\n" + "\n".join(wrong)
    # the declared parameters still work, and 401 comes before 422
    assert world.get(OPS, "/v1/executions", limit=1, root_id=ROOT).status_code == 200
    assert httpx.get(world.daemon.url + "/v1/executions", params={"root_idx": "x"}, timeout=10).status_code == 401
