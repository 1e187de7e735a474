"""Projects (SPEC §4.1, §7.1, §7.2), health, routing conventions (§3.3) and list order (§3.5),
through a real server, with the entity files checked on disk."""

from __future__ import annotations

import itertools
import time

import pytest
from helpers import (
    ID_RE,
    PROJECT_KEYS,
    Snapshot,
    assert_envelope,
    assert_error,
    assert_file_matches,
    assert_stored,
    entity_path,
    event_types,
    get,
    new_project,
    new_session,
    new_task,
    ok,
)


def test_health(api):
    before = int(time.time() * 1000)
    body = ok(api.get("/health"))
    after = int(time.time() * 1000)
    assert body["status"] == "ok"
    assert isinstance(body["timestamp"], int)
    assert before - 5 <= body["timestamp"] <= after + 5
    assert isinstance(body["uptime"], float) and body["uptime"] >= 0
    second = ok(api.get("/health"))
    assert second["uptime"] >= body["uptime"]


def test_create_with_defaults(api, srv, ws):
    before = int(time.time() * 1000)
    project = ok(api.post("/api/projects", json={"name": "  Shop  "}), 201)
    assert set(project) == PROJECT_KEYS
    assert ID_RE["project"].match(project["id"])
    assert project["name"] == "Shop"
    assert project["workingDir"] == ""
    assert project["description"] == ""
    assert project["createdAt"] == project["updatedAt"]
    assert before <= project["createdAt"] <= int(time.time() * 1000)
    assert get(api, "project", project["id"]) == project
    assert_file_matches(srv.data_dir, "project", project)
    events = ws.barrier()
    assert event_types(events) == ["project:created"]
    assert_envelope(events[0])
    assert events[0]["data"] == project


def test_create_with_all_fields_and_non_ascii(api, srv):
    project = new_project(api, name="Café ☕ 日本", workingDir="/home/dev/café",
                          description="Ünïcode **markdown**")
    assert project["name"] == "Café ☕ 日本"
    assert project["workingDir"] == "/home/dev/café"
    assert project["description"] == "Ünïcode **markdown**"
    raw = entity_path(srv.data_dir, "project", project).read_bytes()
    assert "Café ☕ 日本".encode() in raw  # written literally, not \u-escaped
    assert b"\\u" not in raw
    assert_file_matches(srv.data_dir, "project", project)


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "   \t\n"}, {"name": None},
                                  {"workingDir": "/x"}])
def test_create_requires_a_name(api, srv, ws, body):
    snap = Snapshot(api, srv)
    assert_error(api.post("/api/projects", json=body), 400, "VALIDATION_ERROR",
                 "name is required")
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_name_length_limit(api, srv):
    exact = new_project(api, name="n" * 1000)
    assert len(exact["name"]) == 1000
    snap = Snapshot(api, srv)
    assert_error(api.post("/api/projects", json={"name": "n" * 1001}), 400, "VALIDATION_ERROR")
    assert_error(api.put(f"/api/projects/{exact['id']}", json={"name": "n" * 1001}), 400,
                 "VALIDATION_ERROR")
    snap.assert_unchanged()


def test_get_unknown_project(api):
    assert_error(api.get("/api/projects/proj_0_missing"), 404, "PROJECT_NOT_FOUND",
                 "Project not found")


def test_update_is_partial(api, srv, ws):
    project = new_project(api, name="Before", workingDir="/a", description="d")
    ws.barrier()
    updated = ok(api.put(f"/api/projects/{project['id']}", json={"description": "new"}))
    assert updated == {**project, "description": "new", "updatedAt": updated["updatedAt"]}
    assert updated["updatedAt"] > project["updatedAt"]
    events = ws.barrier()
    assert event_types(events) == ["project:updated"]
    assert events[0]["data"] == updated
    assert_stored(api, srv.data_dir, "project", project["id"])

    renamed = ok(api.put(f"/api/projects/{project['id']}",
                         json={"name": "  After  ", "workingDir": "/b"}))
    assert renamed["name"] == "After"
    assert renamed["workingDir"] == "/b"
    assert renamed["description"] == "new"
    assert_stored(api, srv.data_dir, "project", project["id"])


def test_update_never_changes_id_or_created_at_and_ignores_unknown_fields(api, srv):
    project = new_project(api, name="Fixed")
    updated = ok(api.put(f"/api/projects/{project['id']}", json={
        "id": "proj_1_hijack", "createdAt": 1, "updatedAt": 2, "evil": {"x": 1},
        "tasks": ["task_1"], "name": "Fixed 2"}))
    assert updated["id"] == project["id"]
    assert updated["createdAt"] == project["createdAt"]
    assert updated["updatedAt"] > project["updatedAt"]
    assert set(updated) == PROJECT_KEYS
    stored = assert_stored(api, srv.data_dir, "project", project["id"])
    assert "evil" not in stored and "tasks" not in stored
    assert_error(api.get("/api/projects/proj_1_hijack"), 404, "PROJECT_NOT_FOUND")


def test_update_with_empty_body_bumps_updated_at(api, srv, ws):
    project = new_project(api, name="Touch")
    ws.barrier()
    touched = ok(api.put(f"/api/projects/{project['id']}"))
    assert touched["updatedAt"] > project["updatedAt"]
    assert {k: v for k, v in touched.items() if k != "updatedAt"} == \
        {k: v for k, v in project.items() if k != "updatedAt"}
    assert event_types(ws.barrier()) == ["project:updated"]


