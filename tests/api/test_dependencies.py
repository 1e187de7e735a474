"""Dependencies, readiness and task deletion through the real server (SPEC §15.1, §15.2,
§15.4, §7.3.6): validation, cycle refusal (including concurrent edges), the ready and blocked
lists against a brute force, the readiness endpoint, handoff entries and the delete rules."""

from __future__ import annotations

import asyncio
import random

import httpx
from helpers import (
    Snapshot,
    assert_error,
    assert_link_invariant,
    entity_path,
    event_types,
    get,
    new_project,
    new_session,
    new_task,
    ok,
)
from hypothesis import HealthCheck, given, settings
from test_readiness_rules import brute_ready, forests


def patch(api, tid, body, status=200):
    return ok(api.patch(f"/api/tasks/{tid}", json=body), status)


def ids(tasks):
    return [t["id"] for t in tasks]


# ------------------------------------------------------------------ validation
def test_dependencies_are_set_on_create_and_patch(api, srv, ws):
    pid = new_project(api)["id"]
    a, b = new_task(api, pid, title="a"), new_task(api, pid, title="b")
    c = new_task(api, pid, title="c", dependencies=[a["id"], b["id"], a["id"]])
    assert c["dependencies"] == [a["id"], b["id"]]  # duplicates removed, order kept
    ws.barrier()
    assert patch(api, c["id"], {"dependencies": [b["id"]]})["dependencies"] == [b["id"]]
    assert event_types(ws.barrier()) == ["task:updated"]
    stored = entity_path(srv.data_dir, "task", c).read_text()
    assert a["id"] not in stored


def test_one_edge_at_a_time_is_idempotent(api, ws):
    pid = new_project(api)["id"]
    a, b = new_task(api, pid), new_task(api, pid)
    ws.barrier()
    added = ok(api.post(f"/api/tasks/{b['id']}/dependencies/{a['id']}"))
    assert added["dependencies"] == [a["id"]]
    assert event_types(ws.barrier()) == ["task:updated"]
    assert ok(api.post(f"/api/tasks/{b['id']}/dependencies/{a['id']}")) == added
    assert ws.barrier() == []  # nothing changed: no event
    removed = ok(api.delete(f"/api/tasks/{b['id']}/dependencies/{a['id']}"))
    assert removed["dependencies"] == []
    assert event_types(ws.barrier()) == ["task:updated"]
    assert ok(api.delete(f"/api/tasks/{b['id']}/dependencies/{a['id']}")) == removed
    assert ws.barrier() == []


def test_bad_dependencies_are_refused_and_change_nothing(api, srv, ws):
    pid, other = new_project(api)["id"], new_project(api)["id"]
    a, foreign = new_task(api, pid), new_task(api, other)
    ws.barrier()
    snap = Snapshot(api, srv)
    err = assert_error(api.post("/api/tasks", json={"projectId": pid, "title": "x",
                                                    "dependencies": ["task_0_nope"]}),
                       404, "TASK_NOT_FOUND")
    assert err["details"] == {"taskId": "task_0_nope"}
    assert_error(api.patch(f"/api/tasks/{a['id']}", json={"dependencies": [foreign["id"]]}),
                 400, "VALIDATION_ERROR", f"Dependency {foreign['id']} belongs to another project")
    assert_error(api.post(f"/api/tasks/{a['id']}/dependencies/{a['id']}"), 400,
                 "VALIDATION_ERROR", "A task cannot depend on itself")
    assert_error(api.patch(f"/api/tasks/{a['id']}", json={"dependencies": [a["id"]]}), 400,
                 "VALIDATION_ERROR", "A task cannot depend on itself")
    assert_error(api.patch(f"/api/tasks/{a['id']}", json={"dependencies": "x"}), 400,
                 "VALIDATION_ERROR")
    assert_error(api.post(f"/api/tasks/{a['id']}/dependencies/task_0_nope"), 404,
                 "TASK_NOT_FOUND")
    assert_error(api.post(f"/api/tasks/task_0_nope/dependencies/{a['id']}"), 404,
                 "TASK_NOT_FOUND")
    assert ws.barrier() == []
    snap.assert_unchanged()


# ------------------------------------------------------------------ cycles
def assert_cycle(resp, cycle):
    err = assert_error(resp, 400, "DEPENDENCY_CYCLE", "Dependency cycle: " + " -> ".join(cycle))
    assert err["details"] == {"cycle": cycle}


