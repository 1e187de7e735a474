"""Rights as per-action rules, without a server: every route declares the action it performs on
which entity and that action has a rule (a route without one is refused when it is added, so a
typo cannot become a silent 403); the rules decide on a state in memory; what an agent sees of a
session is redacted by one function; /openapi.json says who may use each operation."""

from __future__ import annotations

import asyncio

import pytest
from maestro.config import Settings
from maestro.errors import ApiError
from maestro.identity import AgentIdentity
from maestro.policy import RULES, Act, Policy, bind, rule_for, seen_by
from maestro.server.app import create_app
from maestro.server.openapi import Op, build_document
from maestro.server.router import Router
from maestro.state import State


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rights")
    settings = Settings.from_env({"DATA_DIR": str(tmp / "data"),
                                  "SESSION_DIR": str(tmp / "s")})
    return create_app(settings).inner.state.router.table


def test_every_route_declares_an_action_that_has_a_rule(table):
    used = set()
    for method, path, doc in table:
        assert isinstance(doc.acts, Act), f"{method} {path} declares no action"
        rule = rule_for(doc.acts)
        assert rule.text, f"{method} {path}: the rule of {doc.acts.name} says nothing"
        if doc.acts.id is not None:
            assert "{" + doc.acts.id + "}" in path, (method, path)
        used.add((doc.acts.entity, doc.acts.action))
    assert used == set(RULES), f"rules no route uses: {set(RULES) - used}"


async def _handler(request):
    return {}


@pytest.mark.parametrize("op, message", [
    (Op("No action"), "declares no action"),
    (Op("A typo", acts=Act("task", "updat")), "no rule for the action task.updat"),
    (Op("A typo", acts=Act("tasks", "update")), "no rule for the action tasks.update"),
    (Op("Wrong id", acts=Act("task", "update", id="taskId")), "which the path lacks"),
])
def test_a_route_whose_action_has_no_rule_is_refused(op, message):
    router = Router(None)
    with pytest.raises(ValueError, match=message) as refused:
        router.add("PATCH", "/api/tasks/{id}", _handler, op)
    assert "PATCH /api/tasks/{id}" in str(refused.value)
    assert router.table == []
    with pytest.raises(ValueError, match="declares no action"):
        router.add("GET", "/api/tasks", _handler, None)


def test_a_router_without_a_guard_refuses_agents():
    router = Router(None)
    router.add("GET", "/api/skills", _handler, Op("Skills", acts=Act("skill", "list", id=None)))
    found, _ = router.match("GET", "/api/skills")
    with pytest.raises(ApiError) as refused:
        asyncio.run(router.guard(None, found[3]))
    assert refused.value.status == 403
    assert refused.value.body()["message"] == "Not available to agent sessions"


# ------------------------------------------------------------------ the rules on a state
@pytest.fixture
def world():
    """Project A: task a1 (child a1c) linked to session `own`, task a2 linked to `other`,
    session `sub` spawned by `own`; project B: task b1, session `far`."""
    state = State()
    for pid in ("A", "B"):
        state.projects.put({"id": pid, "createdAt": 1})
    tasks = [("a1", "A", None, ["own"]), ("a1c", "A", "a1", []), ("a2", "A", None, ["other"]),
             ("b1", "B", None, [])]
    for n, (tid, pid, parent, linked) in enumerate(tasks):
        state.tasks.put({"id": tid, "createdAt": n, "projectId": pid, "parentId": parent,
                         "sessionIds": linked})
    sessions = [("own", "A", ["a1"], {}), ("other", "A", ["a2"], {}),
                ("sub", "A", [], {"spawnedBy": "own"}), ("far", "B", [], {})]
    for n, (sid, pid, linked, meta) in enumerate(sessions):
        state.sessions.put({"id": sid, "startedAt": n, "projectId": pid, "taskIds": linked,
                            "metadata": meta})
    return Policy(state)


WORKER = AgentIdentity("own", "A", "worker")
ORCHESTRATOR = AgentIdentity("own", "A", "orchestrator")


class Ask:
    def __init__(self, params=None, query=None):
        self.params = params or {}
        self._query = query or {}

    def query(self, name):
        return self._query.get(name)


