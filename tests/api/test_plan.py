"""`POST /api/projects/:id/plan` through the real server: a whole breakdown (tasks named by refs,
parents, dependencies, new dependencies of existing tasks) is created in one change or not at
all; cycles, unknown names and other projects are refused with nothing changed; agents plan only
under or beside their own tasks; writes to a claimed task are fenced."""

from __future__ import annotations

import httpx
import pytest
from helpers import Snapshot, assert_error, http_client, new_project, new_task, ok
from server_fixtures import server_fixture
from test_agent_identity import USER_TOKEN, Events


def plan(api, project_id: str, body: dict, **kwargs) -> httpx.Response:
    return api.post(f"/api/projects/{project_id}/plan", json=body, **kwargs)


srv = server_fixture("function", env={"MAESTRO_LAUNCHER": "ui", "MAESTRO_CLAIM_MIN_TTL": "1"})


def test_a_plan_creates_tasks_parents_and_dependencies_in_one_change(srv):
    with http_client(srv) as api:
        project = new_project(api)
        existing = new_task(api, project["id"], title="Ship")
        listener = Events(srv.ws_url)
        try:
            body = ok(plan(api, project["id"], {
                "tasks": [
                    {"ref": "epic", "title": "Login", "priority": "high"},
                    {"ref": "schema", "title": "Schema", "parent": "epic",
                     "description": "users table"},
                    {"ref": "api", "title": "API", "parent": "epic", "dependsOn": ["schema"]},
                    {"ref": "ui", "title": "UI", "parent": "epic",
                     "dependsOn": ["api", "schema", "api"]},
                ],
                "dependencies": [{"task": existing["id"], "dependsOn": "epic"}],
            }), 201)
            events = listener.drain(0.5)
        finally:
            listener.close()
    refs = body["refs"]
    assert list(refs) == ["epic", "schema", "api", "ui"]
    by_ref = {ref: t for ref, t in zip(refs, body["tasks"])}
    assert [t["id"] for t in body["tasks"]] == list(refs.values())
    assert by_ref["epic"]["parentId"] is None and by_ref["epic"]["priority"] == "high"
    assert by_ref["schema"]["parentId"] == refs["epic"]
    assert by_ref["schema"]["description"] == "users table"
    assert by_ref["api"]["dependencies"] == [refs["schema"]]
    assert by_ref["ui"]["dependencies"] == [refs["api"], refs["schema"]]
    assert [t["id"] for t in body["updated"]] == [existing["id"]]
    assert body["updated"][0]["dependencies"] == [refs["epic"]]
    with http_client(srv) as api:
        ready = ok(api.get("/api/tasks", params={"projectId": project["id"], "ready": "true"}))
        assert [t["title"] for t in ready] == ["Login", "Schema"]
        assert ok(api.get(f"/api/tasks/{existing['id']}"))["dependencies"] == [refs["epic"]]
    created = [e["data"]["id"] for e in events if e["type"] == "task:created"]
    assert created == list(refs.values())
    assert existing["id"] in [e["data"]["id"] for e in events if e["type"] == "task:updated"]


@pytest.mark.parametrize("body,status,code,words", [
    ({"tasks": [{"ref": "a", "title": "A", "dependsOn": ["b"]},
                {"ref": "b", "title": "B", "dependsOn": ["a"]}]}, 400, "DEPENDENCY_CYCLE",
     "Dependency cycle: a -> b -> a"),
    ({"tasks": [{"ref": "a", "title": "A", "parent": "b"},
                {"ref": "b", "title": "B", "dependsOn": ["a"]}]}, 400, "DEPENDENCY_CYCLE",
     "Dependency cycle"),
    ({"tasks": [{"ref": "a", "title": "A", "dependsOn": ["nope"]}]}, 404, "TASK_NOT_FOUND",
     "no ref and no task named nope"),
    ({"tasks": [{"ref": "a", "title": "A"}, {"ref": "a", "title": "B"}]}, 400,
     "VALIDATION_ERROR", "ref a is used twice"),
    ({"tasks": [{"ref": "a", "title": " "}]}, 400, "VALIDATION_ERROR", "title is required"),
    ({"tasks": [{"ref": "a b", "title": "A"}]}, 400, "VALIDATION_ERROR", "ref must match"),
    ({"tasks": []}, 400, "VALIDATION_ERROR", "non-empty"),
    ({"tasks": [{"ref": "a", "title": "A", "dependsOn": ["a"]}]}, 400, "VALIDATION_ERROR",
     "cannot depend on itself"),
    ({"tasks": [{"ref": "a", "title": "A", "priority": "urgent"}]}, 400, "VALIDATION_ERROR",
     "priority"),
    ({"tasks": [{"ref": "a", "title": "A"}], "dependencies": [{"task": "a"}]}, 400,
     "VALIDATION_ERROR", "needs task and dependsOn"),
])
def test_a_bad_plan_changes_nothing(srv, body, status, code, words):
    with http_client(srv) as api:
        project = new_project(api)
        new_task(api, project["id"], title="Already here")
        before = Snapshot(api, srv)
        err = assert_error(plan(api, project["id"], body), status, code)
        assert words in err["message"], err
        before.assert_unchanged()


