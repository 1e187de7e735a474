"""Task <-> session links (SPEC §8, §7.4): every operation of the table in §8, the invariant
after each, the timeline entries it writes, the events in the order of §7.4, and the files."""

from __future__ import annotations

import json

import pytest
from helpers import (
    Snapshot,
    WsClient,
    assert_error,
    assert_link_invariant,
    assert_stored,
    entity_path,
    event_types,
    get,
    http_client,
    new_project,
    new_session,
    new_task,
    ok,
)


@pytest.fixture
def project(api, ws_conn):
    created = new_project(api, name="Links project")
    ws_conn.barrier()
    return created


def link_entries(task: dict) -> list[tuple[str, str]]:
    """(type, sessionId) of the link entries of a task's timeline, in order."""
    out = []
    for entry in task["timeline"]:
        if entry["type"] in ("session_started", "session_ended"):
            assert "message" not in entry, entry
            out.append((entry["type"], entry["sessionId"]))
    return out


def check_files(api, srv, sessions=(), tasks=()) -> None:
    for sid in sessions:
        assert_stored(api, srv.data_dir, "session", sid)
    for tid in tasks:
        assert_stored(api, srv.data_dir, "task", tid)


# ------------------------------------------------------------------ session create
def test_create_links_every_task(api, srv, ws, project):
    t1 = new_task(api, project["id"], title="one")
    t2 = new_task(api, project["id"], title="two")
    ws.barrier()
    session = new_session(api, project["id"], [t1["id"], t2["id"]])
    sid = session["id"]
    assert session["taskIds"] == [t1["id"], t2["id"]]
    for t in (t1, t2):
        linked = get(api, "task", t["id"])
        assert linked["sessionIds"] == [sid]
        assert link_entries(linked) == [("session_started", sid)]
        assert linked["timeline"][:1] == t["timeline"]
        assert linked["updatedAt"] > t["updatedAt"]
    events = ws.barrier()
    assert event_types(events) == ["session:created",
                                   "task:session_added", "task:updated",
                                   "task:session_added", "task:updated"]
    assert events[0]["data"]["id"] == sid
    assert events[0]["data"]["taskIds"] == [t1["id"], t2["id"]]
    assert events[1]["data"] == {"taskId": t1["id"], "sessionId": sid}
    assert events[2]["data"] == get(api, "task", t1["id"])
    assert events[3]["data"] == {"taskId": t2["id"], "sessionId": sid}
    assert events[4]["data"] == get(api, "task", t2["id"])
    assert_link_invariant(api, project["id"])
    check_files(api, srv, [sid], [t1["id"], t2["id"]])


# ------------------------------------------------------------------ add / remove
def test_add_and_remove_task(api, srv, ws, project):
    task = new_task(api, project["id"])
    session = new_session(api, project["id"], [])
    sid, tid = session["id"], task["id"]
    ws.barrier()

    added = ok(api.post(f"/api/sessions/{sid}/tasks/{tid}"))
    assert added == get(api, "session", sid)  # the full session
    assert added["taskIds"] == [tid]
    assert added["lastActivity"] > session["lastActivity"]
    linked = get(api, "task", tid)
    assert linked["sessionIds"] == [sid]
    assert link_entries(linked) == [("session_started", sid)]
    assert linked["updatedAt"] > task["updatedAt"]
    events = ws.barrier()
    assert event_types(events) == ["session:task_added", "task:session_added",
                                   "session:updated", "task:updated"]
    assert events[0]["data"] == {"sessionId": sid, "taskId": tid}
    assert events[1]["data"] == {"taskId": tid, "sessionId": sid}
    assert events[2]["data"] == added
    assert events[3]["data"] == linked
    assert_link_invariant(api, project["id"])
    check_files(api, srv, [sid], [tid])

    # Adding again changes nothing and says nothing.
    snap = Snapshot(api, srv)
    assert ok(api.post(f"/api/sessions/{sid}/tasks/{tid}")) == added
    snap.assert_unchanged()
    assert ws.barrier() == []

    removed = ok(api.delete(f"/api/sessions/{sid}/tasks/{tid}"))
    assert removed == get(api, "session", sid)
    assert removed["taskIds"] == []
    assert removed["lastActivity"] > added["lastActivity"]
    unlinked = get(api, "task", tid)
    assert unlinked["sessionIds"] == []
    assert link_entries(unlinked) == [("session_started", sid), ("session_ended", sid)]
    assert unlinked["updatedAt"] > linked["updatedAt"]
    events = ws.barrier()
    assert event_types(events) == ["session:task_removed", "task:session_removed",
                                   "session:updated", "task:updated"]
    assert events[0]["data"] == {"sessionId": sid, "taskId": tid}
    assert events[1]["data"] == {"taskId": tid, "sessionId": sid}
    assert events[2]["data"] == removed
    assert events[3]["data"] == unlinked
    assert_link_invariant(api, project["id"])
    check_files(api, srv, [sid], [tid])

    # Removing a task that is not linked: no change, no timeline entry, no event.
    snap = Snapshot(api, srv)
    assert ok(api.delete(f"/api/sessions/{sid}/tasks/{tid}")) == removed
    snap.assert_unchanged()
    assert link_entries(get(api, "task", tid)) == link_entries(unlinked)
    assert ws.barrier() == []


