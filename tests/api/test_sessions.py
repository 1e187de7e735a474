"""Sessions (SPEC §4.4, §4.5, §4.7, §7.4, extensions E1 and E2) through a real server, with the
entity files checked on disk after every change."""

from __future__ import annotations

import itertools
import socket
import sys
import time

import pytest
from helpers import (
    ID_RE,
    SESSION_KEYS,
    Snapshot,
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


@pytest.fixture
def project(api, ws_conn):
    created = new_project(api, name="Sessions project")
    ws_conn.barrier()
    return created


def patch(api, session_id, body) -> dict:
    return ok(api.patch(f"/api/sessions/{session_id}", json=body))


# ------------------------------------------------------------------ create
def test_create_with_defaults(api, srv, ws, project):
    before = int(time.time() * 1000)
    session = ok(api.post("/api/sessions", json={"projectId": project["id"], "taskIds": []}),
                 201)
    assert set(session) == SESSION_KEYS
    assert ID_RE["session"].match(session["id"])
    assert session["projectId"] == project["id"]
    assert session["taskIds"] == []
    assert session["name"] == "Unnamed Session"
    assert session["status"] == "running"
    assert session["env"] == {}
    assert session["events"] == []
    assert session["completedAt"] is None
    assert before <= session["startedAt"] <= int(time.time() * 1000)
    assert session["lastActivity"] == session["startedAt"]
    assert session["hostname"] == socket.gethostname()
    assert session["platform"] == sys.platform
    assert get(api, "session", session["id"]) == session
    assert_file_matches(srv.data_dir, "session", session)
    events = ws.barrier()
    assert event_types(events) == ["session:created"]
    assert events[0]["data"] == session


def test_create_with_all_fields(api, srv, project):
    metadata = {"skills": ["maestro-worker"], "spawnSource": "manual", "spawnedBy": None,
                "context": {"notes": ["ünïcode"], "depth": 2}}
    session = new_session(api, project["id"], [], name="Worker: auth ✓", agentId="agent-7",
                          status="spawning", env={"A": "1", "B": "zwei"}, metadata=metadata)
    assert session["name"] == "Worker: auth ✓"
    assert session["agentId"] == "agent-7"
    assert session["status"] == "spawning"
    assert session["env"] == {"A": "1", "B": "zwei"}
    assert session["metadata"] == metadata
    assert set(session) == SESSION_KEYS | {"agentId", "metadata"}
    assert_stored(api, srv.data_dir, "session", session["id"])


@pytest.mark.parametrize("status", ["spawning", "running", "completed", "failed"])
def test_every_status_is_accepted(api, project, status):
    assert new_session(api, project["id"], [], status=status)["status"] == status


def test_task_ids_are_deduplicated_in_order(api, project):
    t1, t2, t3 = (new_task(api, project["id"], title=f"t{i}") for i in range(3))
    session = new_session(api, project["id"], [t2["id"], t1["id"], t2["id"], t3["id"],
                                              t1["id"]])
    assert session["taskIds"] == [t2["id"], t1["id"], t3["id"]]
    for t in (t1, t2, t3):
        assert get(api, "task", t["id"])["sessionIds"] == [session["id"]]


def test_legacy_task_id_field(api, srv, project):
    task = new_task(api, project["id"])
    resp = api.post("/api/sessions", json={"projectId": project["id"], "taskId": task["id"]})
    session = ok(resp, 201)
    assert session["taskIds"] == [task["id"]]
    assert "taskId" not in session
    stored = assert_stored(api, srv.data_dir, "session", session["id"])
    assert "taskId" not in stored
    assert get(api, "task", task["id"])["sessionIds"] == [session["id"]]
    # taskIds wins when both are given.
    both = new_session(api, project["id"], [], taskId=task["id"])
    assert both["taskIds"] == []


def test_client_chosen_id(api, srv, project):
    for sid in ("my-session_1", "A", "x" * 128, "session-1706792222222-abcdef01"):
        session = new_session(api, project["id"], [], id=sid)
        assert session["id"] == sid
        assert_stored(api, srv.data_dir, "session", sid)


@pytest.mark.parametrize("sid", ["../x", "a/b", "x\u0000", "", "a b", "ü", "x" * 129,
                                 "..", ".", "a\\b", "a.json", "-/../../etc", 42, ["x"]])
def test_bad_client_id_creates_nothing(api, srv, ws, project, sid):
    snap = Snapshot(api, srv)
    assert_error(api.post("/api/sessions", json={"projectId": project["id"], "taskIds": [],
                                                 "id": sid}), 400, "VALIDATION_ERROR")
    snap.assert_unchanged()
    assert not (srv.data_dir / "x.json").exists()
    assert not (srv.data_dir / "sessions" / "a").exists()
    assert ws.barrier() == []


def test_duplicate_client_id_is_refused(api, srv, ws, project):
    task = new_task(api, project["id"])
    first = new_session(api, project["id"], [], id="dup-session", name="first")
    ws.barrier()
    snap = Snapshot(api, srv)
    assert_error(api.post("/api/sessions", json={"projectId": project["id"], "id": "dup-session",
                                                 "taskIds": [task["id"]], "name": "second"}),
                 400, "VALIDATION_ERROR", "Session dup-session already exists")
    snap.assert_unchanged()
    assert get(api, "session", "dup-session") == first
    assert ws.barrier() == []


@pytest.mark.parametrize("body,status,code,message", [
    ({"projectId": "PROJECT"}, 400, "VALIDATION_ERROR", "taskIds is required"),
    ({"taskIds": []}, 400, "VALIDATION_ERROR", "projectId is required"),
    ({"taskIds": [], "projectId": ""}, 400, "VALIDATION_ERROR", "projectId is required"),
    ({"taskIds": [], "projectId": "proj_0_missing"}, 404, "PROJECT_NOT_FOUND",
     "Project not found"),
    ({"taskIds": ["TASK", "task_0_missing"], "projectId": "PROJECT"}, 404, "TASK_NOT_FOUND",
     None),
    ({"taskIds": "TASK", "projectId": "PROJECT"}, 400, "VALIDATION_ERROR", None),
    ({"taskIds": [1], "projectId": "PROJECT"}, 400, "VALIDATION_ERROR", None),
    ({"taskIds": [], "projectId": "PROJECT", "status": "idle"}, 400, "VALIDATION_ERROR", None),
    ({"taskIds": [], "projectId": "PROJECT", "env": {"A": 1}}, 400, "VALIDATION_ERROR", None),
    ({"taskIds": [], "projectId": "PROJECT", "env": ["A"]}, 400, "VALIDATION_ERROR", None),
    ({"taskIds": [], "projectId": "PROJECT", "metadata": "x"}, 400, "VALIDATION_ERROR", None),
    ({"taskIds": [], "projectId": "PROJECT", "name": 5}, 400, "VALIDATION_ERROR", None),
    ({"taskIds": [], "projectId": "PROJECT", "name": "n" * 1001}, 400, "VALIDATION_ERROR",
     None),
    ({"taskIds": [], "projectId": "PROJECT", "agentId": 5}, 400, "VALIDATION_ERROR", None),
])
def test_create_refusals(api, srv, ws, project, body, status, code, message):
    task = new_task(api, project["id"])
    ws.barrier()
    task_file = entity_path(srv.data_dir, "task", task).read_bytes()

    def fill(value):
        if value == "PROJECT":
            return project["id"]
        if value == "TASK":
            return task["id"]
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    body = {k: fill(v) for k, v in body.items()}
    snap = Snapshot(api, srv)
    err = assert_error(api.post("/api/sessions", json=body), status, code, message)
    if code == "TASK_NOT_FOUND":
        assert err["details"]["taskId"] == "task_0_missing"
    snap.assert_unchanged()
    assert get(api, "task", task["id"]) == task
    assert entity_path(srv.data_dir, "task", task).read_bytes() == task_file
    assert ws.barrier() == []


def test_get_unknown_session(api):
    assert_error(api.get("/api/sessions/sess_0_missing"), 404, "SESSION_NOT_FOUND",
                 "Session not found")
    # `spawn` is only special for POST.
    assert_error(api.get("/api/sessions/spawn"), 404, "SESSION_NOT_FOUND", "Session not found")


# ------------------------------------------------------------------ list and filters
def test_list_filters(api, project):
    other = new_project(api, name="Other sessions")
    t1 = new_task(api, project["id"])
    t2 = new_task(api, project["id"])
    spawning = new_session(api, project["id"], [t1["id"]], status="spawning")
    running = new_session(api, project["id"], [t1["id"], t2["id"]])
    completed = new_session(api, project["id"], [t2["id"]], status="completed")
    failed = new_session(api, other["id"], [], status="failed")
    elsewhere = new_session(api, other["id"], [])

    def ids(**params):
        return [s["id"] for s in ok(api.get("/api/sessions", params=params))]

    mine = [spawning["id"], running["id"], completed["id"]]
    assert ids(projectId=project["id"]) == mine
    assert ids(projectId=other["id"]) == [failed["id"], elsewhere["id"]]
    assert ids(taskId=t1["id"]) == [spawning["id"], running["id"]]
    assert ids(taskId=t2["id"]) == [running["id"], completed["id"]]
    assert ids(taskId=t2["id"], status="completed") == [completed["id"]]
    assert ids(projectId=project["id"], status="spawning") == [spawning["id"]]
    assert ids(projectId=project["id"], active="true") == [spawning["id"], running["id"]]
    assert ids(projectId=other["id"], active="true") == [elsewhere["id"]]
    assert ids(taskId=t2["id"], active="true") == [running["id"]]
    for not_true in ("false", "1", "TRUE", "yes"):
        assert ids(projectId=project["id"], active=not_true) == mine
    assert ids(status="idle") == []
    assert ids(taskId="task_0_missing") == []
    # Empty values are ignored.
    assert ids(projectId=project["id"], taskId="", status="", active="") == mine
    assert ok(api.get("/api/sessions?projectId=&taskId=&status=&active=")) == \
        ok(api.get("/api/sessions"))
    # Completed and failed sessions are not active; every other one is.
    active = ok(api.get("/api/sessions", params={"active": "true"}))
    assert active and all(s["status"] not in ("completed", "failed") for s in active)


def test_list_is_in_start_order(api, project):
    for i in range(10):
        new_session(api, project["id"], [], name=f"order {i}")
    listed = ok(api.get("/api/sessions"))
    assert [s["id"] for s in listed] == \
        [s["id"] for s in sorted(listed, key=lambda s: (s["startedAt"], s["id"]))]
    names = [s["name"] for s in listed if s["projectId"] == project["id"]]
    assert names == [f"order {i}" for i in range(10)]


# ------------------------------------------------------------------ update
def test_update_fields(api, srv, ws, project):
    session = new_session(api, project["id"], [], env={"KEEP": "1", "OVER": "old"})
    ws.barrier()
    updated = patch(api, session["id"], {"agentId": "agent-1", "env": {"OVER": "new",
                                                                       "ADD": "x"}})
    assert updated["agentId"] == "agent-1"
    assert updated["env"] == {"KEEP": "1", "OVER": "new", "ADD": "x"}  # shallow merge
    assert updated["lastActivity"] > session["lastActivity"]
    assert updated["startedAt"] == session["startedAt"]
    events = ws.barrier()
    assert event_types(events) == ["session:updated"]
    assert events[0]["data"] == updated
    assert_stored(api, srv.data_dir, "session", session["id"])


def test_update_ignores_fields_it_does_not_take(api, srv, project):
    session = new_session(api, project["id"], [], name="Named", metadata={"a": 1})
    updated = patch(api, session["id"], {"name": "Renamed", "metadata": {"b": 2},
                                         "projectId": "proj_other", "completedAt": 5,
                                         "startedAt": 6, "hostname": "evil", "id": "sess_x",
                                         "platform": "win32", "unknown": True})
    for key in ("name", "metadata", "projectId", "completedAt", "startedAt", "hostname", "id",
                "platform"):
        assert updated[key] == session[key], key
    assert "unknown" not in updated
    stored = assert_stored(api, srv.data_dir, "session", session["id"])
    assert "unknown" not in stored


def test_completed_at_is_set_once(api, srv, project):
    session = new_session(api, project["id"], [], status="spawning")
    running = patch(api, session["id"], {"status": "running"})
    assert running["completedAt"] is None
    done = patch(api, session["id"], {"status": "completed"})
    assert done["completedAt"] == done["lastActivity"]
    failed = patch(api, session["id"], {"status": "failed"})
    assert failed["completedAt"] == done["completedAt"]
    back = patch(api, session["id"], {"status": "running"})
    assert back["completedAt"] == done["completedAt"]
    assert_stored(api, srv.data_dir, "session", session["id"])
    other = new_session(api, project["id"], [])
    assert patch(api, other["id"], {"status": "failed"})["completedAt"] is not None


def test_last_activity_strictly_increases(api, project):
    session = new_session(api, project["id"], [])
    stamps = [session["lastActivity"]]
    for i in range(10):
        stamps.append(patch(api, session["id"], {"agentId": str(i)})["lastActivity"])
    for i in range(5):
        stamps.append(ok(api.post(f"/api/sessions/{session['id']}/events",
                                  json={"type": "log"}))["lastActivity"])
    for i in range(5):
        stamps.append(ok(api.post(f"/api/sessions/{session['id']}/timeline",
                                  json={"message": "m"}))["lastActivity"])
    assert all(b > a for a, b in itertools.pairwise(stamps)), stamps


def test_events_are_appended_and_normalised(api, srv, project):
    session = new_session(api, project["id"], [])
    before = int(time.time() * 1000)
    updated = patch(api, session["id"], {"events": [
        {"type": "spawn", "data": {"trigger": "orchestrator"}},
        {"id": "evt_1_mine", "timestamp": 99, "type": "command",
         "data": {"command": "npm test", "exitCode": 0}, "extra": "dropped"},
        {"type": "log"},
    ]})
    first, second, third = updated["events"]
    assert ID_RE["event"].match(first["id"])
    assert before <= first["timestamp"] <= int(time.time() * 1000)
    assert first["type"] == "spawn" and first["data"] == {"trigger": "orchestrator"}
    assert second == {"id": "evt_1_mine", "timestamp": 99, "type": "command",
                      "data": {"command": "npm test", "exitCode": 0}}
    assert set(third) == {"id", "timestamp", "type"}
    more = patch(api, session["id"], {"events": [{"type": "task_start", "data": None}]})
    assert more["events"][:3] == updated["events"]
    assert more["events"][3]["type"] == "task_start" and more["events"][3]["data"] is None
    assert_stored(api, srv.data_dir, "session", session["id"])


def test_update_refusals_change_nothing(api, srv, ws, project):
    task = new_task(api, project["id"])
    session = new_session(api, project["id"], [task["id"]])
    ws.barrier()
    snap = Snapshot(api, srv)
    refusals = [
        ({"status": "idle"}, 400, "VALIDATION_ERROR"),
        ({"status": "completed", "events": [{"data": 1}]}, 400, "VALIDATION_ERROR"),
        ({"agentId": "x", "events": [{"type": ""}]}, 400, "VALIDATION_ERROR"),
        ({"agentId": "x", "events": "log"}, 400, "VALIDATION_ERROR"),
        ({"agentId": "x", "env": {"A": 1}}, 400, "VALIDATION_ERROR"),
        ({"agentId": "x", "taskIds": [task["id"], "task_0_missing"]}, 404, "TASK_NOT_FOUND"),
        ({"agentId": 1}, 400, "VALIDATION_ERROR"),
        ({"taskIds": "x"}, 400, "VALIDATION_ERROR"),
    ]
    for body, status, code in refusals:
        err = assert_error(api.patch(f"/api/sessions/{session['id']}", json=body), status, code)
        if code == "TASK_NOT_FOUND":
            assert err["details"]["taskId"] == "task_0_missing"
    assert_error(api.patch("/api/sessions/sess_0_missing", json={"status": "running"}), 404,
                 "SESSION_NOT_FOUND", "Session not found")
    snap.assert_unchanged()
    assert ws.barrier() == []


# ------------------------------------------------------------------ delete
def test_delete(api, srv, ws, project):
    session = new_session(api, project["id"], [])
    path = entity_path(srv.data_dir, "session", session)
    # A manifest folder in SESSION_DIR is left in place.
    manifest = srv.session_dir / session["id"] / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    ws.barrier()
    assert ok(api.delete(f"/api/sessions/{session['id']}")) == \
        {"success": True, "id": session["id"]}
    events = ws.barrier()
    assert event_types(events) == ["session:deleted"]
    assert events[0]["data"] == {"id": session["id"]}
    assert not path.exists()
    assert manifest.read_text() == "{}"
    assert_error(api.get(f"/api/sessions/{session['id']}"), 404, "SESSION_NOT_FOUND")
    assert_error(api.delete(f"/api/sessions/{session['id']}"), 404, "SESSION_NOT_FOUND",
                 "Session not found")
    assert ws.barrier() == []


# ------------------------------------------------------------------ extension E1
def test_post_session_event(api, srv, ws, project):
    session = new_session(api, project["id"], [])
    ws.barrier()
    before = int(time.time() * 1000)
    data = {"file": "src/app.py", "timestamp": "2024-02-01T12:00:00.000Z"}
    updated = ok(api.post(f"/api/sessions/{session['id']}/events",
                          json={"type": "file_modified", "data": data}))
    [entry] = updated["events"]
    assert set(entry) == {"id", "timestamp", "type", "data"}
    assert ID_RE["event"].match(entry["id"])
    assert before <= entry["timestamp"] <= int(time.time() * 1000)
    assert entry["type"] == "file_modified" and entry["data"] == data
    assert updated["lastActivity"] > session["lastActivity"]
    events = ws.barrier()
    assert event_types(events) == ["session:updated"]
    assert events[0]["data"] == updated
    assert_stored(api, srv.data_dir, "session", session["id"])
    second = ok(api.post(f"/api/sessions/{session['id']}/events", json={"type": "log"}))
    assert second["events"][0] == entry
    assert second["events"][1]["type"] == "log"


def test_post_session_event_refusals(api, srv, ws, project):
    session = new_session(api, project["id"], [])
    ws.barrier()
    snap = Snapshot(api, srv)
    for body in ({}, {"type": ""}, {"type": None}, {"type": 3}, {"data": {"x": 1}}):
        assert_error(api.post(f"/api/sessions/{session['id']}/events", json=body), 400,
                     "VALIDATION_ERROR", "type is required")
    assert_error(api.post("/api/sessions/sess_0_missing/events", json={"type": "log"}), 404,
                 "SESSION_NOT_FOUND")
    snap.assert_unchanged()
    assert ws.barrier() == []


# ------------------------------------------------------------------ extension E2
def test_post_session_timeline(api, srv, ws, project):
    session = new_session(api, project["id"], [])
    assert "timeline" not in session
    ws.barrier()
    before = int(time.time() * 1000)
    updated = ok(api.post(f"/api/sessions/{session['id']}/timeline",
                          json={"message": "halfway"}))
    [entry] = updated["timeline"]
    assert set(entry) == {"id", "type", "timestamp", "message"}
    assert entry["type"] == "progress" and entry["message"] == "halfway"
    assert ID_RE["event"].match(entry["id"])
    assert before <= entry["timestamp"] <= int(time.time() * 1000)
    assert updated["lastActivity"] > session["lastActivity"]
    events = ws.barrier()
    assert event_types(events) == ["session:updated"]
    assert events[0]["data"] == updated
    full = ok(api.post(f"/api/sessions/{session['id']}/timeline",
                       json={"type": "any_type_at_all", "message": "done", "taskId": "task_1",
                             "metadata": {"k": [1, 2]}}))
    assert full["timeline"][0] == entry
    second = full["timeline"][1]
    assert second["type"] == "any_type_at_all"
    assert second["taskId"] == "task_1" and second["metadata"] == {"k": [1, 2]}
    assert_stored(api, srv.data_dir, "session", session["id"])


def test_post_session_timeline_refusals(api, srv, ws, project):
    session = new_session(api, project["id"], [])
    ws.barrier()
    snap = Snapshot(api, srv)
    for body in ({}, {"message": ""}, {"type": "progress"}, {"message": None}):
        assert_error(api.post(f"/api/sessions/{session['id']}/timeline", json=body), 400,
                     "VALIDATION_ERROR", "message is required")
    # The code of this 404 is not named by E2 (§6.2 lists NOT_FOUND for extensions).
    resp = api.post("/api/sessions/sess_0_missing/timeline", json={"message": "m"})
    assert resp.status_code == 404
    assert resp.json()["code"] in ("SESSION_NOT_FOUND", "NOT_FOUND")
    snap.assert_unchanged()
    assert ws.barrier() == []