def test_updated_at_strictly_increases(api):
    project = new_project(api, name="Fast")
    stamps = [project["updatedAt"]]
    for i in range(15):
        stamps.append(ok(api.put(f"/api/projects/{project['id']}",
                                 json={"description": str(i)}))["updatedAt"])
    assert all(b > a for a, b in itertools.pairwise(stamps)), stamps


def test_update_refusals_change_nothing(api, srv, ws):
    project = new_project(api, name="Keep")
    ws.barrier()
    snap = Snapshot(api, srv)
    for name in ("", "   "):
        assert_error(api.put(f"/api/projects/{project['id']}", json={"name": name}), 400,
                     "VALIDATION_ERROR", "name cannot be empty")
    assert_error(api.put(f"/api/projects/{project['id']}",
                         json={"description": "changed", "name": " "}), 400, "VALIDATION_ERROR")
    assert_error(api.put("/api/projects/proj_0_missing", json={"name": "x"}), 404,
                 "PROJECT_NOT_FOUND", "Project not found")
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_delete(api, srv, ws):
    project = new_project(api, name="Doomed")
    path = entity_path(srv.data_dir, "project", project)
    assert path.is_file()
    ws.barrier()
    # The CLI sends Content-Type: application/json on every request, even without a body.
    resp = api.delete(f"/api/projects/{project['id']}",
                      headers={"Content-Type": "application/json"})
    assert ok(resp) == {"success": True, "id": project["id"]}
    assert not path.exists()
    assert_error(api.get(f"/api/projects/{project['id']}"), 404, "PROJECT_NOT_FOUND")
    assert project["id"] not in [p["id"] for p in ok(api.get("/api/projects"))]
    events = ws.barrier()
    assert event_types(events) == ["project:deleted"]
    assert events[0]["data"] == {"id": project["id"]}
    assert_error(api.delete(f"/api/projects/{project['id']}"), 404, "PROJECT_NOT_FOUND",
                 "Project not found")
    assert ws.barrier() == []


def test_delete_refused_while_tasks_or_sessions_exist(api, srv, ws):
    project = new_project(api, name="Busy")
    t1 = new_task(api, project["id"])
    new_task(api, project["id"])
    session = new_session(api, project["id"], [])
    ws.barrier()
    snap = Snapshot(api, srv)
    # Tasks are checked before sessions.
    assert_error(api.delete(f"/api/projects/{project['id']}"), 400, "PROJECT_HAS_DEPENDENCIES",
                 "Cannot delete project with 2 existing task(s)")
    snap.assert_unchanged()
    assert ws.barrier() == []

    for tid in [t["id"] for t in ok(api.get("/api/tasks", params={"projectId": project["id"]}))]:
        ok(api.delete(f"/api/tasks/{tid}"))
    assert t1["id"]
    # A finished session still blocks deletion.
    ok(api.patch(f"/api/sessions/{session['id']}", json={"status": "completed"}))
    ws.barrier()
    snap = Snapshot(api, srv)
    assert_error(api.delete(f"/api/projects/{project['id']}"), 400, "PROJECT_HAS_DEPENDENCIES",
                 "Cannot delete project with 1 existing session(s)")
    snap.assert_unchanged()
    assert ws.barrier() == []

    ok(api.delete(f"/api/sessions/{session['id']}"))
    assert ok(api.delete(f"/api/projects/{project['id']}")) == \
        {"success": True, "id": project["id"]}


def test_list_is_in_creation_order(api):
    created = [new_project(api, name=f"Order {i}") for i in range(12)]
    listed = ok(api.get("/api/projects"))
    ids = [p["id"] for p in listed]
    assert ids == [p["id"] for p in sorted(listed, key=lambda p: (p["createdAt"], p["id"]))]
    positions = [ids.index(p["id"]) for p in created]
    assert positions == sorted(positions)
    for p in created:
        assert listed[ids.index(p["id"])] == p


def test_trailing_slash_is_the_same_route(api):
    assert ok(api.get("/api/projects/")) == ok(api.get("/api/projects"))
    project = ok(api.post("/api/projects/", json={"name": "Slash"}), 201)
    assert ok(api.get(f"/api/projects/{project['id']}/")) == project
    assert ok(api.put(f"/api/projects/{project['id']}/", json={"description": "x"}))[
        "description"] == "x"
    assert ok(api.get("/health/"))["status"] == "ok"


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/nothing"),
    ("GET", "/api"),
    ("GET", "/api/projects/x/y"),
    ("POST", "/api/unknown"),
    ("POST", "/api/sessions/sess_1_abc"),  # the :id routes have no POST
    ("PATCH", "/api/projects/proj_1_abc"),
    ("DELETE", "/api/projects"),
])
def test_unknown_route_is_json_404(api, srv, method, path):
    snap = Snapshot(api, srv)
    resp = api.request(method, path, json={"name": "x"} if method != "GET" else None)
    assert_error(resp, 404, "NOT_FOUND", "Route not found")
    snap.assert_unchanged()


def test_responses_are_json_utf8(api):
    project = new_project(api, name="Ünicode")
    resp = api.get(f"/api/projects/{project['id']}")
    assert resp.headers["content-type"] == "application/json; charset=utf-8"
    assert resp.json()["name"] == "Ünicode"