def test_add_and_remove_unknown_ids(api, srv, ws, project):
    task = new_task(api, project["id"])
    session = new_session(api, project["id"], [])
    ws.barrier()
    snap = Snapshot(api, srv)
    for method in ("POST", "DELETE"):
        assert_error(api.request(method, f"/api/sessions/sess_0_missing/tasks/{task['id']}"),
                     404, "NOT_FOUND", "Session not found")
        assert_error(api.request(method, f"/api/sessions/{session['id']}/tasks/task_0_missing"),
                     404, "NOT_FOUND", "Task not found")
        assert_error(api.request(method, "/api/sessions/sess_0_missing/tasks/task_0_missing"),
                     404, "NOT_FOUND")
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_link_with_content_type_and_no_body(api, project):
    """The CLI sends Content-Type: application/json on every request, bodies or not."""
    task = new_task(api, project["id"])
    session = new_session(api, project["id"], [])
    headers = {"Content-Type": "application/json"}
    url = f"/api/sessions/{session['id']}/tasks/{task['id']}"
    assert ok(api.post(url, headers=headers))["taskIds"] == [task["id"]]
    assert ok(api.delete(url, headers=headers))["taskIds"] == []


def test_patch_task_session_ids_links_both_sides(api, srv, ws, project):
    task = new_task(api, project["id"])
    session = new_session(api, project["id"], [task["id"]])
    sid, tid = session["id"], task["id"]
    ws.barrier()
    # The data-model document: the storage layer keeps both sides in sync, whichever side is
    # patched (SPEC §7.3.4 calls this a raw replace; the data-model document wins).
    unlinked = ok(api.patch(f"/api/tasks/{tid}", json={"sessionIds": []}))
    assert unlinked["sessionIds"] == []
    assert get(api, "session", sid)["taskIds"] == []
    assert link_entries(unlinked)[-1] == ("session_ended", sid)
    assert event_types(ws.barrier()) == ["task:updated", "session:task_removed",
                                         "task:session_removed", "session:updated"]
    relinked = ok(api.patch(f"/api/tasks/{tid}", json={"sessionIds": [sid]}))
    assert relinked["sessionIds"] == [sid]
    assert get(api, "session", sid)["taskIds"] == [tid]
    assert link_entries(relinked) == [("session_started", sid), ("session_ended", sid),
                                      ("session_started", sid)]
    assert event_types(ws.barrier()) == ["task:updated", "session:task_added",
                                         "task:session_added", "session:updated"]
    assert_link_invariant(api, project["id"])
    check_files(api, srv, [sid], [tid])

