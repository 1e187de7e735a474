"""Tasks (SPEC §4.2, §4.3, §4.7, §4.8, §7.3, extension E3) through a real server, with the
entity files checked on disk after every change."""

from __future__ import annotations

import itertools
import time

import pytest
from helpers import (
    ID_RE,
    TASK_KEYS,
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
    created = new_project(api, name="Tasks project", workingDir="/work")
    ws_conn.barrier()  # its event is not part of any test's expectations
    return created


def patch(api, task_id, body) -> dict:
    return ok(api.patch(f"/api/tasks/{task_id}", json=body))


# ------------------------------------------------------------------ create
def test_create_with_defaults(api, srv, ws, project):
    before = int(time.time() * 1000)
    task = ok(api.post("/api/tasks", json={"projectId": project["id"],
                                           "title": "  Write tests  "}), 201)
    assert set(task) == TASK_KEYS
    assert ID_RE["task"].match(task["id"])
    assert task["projectId"] == project["id"]
    assert task["parentId"] is None
    assert task["title"] == "Write tests"
    assert task["description"] == ""
    assert task["initialPrompt"] == ""
    assert task["status"] == "pending"
    assert task["priority"] == "medium"
    for key in ("sessionIds", "skillIds", "agentIds", "dependencies"):
        assert task[key] == []
    assert before <= task["createdAt"] <= int(time.time() * 1000)
    assert task["updatedAt"] == task["createdAt"]
    assert task["startedAt"] is None and task["completedAt"] is None
    [created] = task["timeline"]
    assert set(created) == {"id", "type", "timestamp", "message"}
    assert ID_RE["event"].match(created["id"])
    assert created["type"] == "created"
    assert created["timestamp"] == task["createdAt"]
    assert created["message"] == "Task created"
    assert get(api, "task", task["id"]) == task
    assert entity_path(srv.data_dir, "task", task) == \
        srv.data_dir / "tasks" / project["id"] / f"{task['id']}.json"
    assert_file_matches(srv.data_dir, "task", task)
    events = ws.barrier()
    assert event_types(events) == ["task:created"]
    assert events[0]["data"] == task


def test_create_with_all_fields(api, srv, project):
    parent = new_task(api, project["id"], title="Parent")
    task = new_task(api, project["id"], title="Kind", description="Détails ✓",
                    priority="high", initialPrompt="do it", skillIds=["a", "b"],
                    parentId=parent["id"])
    assert task["description"] == "Détails ✓"
    assert task["priority"] == "high"
    assert task["initialPrompt"] == "do it"
    assert task["skillIds"] == ["a", "b"]
    assert task["parentId"] == parent["id"]
    assert_file_matches(srv.data_dir, "task", task)
    # The parent task is not modified.
    assert get(api, "task", parent["id"]) == parent


@pytest.mark.parametrize("priority", ["low", "medium", "high"])
def test_every_priority_is_accepted(api, project, priority):
    assert new_task(api, project["id"], priority=priority)["priority"] == priority


def test_create_ignores_fields_it_does_not_take(api, srv, project):
    task = new_task(api, project["id"], title="Plain", status="completed", id="task_1_mine",
                    createdAt=5, sessionIds=["sess_x"], agentIds=["ag"], claim={"token": 9},
                    timeline=[{"type": "milestone"}], startedAt=7, acceptanceCriteria=["x"],
                    updateSource="ui")
    assert task["status"] == "pending"
    assert task["id"] != "task_1_mine"
    assert task["createdAt"] > 5 and task["startedAt"] is None
    assert task["sessionIds"] == [] and task["agentIds"] == [] and task["dependencies"] == []
    assert len(task["timeline"]) == 1
    assert set(task) == TASK_KEYS
    stored = assert_stored(api, srv.data_dir, "task", task["id"])
    assert "acceptanceCriteria" not in stored and "updateSource" not in stored


def test_empty_parent_id_means_root(api, project):
    assert new_task(api, project["id"], parentId=None)["parentId"] is None
    assert new_task(api, project["id"], parentId="")["parentId"] is None


def test_parent_may_belong_to_another_project(api, project):
    other = new_project(api, name="Other")
    parent = new_task(api, other["id"])
    child = new_task(api, project["id"], parentId=parent["id"])
    assert child["parentId"] == parent["id"]
    assert [t["id"] for t in ok(api.get(f"/api/tasks/{parent['id']}/children"))] == [child["id"]]


@pytest.mark.parametrize("body,status,code,message", [
    ({"title": "t"}, 400, "VALIDATION_ERROR", "projectId is required"),
    ({"projectId": "", "title": "t"}, 400, "VALIDATION_ERROR", "projectId is required"),
    ({}, 400, "VALIDATION_ERROR", "projectId is required"),
    # Order: projectId present, title, priority, project exists, parent exists.
    ({"projectId": "proj_0_missing"}, 400, "VALIDATION_ERROR", "title is required"),
    ({"projectId": "proj_0_missing", "title": "  "}, 400, "VALIDATION_ERROR",
     "title is required"),
    ({"projectId": "proj_0_missing", "title": "t", "priority": "urgent"}, 400,
     "VALIDATION_ERROR", None),
    ({"projectId": "proj_0_missing", "title": "t", "parentId": "task_0_missing"}, 404,
     "PROJECT_NOT_FOUND", "Project not found"),
    ({"projectId": "PROJECT", "title": "t", "parentId": "task_0_missing"}, 404,
     "TASK_NOT_FOUND", "Parent task not found"),
    ({"projectId": "PROJECT", "title": "t", "priority": "critical"}, 400, "VALIDATION_ERROR",
     None),
    ({"projectId": "PROJECT", "title": "t", "priority": None}, 400, "VALIDATION_ERROR", None),
])
def test_create_refusals(api, srv, ws, project, body, status, code, message):
    body = {k: project["id"] if v == "PROJECT" else v for k, v in body.items()}
    snap = Snapshot(api, srv)
    assert_error(api.post("/api/tasks", json=body), status, code, message)
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_get_unknown_task(api):
    assert_error(api.get("/api/tasks/task_0_missing"), 404, "TASK_NOT_FOUND", "Task not found")


# ------------------------------------------------------------------ list and filters
def test_list_filters(api, project):
    other = new_project(api, name="Filter other")
    root = new_task(api, project["id"], title="root")
    child_a = new_task(api, project["id"], title="a", parentId=root["id"])
    child_b = new_task(api, project["id"], title="b", parentId=root["id"])
    grandchild = new_task(api, project["id"], title="gc", parentId=child_a["id"])
    elsewhere = new_task(api, other["id"], title="elsewhere")
    patch(api, child_b["id"], {"status": "blocked"})
    patch(api, elsewhere["id"], {"status": "blocked"})

    def ids(**params):
        return [t["id"] for t in ok(api.get("/api/tasks", params=params))]

    assert ids(projectId=other["id"]) == [elsewhere["id"]]
    assert ids(projectId=project["id"]) == [root["id"], child_a["id"], child_b["id"],
                                            grandchild["id"]]
    assert ids(projectId=project["id"], parentId="null") == [root["id"]]
    assert ids(parentId=root["id"]) == [child_a["id"], child_b["id"]]
    assert ids(parentId=child_a["id"]) == [grandchild["id"]]
    assert ids(status="blocked") == [child_b["id"], elsewhere["id"]]
    assert ids(status="blocked", projectId=other["id"]) == [elsewhere["id"]]
    assert ids(status="blocked", parentId=root["id"]) == [child_b["id"]]
    assert ids(status="todo") == []  # compared verbatim, not validated
    assert ids(status="BLOCKED") == []
    assert ids(projectId="proj_0_missing") == []
    # Empty values are ignored.
    assert ids(projectId=other["id"], status="", parentId="") == [elsewhere["id"]]
    assert ids(projectId="", status="") == ids()
    # Full objects, timelines included.
    listed = ok(api.get("/api/tasks", params={"projectId": other["id"]}))
    assert listed == [get(api, "task", elsewhere["id"])]
    # Every root task of every project, and only roots.
    roots = ok(api.get("/api/tasks", params={"parentId": "null"}))
    assert roots and all(t["parentId"] is None for t in roots)
    assert {root["id"], elsewhere["id"]} <= {t["id"] for t in roots}


def test_list_is_in_creation_order(api, project):
    for i in range(10):
        new_task(api, project["id"], title=f"order {i}")
    listed = ok(api.get("/api/tasks"))
    assert [t["id"] for t in listed] == \
        [t["id"] for t in sorted(listed, key=lambda t: (t["createdAt"], t["id"]))]
    titles = [t["title"] for t in listed if t["projectId"] == project["id"]]
    assert titles == [f"order {i}" for i in range(10)]


def test_children(api, project):
    parent = new_task(api, project["id"], title="p")
    assert ok(api.get(f"/api/tasks/{parent['id']}/children")) == []
    c1 = new_task(api, project["id"], parentId=parent["id"])
    c2 = new_task(api, project["id"], parentId=parent["id"])
    new_task(api, project["id"], parentId=c1["id"])  # grandchild: not a direct child
    children = ok(api.get(f"/api/tasks/{parent['id']}/children"))
    assert [t["id"] for t in children] == [c1["id"], c2["id"]]
    assert children == ok(api.get("/api/tasks", params={"parentId": parent["id"]}))
    assert_error(api.get("/api/tasks/task_0_missing/children"), 404, "TASK_NOT_FOUND")


# ------------------------------------------------------------------ update
def test_update_fields(api, srv, ws, project):
    task = new_task(api, project["id"], title="Old")
    ws.barrier()
    updated = patch(api, task["id"], {"title": "  New title ", "description": "desc",
                                      "priority": "low", "skillIds": ["s1"],
                                      "agentIds": ["a1", "a2"]})
    assert updated["title"] == "New title"
    assert updated["description"] == "desc"
    assert updated["priority"] == "low"
    assert updated["skillIds"] == ["s1"]
    assert updated["agentIds"] == ["a1", "a2"]
    assert updated["updatedAt"] > task["updatedAt"]
    assert updated["createdAt"] == task["createdAt"]
    assert updated["timeline"] == task["timeline"]
    assert set(updated) == TASK_KEYS
    assert_stored(api, srv.data_dir, "task", task["id"])
    events = ws.barrier()
    assert event_types(events) == ["task:updated"]
    assert events[0]["data"] == updated
    # Replace, not merge.
    again = patch(api, task["id"], {"skillIds": [], "agentIds": ["a3"]})
    assert again["skillIds"] == [] and again["agentIds"] == ["a3"]


def test_update_ignores_read_only_fields(api, srv, project):
    task = new_task(api, project["id"], initialPrompt="first")
    updated = patch(api, task["id"], {"id": "task_1_other", "projectId": "proj_1_other",
                                      "createdAt": 1, "startedAt": 2, "completedAt": 3,
                                      "claim": {"token": 1}, "initialPrompt": "changed",
                                      "hostname": "x", "unknownThing": {"a": 1}})
    for key in ("id", "projectId", "createdAt", "startedAt", "completedAt", "dependencies",
                "initialPrompt"):
        assert updated[key] == task[key], key
    assert set(updated) == TASK_KEYS
    assert_stored(api, srv.data_dir, "task", task["id"])


def test_empty_update_still_bumps_and_emits(api, ws, project):
    task = new_task(api, project["id"])
    ws.barrier()
    updated = patch(api, task["id"], {})
    assert updated["updatedAt"] > task["updatedAt"]
    assert event_types(ws.barrier()) == ["task:updated"]


def test_status_timestamps(api, srv, project):
    task = new_task(api, project["id"])
    blocked = patch(api, task["id"], {"status": "blocked"})
    assert blocked["startedAt"] is None and blocked["completedAt"] is None
    started = patch(api, task["id"], {"status": "in_progress"})
    assert started["startedAt"] == started["updatedAt"]
    assert started["completedAt"] is None
    # Only the first switch to in_progress sets startedAt.
    patch(api, task["id"], {"status": "blocked"})
    again = patch(api, task["id"], {"status": "in_progress"})
    assert again["startedAt"] == started["startedAt"]
    done = patch(api, task["id"], {"status": "completed"})
    assert done["completedAt"] == done["updatedAt"]
    assert done["startedAt"] == started["startedAt"]
    # Reopened: timestamps are never cleared; completing again keeps the first completedAt.
    reopened = patch(api, task["id"], {"status": "pending"})
    assert reopened["completedAt"] == done["completedAt"]
    assert reopened["startedAt"] == started["startedAt"]
    redone = patch(api, task["id"], {"status": "completed"})
    assert redone["completedAt"] == done["completedAt"]
    assert_stored(api, srv.data_dir, "task", task["id"])


def test_completed_without_start_does_not_backfill(api, project):
    task = new_task(api, project["id"])
    done = patch(api, task["id"], {"status": "completed"})
    assert done["completedAt"] is not None
    assert done["startedAt"] is None


def test_updated_at_strictly_increases(api, project):
    task = new_task(api, project["id"])
    stamps = [task["updatedAt"]]
    for i in range(15):
        stamps.append(patch(api, task["id"], {"description": str(i)})["updatedAt"])
    for i in range(5):
        stamps.append(ok(api.post(f"/api/tasks/{task['id']}/timeline",
                                  json={"message": f"m{i}"}))["updatedAt"])
    assert all(b > a for a, b in itertools.pairwise(stamps)), stamps


def test_update_validates_everything_before_applying(api, srv, ws, project):
    task = new_task(api, project["id"], title="Stable")
    ws.barrier()
    snap = Snapshot(api, srv)
    refusals = [
        ({"title": "changed", "status": "todo"}, 400, "VALIDATION_ERROR", None),
        ({"title": "changed", "priority": "urgent"}, 400, "VALIDATION_ERROR", None),
        ({"status": "cancelled"}, 400, "VALIDATION_ERROR", None),
        ({"title": ""}, 400, "VALIDATION_ERROR", "title cannot be empty"),
        ({"title": "   ", "description": "x"}, 400, "VALIDATION_ERROR", "title cannot be empty"),
        ({"description": "x", "timeline": [{"type": "bogus", "message": "m"}]}, 400,
         "VALIDATION_ERROR", None),
        ({"description": "x", "parentId": "task_0_missing"}, 404, "TASK_NOT_FOUND",
         "Parent task not found"),
    ]
    for body, status, code, message in refusals:
        assert_error(api.patch(f"/api/tasks/{task['id']}", json=body), status, code, message)
    assert_error(api.patch("/api/tasks/task_0_missing", json={"title": "x"}), 404,
                 "TASK_NOT_FOUND", "Task not found")
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_timeline_via_patch_is_appended_and_normalised(api, srv, project):
    task = new_task(api, project["id"])
    before = int(time.time() * 1000)
    updated = patch(api, task["id"], {"timeline": [
        {"message": "no type"},
        {"id": "evt_1_mine", "type": "milestone", "timestamp": 1234, "message": "m",
         "sessionId": "sess_1", "extra": "dropped", "data": {"x": 1}},
        {"type": "blocker"},
    ]})
    timeline = updated["timeline"]
    assert timeline[0] == task["timeline"][0]
    first, second, third = timeline[1:]
    assert first["type"] == "update" and first["message"] == "no type"
    assert ID_RE["event"].match(first["id"])
    assert before <= first["timestamp"] <= int(time.time() * 1000)
    assert set(first) == {"id", "type", "timestamp", "message"}
    assert second == {"id": "evt_1_mine", "type": "milestone", "timestamp": 1234,
                      "message": "m", "sessionId": "sess_1"}
    assert third["type"] == "blocker" and "message" not in third
    assert set(third) == {"id", "type", "timestamp"}
    assert_stored(api, srv.data_dir, "task", task["id"])
    # Later entries are appended after these.
    more = patch(api, task["id"], {"timeline": [{"type": "update", "message": "later"}]})
    assert more["timeline"][:4] == timeline
    assert more["timeline"][4]["message"] == "later"


# ------------------------------------------------------------------ hierarchy
def test_reparenting(api, srv, ws, project):
    a = new_task(api, project["id"], title="a")
    b = new_task(api, project["id"], title="b")
    ws.barrier()
    moved = patch(api, b["id"], {"parentId": a["id"]})
    assert moved["parentId"] == a["id"]
    assert [t["id"] for t in ok(api.get(f"/api/tasks/{a['id']}/children"))] == [b["id"]]
    assert event_types(ws.barrier()) == ["task:updated"]
    rooted = patch(api, b["id"], {"parentId": None})
    assert rooted["parentId"] is None
    assert ok(api.get(f"/api/tasks/{a['id']}/children")) == []
    assert_stored(api, srv.data_dir, "task", b["id"])
    # The parent itself is never changed by reparenting.
    assert get(api, "task", a["id"]) == a


def test_cycles_are_refused_and_change_nothing(api, srv, ws, project):
    top = new_task(api, project["id"], title="top")
    mid = new_task(api, project["id"], title="mid", parentId=top["id"])
    low = new_task(api, project["id"], title="low", parentId=mid["id"])
    ws.barrier()
    snap = Snapshot(api, srv)
    files = {t["id"]: entity_path(srv.data_dir, "task", t).read_bytes() for t in (top, mid, low)}
    for task_id, parent_id in ((top["id"], top["id"]), (top["id"], mid["id"]),
                               (top["id"], low["id"]), (mid["id"], low["id"]),
                               (low["id"], low["id"])):
        assert_error(api.patch(f"/api/tasks/{task_id}",
                               json={"parentId": parent_id, "title": "renamed"}),
                     400, "VALIDATION_ERROR")
    snap.assert_unchanged()
    for t in (top, mid, low):
        assert get(api, "task", t["id"]) == t
        assert entity_path(srv.data_dir, "task", t).read_bytes() == files[t["id"]]
    assert ws.barrier() == []
    # Moving a subtree somewhere legal still works.
    assert patch(api, low["id"], {"parentId": top["id"]})["parentId"] == top["id"]


# ------------------------------------------------------------------ task timeline endpoint
def test_add_timeline_entry(api, srv, ws, project):
    task = new_task(api, project["id"])
    ws.barrier()
    before = int(time.time() * 1000)
    updated = ok(api.post(f"/api/tasks/{task['id']}/timeline", json={"message": "progress"}))
    assert set(updated) == TASK_KEYS  # the full task
    entry = updated["timeline"][-1]
    assert set(entry) == {"id", "type", "timestamp", "message"}
    assert entry["type"] == "update" and entry["message"] == "progress"
    assert ID_RE["event"].match(entry["id"])
    assert before <= entry["timestamp"] <= int(time.time() * 1000)
    assert updated["updatedAt"] > task["updatedAt"]
    assert updated["timeline"][:-1] == task["timeline"]
    events = ws.barrier()
    assert event_types(events) == ["task:updated"]
    assert events[0]["data"] == updated
    assert_stored(api, srv.data_dir, "task", task["id"])

    for type_ in ("milestone", "blocker", "update", "created", "session_started",
                  "session_ended"):
        last = ok(api.post(f"/api/tasks/{task['id']}/timeline",
                           json={"message": type_, "type": type_, "sessionId": "sess_any"}))
        assert last["timeline"][-1]["type"] == type_
        assert last["timeline"][-1]["sessionId"] == "sess_any"  # existence not checked
    assert_stored(api, srv.data_dir, "task", task["id"])


@pytest.mark.parametrize("body,status,code,message", [
    ({}, 400, "VALIDATION_ERROR", "message is required"),
    ({"message": ""}, 400, "VALIDATION_ERROR", "message is required"),
    ({"message": None}, 400, "VALIDATION_ERROR", "message is required"),
    ({"message": 5}, 400, "VALIDATION_ERROR", None),
    ({"message": "m", "type": "progress"}, 400, "VALIDATION_ERROR", None),
    ({"message": "m", "sessionId": 7}, 400, "VALIDATION_ERROR", None),
])
def test_add_timeline_refusals(api, srv, ws, project, body, status, code, message):
    task = new_task(api, project["id"])
    ws.barrier()
    snap = Snapshot(api, srv)
    assert_error(api.post(f"/api/tasks/{task['id']}/timeline", json=body), status, code,
                 message)
    # The body is validated before the task is looked up.
    assert_error(api.post("/api/tasks/task_0_missing/timeline", json=body), status, code,
                 message)
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_add_timeline_unknown_task(api):
    assert_error(api.post("/api/tasks/task_0_missing/timeline", json={"message": "m"}), 404,
                 "TASK_NOT_FOUND", "Task not found")


# ------------------------------------------------------------------ delete
def test_delete(api, srv, ws, project):
    parent = new_task(api, project["id"], title="parent")
    child = new_task(api, project["id"], parentId=parent["id"])
    grandchild = new_task(api, project["id"], parentId=child["id"])
    ws.barrier()
    snap = Snapshot(api, srv)
    # §7.3.6: a task with children is kept unless the whole subtree goes.
    err = assert_error(api.delete(f"/api/tasks/{parent['id']}"), 400, "TASK_HAS_CHILDREN",
                       "Cannot delete task with 1 child task(s)")
    assert err["details"] == {"taskId": parent["id"], "children": 1}
    assert ws.barrier() == []
    snap.assert_unchanged()

    leaf = ok(api.delete(f"/api/tasks/{grandchild['id']}"))
    assert leaf == {"success": True, "id": grandchild["id"]}
    assert event_types(ws.barrier()) == ["task:deleted"]
    assert not entity_path(srv.data_dir, "task", grandchild).exists()

    again = new_task(api, project["id"], parentId=child["id"])
    ws.barrier()
    answer = ok(api.delete(f"/api/tasks/{parent['id']}", params={"cascade": "true"}))
    # Deepest first, one task:deleted each.
    assert answer == {"success": True, "id": parent["id"],
                      "deleted": [again["id"], child["id"], parent["id"]]}
    events = ws.barrier()
    assert event_types(events) == ["task:deleted"] * 3
    assert [e["data"] for e in events] == [{"id": i} for i in answer["deleted"]]
    for task in (parent, child, again):
        assert not entity_path(srv.data_dir, "task", task).exists()
        assert_error(api.get(f"/api/tasks/{task['id']}"), 404, "TASK_NOT_FOUND")
    assert_error(api.delete(f"/api/tasks/{parent['id']}"), 404, "TASK_NOT_FOUND",
                 "Task not found")
    assert ws.barrier() == []


# ------------------------------------------------------------------ extension E3
def test_session_status_is_stored(api, srv, project):
    task = new_task(api, project["id"])
    for value in ("queued", "working", "needs_input", "blocked", "completed", "failed",
                  "skipped"):
        assert patch(api, task["id"], {"sessionStatus": value})["sessionStatus"] == value
    stored = assert_stored(api, srv.data_dir, "task", task["id"])
    assert stored["sessionStatus"] == "skipped"
    assert_error(api.patch(f"/api/tasks/{task['id']}", json={"sessionStatus": "sleeping"}),
                 400, "VALIDATION_ERROR")


def test_update_from_a_session_only_sets_session_status(api, srv, ws, project):
    task = new_task(api, project["id"], title="Keep me", description="keep", priority="low")
    session = new_session(api, project["id"], [task["id"]])
    task = get(api, "task", task["id"])
    ws.barrier()
    updated = patch(api, task["id"], {"sessionStatus": "working", "updateSource": "session",
                                      "sessionId": session["id"], "title": "Changed",
                                      "description": "changed", "status": "completed",
                                      "priority": "high"})
    assert updated["sessionStatus"] == "working"
    for key in ("title", "description", "status", "priority", "completedAt", "startedAt"):
        assert updated[key] == task[key], key
    assert "updateSource" not in updated and "sessionId" not in updated
    stored = assert_stored(api, srv.data_dir, "task", task["id"])
    assert "updateSource" not in stored and "sessionId" not in stored
    assert event_types(ws.barrier()) == ["task:updated"]
    # Any other source updates the task as usual, and still never stores these two keys.
    normal = patch(api, task["id"], {"status": "in_progress", "updateSource": "ui",
                                     "sessionId": session["id"]})
    assert normal["status"] == "in_progress"
    assert "updateSource" not in normal and "sessionId" not in normal
    stored = assert_stored(api, srv.data_dir, "task", task["id"])
    assert "updateSource" not in stored and "sessionId" not in stored