def test_cycles_are_refused_and_change_nothing(api, srv, ws):
    pid = new_project(api)["id"]
    a, b, c = (new_task(api, pid, title=t) for t in "abc")
    ok(api.post(f"/api/tasks/{a['id']}/dependencies/{b['id']}"))
    ok(api.post(f"/api/tasks/{b['id']}/dependencies/{c['id']}"))
    parent = new_task(api, pid, title="parent")
    child = new_task(api, pid, title="child", parentId=parent["id"])
    grandchild = new_task(api, pid, title="grandchild", parentId=child["id"])
    elsewhere = new_task(api, pid, title="needs the grandchild",
                         dependencies=[grandchild["id"]])
    ws.barrier()
    snap = Snapshot(api, srv)
    # A -> B -> A
    assert_cycle(api.post(f"/api/tasks/{b['id']}/dependencies/{a['id']}"),
                 [b["id"], a["id"], b["id"]])
    # A -> B -> C -> A, through PATCH
    assert_cycle(api.patch(f"/api/tasks/{c['id']}", json={"dependencies": [a["id"]]}),
                 [c["id"], a["id"], b["id"], c["id"]])
    # A parent depending on its child (the child inherits the parent's dependencies).
    assert_cycle(api.post(f"/api/tasks/{parent['id']}/dependencies/{child['id']}"),
                 [parent["id"], child["id"], parent["id"]])
    # A parent moved under a task that depends on one of its descendants.
    assert_cycle(api.patch(f"/api/tasks/{parent['id']}", json={"parentId": elsewhere["id"]}),
                 [parent["id"], elsewhere["id"], grandchild["id"], child["id"], parent["id"]])
    assert ws.barrier() == []
    snap.assert_unchanged()
    # A diamond is fine.
    d = new_task(api, pid, title="d", dependencies=[b["id"], c["id"]])
    assert ok(api.post(f"/api/tasks/{d['id']}/dependencies/{a['id']}"))["dependencies"] == \
        [b["id"], c["id"], a["id"]]


async def _both_directions(url, x, y):
    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
        return await asyncio.gather(client.post(f"/api/tasks/{x}/dependencies/{y}"),
                                    client.post(f"/api/tasks/{y}/dependencies/{x}"))


def test_concurrent_opposite_edges_exactly_one_wins(api, srv):
    pid = new_project(api)["id"]
    for _ in range(10):
        x, y = new_task(api, pid)["id"], new_task(api, pid)["id"]
        answers = asyncio.run(_both_directions(srv.url, x, y))
        assert sorted(a.status_code for a in answers) == [200, 400]
        loser = next(a for a in answers if a.status_code == 400)
        assert loser.json()["code"] == "DEPENDENCY_CYCLE"
        deps = get(api, "task", x)["dependencies"] + get(api, "task", y)["dependencies"]
        assert len(deps) == 1


# ------------------------------------------------------------------ readiness
def test_readiness_endpoint_and_lists(api, ws):
    pid = new_project(api)["id"]
    up = new_task(api, pid, title="up", priority="low")
    down = new_task(api, pid, title="down", dependencies=[up["id"]], priority="high")
    parent = new_task(api, pid, title="parent", dependencies=[up["id"]])
    child = new_task(api, pid, title="child", parentId=parent["id"], priority="high")
    first = new_task(api, pid, title="urgent", priority="high")
    body = ok(api.get(f"/api/tasks/{child['id']}/readiness"))
    assert body == {"taskId": child["id"], "ready": False, "blockedBy": [up["id"]],
                    "missingDependencies": [], "blockedAncestors": [parent["id"]],
                    "claim": None}
    listed = ok(api.get("/api/tasks", params={"projectId": pid, "ready": "true"}))
    assert ids(listed) == [first["id"], up["id"]]  # high before low
    blocked = ok(api.get("/api/tasks", params={"projectId": pid, "blocked": "true"}))
    assert sorted(ids(blocked)) == sorted([down["id"], parent["id"], child["id"]])
    assert ids(ok(api.get("/api/tasks", params={"projectId": pid, "blocked": "true",
                                                "parentId": parent["id"]}))) == [child["id"]]
    patch(api, up["id"], {"status": "completed"})
    listed = ok(api.get("/api/tasks", params={"projectId": pid, "ready": "true"}))
    assert ids(listed) == [down["id"], child["id"], first["id"], parent["id"]]
    assert ids(ok(api.get("/api/tasks", params={"ready": "true",
                                                "parentId": parent["id"]}))) == [child["id"]]
    assert ok(api.get(f"/api/tasks/{child['id']}/readiness"))["ready"] is True
    assert_error(api.get("/api/tasks/task_0_nope/readiness"), 404, "TASK_NOT_FOUND")