def test_patch_task_ids_diffs_and_links_both_sides(api, srv, ws, project):
    t1, t2, t3 = (new_task(api, project["id"], title=f"t{i}") for i in range(1, 4))
    session = new_session(api, project["id"], [t1["id"], t2["id"]])
    sid = session["id"]
    t2_before = get(api, "task", t2["id"])
    ws.barrier()

    updated = ok(api.patch(f"/api/sessions/{sid}",
                           json={"taskIds": [t3["id"], t2["id"], t3["id"]], "agentId": "a"}))
    assert updated["taskIds"] == [t3["id"], t2["id"]]  # deduplicated, order kept
    assert updated["agentId"] == "a"
    assert updated == get(api, "session", sid)
    one, two, three = (get(api, "task", t["id"]) for t in (t1, t2, t3))
    assert one["sessionIds"] == [] and link_entries(one)[-1] == ("session_ended", sid)
    assert two == t2_before  # kept: untouched, no new timeline entry
    assert three["sessionIds"] == [sid] and link_entries(three) == [("session_started", sid)]
    events = ws.barrier()
    assert event_types(events) == ["session:updated",
                                   "session:task_removed", "task:session_removed",
                                   "task:updated",
                                   "session:task_added", "task:session_added", "task:updated"]
    assert events[0]["data"]["id"] == sid
    assert events[1]["data"] == {"sessionId": sid, "taskId": t1["id"]}
    assert events[2]["data"] == {"taskId": t1["id"], "sessionId": sid}
    assert events[3]["data"] == one
    assert events[4]["data"] == {"sessionId": sid, "taskId": t3["id"]}
    assert events[5]["data"] == {"taskId": t3["id"], "sessionId": sid}
    assert events[6]["data"] == three
    assert_link_invariant(api, project["id"])
    check_files(api, srv, [sid], [t1["id"], t2["id"], t3["id"]])

    # Reordering only: the list changes, no link changes, no link events.
    reordered = ok(api.patch(f"/api/sessions/{sid}", json={"taskIds": [t2["id"], t3["id"]]}))
    assert reordered["taskIds"] == [t2["id"], t3["id"]]
    assert event_types(ws.barrier()) == ["session:updated"]
    assert get(api, "task", t2["id"]) == two and get(api, "task", t3["id"]) == three

    # Several removed and added at once: removals first, each in list order.
    t4 = new_task(api, project["id"], title="t4")
    ws.barrier()
    ok(api.patch(f"/api/sessions/{sid}", json={"taskIds": [t1["id"], t4["id"]]}))
    events = ws.barrier()
    assert event_types(events) == ["session:updated"] + [
        "session:task_removed", "task:session_removed", "task:updated"] * 2 + [
        "session:task_added", "task:session_added", "task:updated"] * 2
    assert [e["data"]["taskId"] for e in events if e["type"].startswith("session:task_")] == \
        [t2["id"], t3["id"], t1["id"], t4["id"]]
    assert_link_invariant(api, project["id"])
    check_files(api, srv, [sid], [t1["id"], t2["id"], t3["id"], t4["id"]])


def test_patch_task_ids_drops_vanished_tasks_silently(make_server):
    # A data directory written by the original can name tasks that no longer exist (a task
    # deleted through Maestro is unlinked, §7.3.6): a session file edited before the start.
    srv = make_server()
    with http_client(srv) as api:
        project = new_project(api, name="Vanished")
        kept = new_task(api, project["id"])
        session = new_session(api, project["id"], [kept["id"]])
    assert srv.stop() == 0
    gone = "task_1_vanished"
    path = entity_path(srv.data_dir, "session", session)
    stored = json.loads(path.read_text())
    stored["taskIds"] = [kept["id"], gone]
    path.write_text(json.dumps(stored, indent=2))
    srv.start()
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        assert get(api, "session", session["id"])["taskIds"] == [kept["id"], gone]
        # Only ids not already in the session must exist: a vanished one may stay.
        reordered = ok(api.patch(f"/api/sessions/{session['id']}",
                                 json={"taskIds": [gone, kept["id"]]}))
        assert reordered["taskIds"] == [gone, kept["id"]]
        assert event_types(ws.barrier()) == ["session:updated"]
        updated = ok(api.patch(f"/api/sessions/{session['id']}", json={"taskIds": [kept["id"]]}))
        assert updated["taskIds"] == [kept["id"]]
        assert event_types(ws.barrier()) == ["session:updated"]
        check_files(api, srv, [session["id"]], [kept["id"]])


def test_patch_task_ids_with_unknown_task_changes_nothing(api, srv, ws, project):
    t1 = new_task(api, project["id"])
    t2 = new_task(api, project["id"])
    session = new_session(api, project["id"], [t1["id"]])
    ws.barrier()
    snap = Snapshot(api, srv)
    err = assert_error(api.patch(f"/api/sessions/{session['id']}",
                                 json={"taskIds": [t2["id"], "task_0_missing"],
                                       "status": "completed"}),
                       404, "TASK_NOT_FOUND")
    assert err["details"] == {"taskId": "task_0_missing"}
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_finishing_a_session_keeps_its_links(api, srv, ws, project):
    task = new_task(api, project["id"])
    session = new_session(api, project["id"], [task["id"]])
    linked = get(api, "task", task["id"])
    ws.barrier()
    for status in ("completed", "failed"):
        finished = ok(api.patch(f"/api/sessions/{session['id']}", json={"status": status}))
        assert finished["taskIds"] == [task["id"]]
        assert event_types(ws.barrier()) == ["session:updated"]
    assert get(api, "task", task["id"]) == linked
    assert_link_invariant(api, project["id"])