def decide(policy, who, act: Act, target=None, body=None, params=None, query=None):
    """None (allowed, or the project a list is restricted to) or the 403's body."""
    try:
        return policy.authorize(who, bind(act), target, body, Ask(params, query))
    except ApiError as exc:
        assert exc.status == 403 and exc.code == "FORBIDDEN"
        return exc.body()


def refused(message, details=None):
    body = {"error": True, "code": "FORBIDDEN", "message": message}
    if details is not None:
        body["details"] = details
    return body


def test_an_agent_changes_a_task_linked_to_its_session_or_below_one(world):
    update = Act("task", "update")
    assert decide(world, WORKER, update, "a1", {"status": "completed"}) is None
    assert decide(world, WORKER, update, "a1c", {}) is None
    assert decide(world, WORKER, update, "missing", {}) is None  # the route answers 404
    mine_only = "This session may only change its own tasks and their children"
    assert decide(world, WORKER, update, "a2", {}) == refused(mine_only, {"taskId": "a2"})
    assert decide(world, WORKER, update, "a1c", {"parentId": "a2"}) == \
        refused(mine_only, {"taskId": "a2"})
    assert decide(world, WORKER, update, "a1", {"sessionIds": ["own"]}) is None
    assert decide(world, WORKER, update, "a1", {"sessionIds": []}) is None
    assert decide(world, WORKER, update, "a1", {"sessionIds": ["own", "other"]}) == \
        refused("This session may only link or unlink itself", {"sessionIds": ["other"]})
    for action in ("append", "add_dependency", "remove_dependency"):
        assert decide(world, WORKER, Act("task", action), "a1c", {}) is None
        assert decide(world, WORKER, Act("task", action), "b1", {}) == \
            refused(mine_only, {"taskId": "b1"})


def test_an_agent_creates_only_child_tasks_of_its_own(world):
    create = Act("task", "create", id=None)
    assert decide(world, WORKER, create, None, {"projectId": "A", "parentId": "a1c"}) is None
    assert decide(world, WORKER, create, None, {"projectId": "A"}) == \
        refused("This session may only create child tasks under its own tasks")
    assert decide(world, WORKER, create, None, {"projectId": "B", "parentId": "b1"}) == \
        refused("This session may only create tasks in its own project")


def test_an_agent_appends_to_its_own_sessions_timeline_only(world):
    for action in ("append", "heartbeat", "update"):
        assert decide(world, WORKER, Act("session", action), "own", {}) is None
        assert decide(world, WORKER, Act("session", action), "other", {}) == \
            refused("This session may only change itself", {"sessionId": "other"})
    assert decide(world, WORKER, Act("session", "update"), "own", {"taskIds": ["a1", "a2"]}) \
        == refused("This session may only link its own tasks", {"taskId": "a2"})
    assert decide(world, WORKER, Act("session", "link"), "own", params={"taskId": "a2"}) == \
        refused("This session may only change its own tasks and their children",
                {"taskId": "a2"})


def test_an_orchestrator_stops_itself_and_the_sessions_it_spawned(world):
    stop = Act("session", "stop")
    assert decide(world, ORCHESTRATOR, stop, "sub") is None
    assert decide(world, ORCHESTRATOR, stop, "own") is None
    assert decide(world, ORCHESTRATOR, stop, "missing") is None  # the route answers 404
    others = refused("This session may only stop itself or the sessions it spawned")
    assert decide(world, ORCHESTRATOR, stop, "other") == others
    assert decide(world, WORKER, stop, "sub") == others


def test_only_an_orchestrator_spawns_and_only_for_its_own_tasks(world):
    spawn = Act("session", "spawn", id=None)
    body = {"projectId": "A", "taskIds": ["a1c"], "spawnedBy": "own"}
    assert decide(world, ORCHESTRATOR, spawn, None, body) is None
    assert decide(world, WORKER, spawn, None, body) == \
        refused("Only orchestrator sessions may spawn sessions")
    assert decide(world, ORCHESTRATOR, spawn, None, dict(body, taskIds=["a2"])) == \
        refused("This session may only spawn for its own tasks", {"taskId": "a2"})
    assert decide(world, ORCHESTRATOR, spawn, None, dict(body, spawnedBy="far")) == \
        refused("This session may only name a session of its own project as the parent",
                {"field": "spawnedBy"})