def test_live_lists_equal_a_brute_force_on_a_random_board(api):
    rng = random.Random(7)
    pid = new_project(api)["id"]
    made: list[dict] = []
    for i in range(40):
        body = {"priority": rng.choice(["low", "medium", "high"])}
        if made and rng.random() < 0.4:
            body["parentId"] = rng.choice(made)["id"]
        if made and rng.random() < 0.5:
            body["dependencies"] = list({rng.choice(made)["id"] for _ in range(2)})
        made.append(new_task(api, pid, title=f"t{i}", **body))
    sid = new_session(api, pid)["id"]
    for t in rng.sample(made, 15):
        patch(api, t["id"], {"status": rng.choice(["completed", "blocked", "in_progress"])})
    for _ in range(3):
        ok(api.post(f"/api/projects/{pid}/claim-next", json={"sessionId": sid}))
    tasks = ok(api.get("/api/tasks", params={"projectId": pid}))
    # Claimed tasks are in progress, so the instant does not matter here.
    want_ready, want_blocked = brute_ready(tasks, now=0)
    assert len(want_ready) > 3 and want_blocked
    assert ids(ok(api.get("/api/tasks", params={"projectId": pid, "ready": "true"}))) == \
        want_ready
    assert ids(ok(api.get("/api/tasks", params={"projectId": pid, "blocked": "true"}))) == \
        want_blocked
    for t in tasks:
        r = ok(api.get(f"/api/tasks/{t['id']}/readiness"))
        assert r["ready"] == (t["id"] in want_ready), t


# ------------------------------------------------------------------ handoff
def test_completion_hands_off_to_dependents(api, ws):
    pid = new_project(api)["id"]
    up = new_task(api, pid, title="Schema")
    down = new_task(api, pid, title="API", dependencies=[up["id"]])
    session = new_session(api, pid, [up["id"]])
    ok(api.post(f"/api/sessions/{session['id']}/timeline",
                json={"type": "task_completed", "message": "tables users, orders",
                      "taskId": up["id"]}))
    ws.barrier()
    patch(api, up["id"], {"status": "completed"})
    events = ws.barrier()
    assert event_types(events) == ["task:updated", "task:updated"]
    assert events[1]["data"]["id"] == down["id"]
    entry = get(api, "task", down["id"])["timeline"][-1]
    assert entry["type"] == "update"
    assert entry["message"] == \
        f'Dependency {up["id"]} "Schema" completed. Report: tables users, orders'
    entries = len(get(api, "task", down["id"])["timeline"])
    patch(api, up["id"], {"status": "completed"})  # already completed: no second handoff
    assert len(get(api, "task", down["id"])["timeline"]) == entries
    assert event_types(ws.barrier()) == ["task:updated"]


# ------------------------------------------------------------------ delete (§7.3.6)
def test_delete_unlinks_drops_dependencies_and_releases_the_claim(api, srv, ws):
    pid = new_project(api)["id"]
    doomed = new_task(api, pid, title="doomed")
    needs = new_task(api, pid, title="needs it", dependencies=[doomed["id"]])
    session = new_session(api, pid, [doomed["id"]])
    claimed = ok(api.post(f"/api/tasks/{doomed['id']}/claim", json={"sessionId": session["id"]}))
    ws.barrier()
    ok(api.delete(f"/api/tasks/{doomed['id']}"))
    events = ws.barrier()
    assert event_types(events) == [
        "session:task_removed", "task:session_removed", "session:updated", "task:updated",
        "task:updated",  # the dependent
        "task:claim_released", "task:updated",
        "task:deleted"]
    assert events[4]["data"]["id"] == needs["id"]
    assert events[5]["data"] == {"taskId": doomed["id"], "sessionId": session["id"],
                                 "token": claimed["claim"]["token"]}
    assert get(api, "task", needs["id"])["dependencies"] == []
    assert get(api, "session", session["id"])["taskIds"] == []
    assert ok(api.get(f"/api/tasks/{needs['id']}/readiness"))["ready"] is True
    assert_link_invariant(api, pid)
    assert not entity_path(srv.data_dir, "task", doomed).exists()


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(board=forests())
def test_live_lists_equal_a_brute_force_on_generated_boards(api, board):
    # A small generated forest (dependencies, statuses, claims) built through the API in a
    # project of its own; ids naming no task stand for deleted ones and are left out.
    pid = new_project(api)["id"]
    real: dict[str, str] = {}
    claimed = []
    for t in board:
        body = {"priority": t["priority"]}
        if t["parentId"] is not None:
            body["parentId"] = real[t["parentId"]]
        deps = [real[d] for d in t["dependencies"] if d in real]
        if deps:
            body["dependencies"] = deps
        real[t["id"]] = new_task(api, pid, title=t["id"], **body)["id"]
        if t.get("claim") is not None and t["status"] == "pending":
            claimed.append(real[t["id"]])
    sid = new_session(api, pid)["id"]
    for t in board:
        if t["status"] != "pending":
            patch(api, real[t["id"]], {"status": t["status"]})
    for tid in claimed:
        api.post(f"/api/tasks/{tid}/claim", json={"sessionId": sid})  # granted if ready
    tasks = ok(api.get("/api/tasks", params={"projectId": pid}))
    want_ready, want_blocked = brute_ready(tasks, now=0)
    assert ids(ok(api.get("/api/tasks", params={"projectId": pid, "ready": "true"}))) == \
        want_ready
    assert ids(ok(api.get("/api/tasks", params={"projectId": pid, "blocked": "true"}))) == \
        want_blocked
    for t in tasks:
        assert ok(api.get(f"/api/tasks/{t['id']}/readiness"))["ready"] == \
            (t["id"] in want_ready)