# ------------------------------------------------------------------ session delete
def test_session_delete_unlinks_every_existing_task(api, srv, ws, project):
    t1, t2, t3 = (new_task(api, project["id"]) for _ in range(3))
    session = new_session(api, project["id"], [t1["id"], t2["id"], t3["id"]])
    sid = session["id"]
    ok(api.delete(f"/api/tasks/{t2['id']}"))
    ws.barrier()
    assert ok(api.delete(f"/api/sessions/{sid}")) == {"success": True, "id": sid}
    events = ws.barrier()
    assert event_types(events) == ["session:deleted",
                                   "task:session_removed", "task:updated",
                                   "task:session_removed", "task:updated"]
    assert events[0]["data"] == {"id": sid}
    assert events[1]["data"] == {"taskId": t1["id"], "sessionId": sid}
    assert events[3]["data"] == {"taskId": t3["id"], "sessionId": sid}
    for t, event in ((t1, events[2]), (t3, events[4])):
        after = get(api, "task", t["id"])
        assert after["sessionIds"] == []
        assert link_entries(after) == [("session_started", sid), ("session_ended", sid)]
        assert event["data"] == after
    assert not entity_path(srv.data_dir, "session", session).exists()
    assert_link_invariant(api, project["id"])
    check_files(api, srv, [], [t1["id"], t3["id"]])


# ------------------------------------------------------------------ task side
def test_task_delete_unlinks_its_sessions(api, srv, ws, project):
    task = new_task(api, project["id"])
    keep = new_task(api, project["id"])
    session = new_session(api, project["id"], [task["id"], keep["id"]])
    ws.barrier()
    ok(api.delete(f"/api/tasks/{task['id']}"))
    events = ws.barrier()
    # §7.3.6: the unlink of §7.4.7 with its events, then the deletion.
    assert event_types(events) == ["session:task_removed", "task:session_removed",
                                   "session:updated", "task:updated", "task:deleted"]
    assert events[0]["data"] == {"sessionId": session["id"], "taskId": task["id"]}
    assert get(api, "session", session["id"])["taskIds"] == [keep["id"]]
    assert ok(api.get("/api/sessions", params={"taskId": task["id"]})) == []
    check_files(api, srv, [session["id"]], [keep["id"]])
    assert not entity_path(srv.data_dir, "task", task).exists()
    assert_link_invariant(api, project["id"])


def test_patch_task_session_ids_refuses_unknown_sessions(api, srv, ws, project):
    task = new_task(api, project["id"])
    s1 = new_session(api, project["id"], [task["id"]])
    s2 = new_session(api, project["id"], [])
    s1_file = entity_path(srv.data_dir, "session", s1).read_bytes()
    before = get(api, "task", task["id"])
    ws.barrier()
    r = api.patch(f"/api/tasks/{task['id']}", json={"sessionIds": [s2["id"], "sess_not_real"]})
    assert_error(r, 404, "SESSION_NOT_FOUND")
    assert event_types(ws.barrier()) == []
    assert get(api, "task", task["id"]) == before
    assert entity_path(srv.data_dir, "session", s1).read_bytes() == s1_file
    updated = ok(api.patch(f"/api/tasks/{task['id']}", json={"sessionIds": [s2["id"]]}))
    assert updated["sessionIds"] == [s2["id"]]
    assert get(api, "session", s1["id"])["taskIds"] == []
    assert get(api, "session", s2["id"])["taskIds"] == [task["id"]]
    assert event_types(ws.barrier()) == [
        "task:updated", "session:task_removed", "task:session_removed", "session:updated",
        "session:task_added", "task:session_added", "session:updated"]
    assert_link_invariant(api, project["id"])
    check_files(api, srv, [s1["id"], s2["id"]], [task["id"]])


def test_invariant_through_a_mixed_sequence(api, srv, project):
    tasks = [new_task(api, project["id"], title=f"m{i}")["id"] for i in range(4)]
    a = new_session(api, project["id"], tasks[:2])["id"]
    b = new_session(api, project["id"], tasks[1:3])["id"]
    assert_link_invariant(api, project["id"])
    steps = [
        ("POST", f"/api/sessions/{a}/tasks/{tasks[3]}", None),
        ("PATCH", f"/api/sessions/{b}", {"taskIds": [tasks[0], tasks[3]]}),
        ("DELETE", f"/api/sessions/{a}/tasks/{tasks[0]}", None),
        ("PATCH", f"/api/sessions/{a}", {"taskIds": []}),
        ("POST", f"/api/sessions/{b}/tasks/{tasks[2]}", None),
        ("DELETE", f"/api/sessions/{b}", None),
    ]
    for method, url, body in steps:
        ok(api.request(method, url, json=body))
        assert_link_invariant(api, project["id"])
        check_files(api, srv, [s for s in (a, b) if api.get(f"/api/sessions/{s}").is_success],
                    tasks)
    for tid in tasks:
        assert get(api, "task", tid)["sessionIds"] == []