def test_a_plan_closing_a_cycle_through_existing_tasks_changes_nothing(srv):
    with http_client(srv) as api:
        project = new_project(api)
        first = new_task(api, project["id"], title="First")
        second = new_task(api, project["id"], title="Second", dependencies=[first["id"]])
        other = new_project(api, name="Other")
        foreign = new_task(api, other["id"], title="Foreign")
        before = Snapshot(api, srv)
        # new task waits for `second`, and `first` is made to wait for the new task
        err = assert_error(plan(api, project["id"], {
            "tasks": [{"ref": "mid", "title": "Mid", "dependsOn": [second["id"]]}],
            "dependencies": [{"task": first["id"], "dependsOn": "mid"}]}), 400,
            "DEPENDENCY_CYCLE")
        refs = err["details"]["refs"]
        assert refs[0] == refs[-1] and set(refs) == {"mid", first["id"], second["id"]}
        assert "mid" in err["message"]
        err = assert_error(plan(api, project["id"], {
            "tasks": [{"ref": "x", "title": "X", "dependsOn": [foreign["id"]]}]}), 400,
            "VALIDATION_ERROR")
        assert "belongs to another project" in err["message"]
        assert_error(plan(api, "proj_missing", {"tasks": [{"ref": "x", "title": "X"}]}), 404,
                     "PROJECT_NOT_FOUND")
        err = assert_error(plan(api, project["id"], {
            "tasks": [{"ref": first["id"], "title": "Shadow"}]}), 400, "VALIDATION_ERROR")
        assert "also the id of an existing task" in err["message"]
        before.assert_unchanged()


def test_a_plan_writing_to_a_claimed_task_is_fenced(srv):
    with http_client(srv) as api:
        project = new_project(api)
        task = new_task(api, project["id"], title="Claimed")
        holder = ok(api.post("/api/sessions", json={"projectId": project["id"],
                                                    "taskIds": []}), 201)
        claim = ok(api.post(f"/api/tasks/{task['id']}/claim",
                            json={"sessionId": holder["id"]}))["claim"]
        body = {"tasks": [{"ref": "dep", "title": "Found while working"}],
                "dependencies": [{"task": task["id"], "dependsOn": "dep"}]}
        before = Snapshot(api, srv)
        stale = str(claim["token"] + 1)
        assert_error(plan(api, project["id"], body, headers={"X-Maestro-Claim-Token": stale}),
                     409, "CLAIM_LOST")
        before.assert_unchanged()
        done = ok(plan(api, project["id"], body,
                       headers={"X-Maestro-Claim-Token": str(claim["token"])}), 201)
        assert done["updated"][0]["dependencies"] == [done["refs"]["dep"]]


@pytest.fixture
def guarded(make_server):
    """A token-protected server, a worker session spawned for task `mine` (child of `epic`),
    with its token."""
    srv = make_server(env={"MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_LAUNCHER": "ui"})
    user = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {USER_TOKEN}"},
                        timeout=10)
    listener = Events(srv.ws_url + f"?token={USER_TOKEN}")
    project = user.post("/api/projects", json={"name": "A"}).json()
    other = user.post("/api/projects", json={"name": "B"}).json()
    epic = user.post("/api/tasks", json={"projectId": project["id"], "title": "Epic"}).json()
    mine = user.post("/api/tasks", json={"projectId": project["id"], "title": "Mine",
                                         "parentId": epic["id"]}).json()
    theirs = user.post("/api/tasks", json={"projectId": project["id"], "title": "Theirs",
                                           "parentId": epic["id"]}).json()
    sid = user.post("/api/sessions/spawn", json={"projectId": project["id"],
                                                 "taskIds": [mine["id"]]}).json()["sessionId"]
    request, _ = listener.until(lambda e: e["type"] == "session:spawn_request"
                                and e["data"]["session"]["id"] == sid)
    listener.close()
    token = request["data"]["envVars"]["MAESTRO_SESSION_TOKEN"]
    agent = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"},
                         timeout=10)
    yield {"srv": srv, "user": user, "agent": agent, "project": project, "other": other,
           "epic": epic, "mine": mine, "theirs": theirs}
    user.close()
    agent.close()


def test_an_agent_plans_only_under_or_beside_its_own_tasks(guarded):
    g = guarded
    agent, pid, mine, epic = g["agent"], g["project"]["id"], g["mine"], g["epic"]
    before = Snapshot(g["user"], g["srv"])
    refused = [
        {"tasks": [{"ref": "top", "title": "Top level"}]},
        {"tasks": [{"ref": "x", "title": "Under the epic", "parent": epic["id"]}]},
        {"tasks": [{"ref": "x", "title": "X", "parent": mine["id"]}],
         "dependencies": [{"task": g["theirs"]["id"], "dependsOn": "x"}]},
        # beside its own task, but nothing of its own waits for it
        {"tasks": [{"ref": "x", "title": "X", "parent": epic["id"]}],
         "dependencies": [{"task": g["theirs"]["id"], "dependsOn": "x"}]},
    ]
    for body in refused:
        assert_error(plan(agent, pid, body), 403, "FORBIDDEN")
    assert_error(plan(agent, g["other"]["id"], {"tasks": [{"ref": "x", "title": "X"}]}), 403,
                 "FORBIDDEN")
    before.assert_unchanged()
    children = ok(plan(agent, pid, {"tasks": [
        {"ref": "a", "title": "Child", "parent": mine["id"]},
        {"ref": "b", "title": "Grandchild", "parent": "a", "dependsOn": ["a"]}]}), 201)
    assert children["tasks"][1]["parentId"] == children["refs"]["a"]
    beside = ok(plan(agent, pid, {
        "tasks": [{"ref": "dep", "title": "Needed first", "parent": epic["id"]}],
        "dependencies": [{"task": mine["id"], "dependsOn": "dep"}]}), 201)
    assert beside["tasks"][0]["parentId"] == epic["id"]
    assert beside["updated"][0]["dependencies"] == [beside["refs"]["dep"]]