def test_agents_read_their_own_project_and_lists_are_restricted_to_it(world):
    for entity in ("project", "task", "session"):
        assert decide(world, WORKER, Act(entity, "list", id=None)) == "A"
    assert decide(world, WORKER, Act("task", "list", id=None), query={"projectId": "B"}) == \
        refused("This session may only read its own project")
    assert decide(world, WORKER, Act("task", "read"), "a2") is None
    assert decide(world, WORKER, Act("task", "read"), "b1") == \
        refused("This session may only read its own project")
    assert decide(world, WORKER, Act("project", "read"), "B") == \
        refused("This session may only read its own project")
    assert decide(world, WORKER, Act("session", "read_log"), "other") == \
        refused("This session may only read its own output log", {"sessionId": "other"})
    assert decide(world, WORKER, Act("session", "diff"), "other") == \
        refused("This session may only read its own diff", {"sessionId": "other"})
    assert decide(world, WORKER, Act("skill", "read"), "any") is None


def test_what_no_rule_allows_is_refused_to_agents(world):
    for entity, action in [("project", "create"), ("project", "delete"), ("task", "delete"),
                           ("session", "create"), ("session", "delete"), ("skill", "reload"),
                           ("workspace", "list")]:
        act = Act(entity, action, id=None)
        assert decide(world, ORCHESTRATOR, act, None, {}) == \
            refused("Not available to agent sessions"), act
    for action in ("merge", "cleanup"):
        assert decide(world, ORCHESTRATOR, Act("session", action), "own", {}) == \
            refused("Only a person merges or removes a session's worktree")


# ------------------------------------------------------------------ what an agent sees
SESSION = {"id": "own", "projectId": "A", "taskIds": [],
           "env": {"OPENAI_API_KEY": "sk-1", "DB_PASSWORD": "pw", "PLAIN": "visible"}}


def test_a_person_sees_everything_an_agent_its_project_without_secrets():
    assert seen_by(None, SESSION, "B") is SESSION
    assert seen_by(WORKER, SESSION, "B") is None
    assert seen_by(WORKER, SESSION, None) is None
    seen = seen_by(WORKER, SESSION, "A")
    assert seen["env"] == {"OPENAI_API_KEY": "[redacted]", "DB_PASSWORD": "[redacted]",
                           "PLAIN": "visible"}
    assert SESSION["env"]["OPENAI_API_KEY"] == "sk-1"  # the stored session is untouched
    plain = dict(SESSION, env={"PLAIN": "visible"})
    assert seen_by(WORKER, plain, "A") is plain  # nothing to hide: no copy
    request = {"session": SESSION, "envVars": {"MAESTRO_SESSION_TOKEN": "mst.x", "HOME": "/h"}}
    seen = seen_by(WORKER, request, "A")
    assert seen["session"]["env"]["OPENAI_API_KEY"] == "[redacted]"
    assert seen["envVars"] == {"MAESTRO_SESSION_TOKEN": "[redacted]", "HOME": "/h"}
    task = {"id": "a1", "projectId": "A", "title": "t"}
    assert seen_by(WORKER, task, "A") is task


# ------------------------------------------------------------------ the reference
def test_the_reference_says_who_may_use_each_operation(table):
    document = build_document(table)
    for method, path, doc in table:
        op = document["paths"][path][method.lower()]
        rights = op["x-maestro-rights"]
        assert rights == {"action": doc.acts.name, "people": True,
                          "agents": rule_for(doc.acts).text}, (method, path)
        assert f"Rights (`{doc.acts.name}`): people always. " + rights["agents"] in \
            op["description"]
    patch = document["paths"]["/api/tasks/{id}"]["patch"]["x-maestro-rights"]
    assert patch["agents"].startswith("Agents: a task linked to their session or below")
    merge = document["paths"]["/api/sessions/{id}/merge"]["post"]["x-maestro-rights"]
    assert merge["agents"].startswith("Not agents")
