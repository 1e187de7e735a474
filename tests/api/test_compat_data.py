"""An existing data directory of the original server (SPEC §5.1 to §5.4, §4.9): a hand-written copy
in tests/fixtures/original-data/ with a legacy task file, missing fields, statuses outside the
enums, keys of other revisions, a legacy session `taskId`, non-JSON files and an unknown folder.
The server must load it, migrate it in memory, preserve what it does not know, and write it back
in the original's layout."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import (
    WsClient,
    assert_error,
    assert_file_matches,
    assert_stored,
    entity_path,
    event_types,
    get,
    ok,
    tree_snapshot,
)
from server_fixtures import client_fixtures, server_fixture
from servers import FIXTURES

FIXTURE = FIXTURES / "original-data"

P1 = "proj_1706789123456_k2j4n5l6m"
P_LATE = "proj_1706000000000_aaaaaaaaa"
P_TIE = "proj_1706789123456_zzzzzzzzz"
LEGACY = "task_1706790000000_legacy001"
CANCELLED = "task_1706790100000_cancel001"
PARTIAL = "task_1706790200000_partial01"
LINKED = "task_1706790300000_linked001"
ONE_SIDED = "task_1706790400000_onesided1"
S_LEGACY = "sess_1706792222222_legacy001"
S_NORMAL = "sess_1706792333333_normal001"
S_FAILED = "sess_1706792444444_failed001"

LEGACY_FILE = Path("tasks") / f"{LEGACY}.json"
UNTOUCHABLE = ["backups/README", "backups/2024-01-31/projects.json", "sessions/notes.txt",
               "projects/README.md"]


def fixture_json(rel: str | Path) -> dict:
    return json.loads((FIXTURE / rel).read_text(encoding="utf-8"))


def task_rel(task_id: str) -> Path:
    return Path("tasks") / P1 / f"{task_id}.json"


# A server on a copy of the fixture for each test that writes (`srv`, `api`), and one for all
# the tests that only read (`loaded`: a client on it).
srv = server_fixture("function", data=FIXTURE)
api = client_fixtures(scope="function")[0]
loaded_server = server_fixture(data=FIXTURE)
loaded = client_fixtures("loaded_server")[0]


def test_fixture_is_in_the_original_layout():
    """The fixture itself: what the tests below rely on."""
    legacy = fixture_json(LEGACY_FILE)
    for key in ("sessionIds", "skillIds", "agentIds", "dependencies", "timeline"):
        assert key not in legacy
    assert legacy["status"] == "todo"
    assert fixture_json(task_rel(CANCELLED))["status"] == "cancelled"
    session = fixture_json(Path("sessions") / f"{S_LEGACY}.json")
    assert "taskIds" not in session and session["taskId"] == LINKED
    for key in ("name", "env", "events"):
        assert key not in session
    assert session["status"] == "idle"
    raw = (FIXTURE / "projects" / f"{P_LATE}.json").read_bytes()
    assert "Zürich".encode() in raw and not raw.endswith(b"\n")


def test_everything_is_loaded_and_migrated(loaded):
    api = loaded
    # Projects: creation order, ties by id, not file-name order.
    projects = ok(api.get("/api/projects"))
    assert [p["id"] for p in projects] == [P1, P_TIE, P_LATE]
    assert projects[2]["color"] == "#ff8800"  # unknown key returned as stored
    assert "description" not in projects[1]  # nothing invented for projects

    tasks = {t["id"]: t for t in ok(api.get("/api/tasks"))}
    assert list(tasks) == [LEGACY, CANCELLED, PARTIAL, LINKED, ONE_SIDED]

    legacy = tasks[LEGACY]
    original = fixture_json(LEGACY_FILE)
    for key in ("sessionIds", "skillIds", "agentIds", "dependencies", "timeline"):
        assert legacy[key] == [], key
    for key, value in original.items():
        assert legacy[key] == value, key  # verbatim, unknown keys and `todo` included
    assert legacy["acceptanceCriteria"] == ["Users can log in", "Tokens refresh"]
    assert legacy["subtasks"][0]["title"] == "Create User model"
    assert legacy["sessionStatus"] == "queued"
    assert get(api, "task", LEGACY) == legacy

    partial = tasks[PARTIAL]
    assert partial["skillIds"] == ["maestro-worker"]
    for key in ("sessionIds", "agentIds", "dependencies", "timeline"):
        assert partial[key] == []
    assert partial["metadata"] == {"note": "naïve ✓"}
    assert tasks[CANCELLED]["status"] == "cancelled"

    sessions = {s["id"]: s for s in ok(api.get("/api/sessions"))}
    assert list(sessions) == [S_LEGACY, S_NORMAL, S_FAILED]
    legacy_session = sessions[S_LEGACY]
    assert legacy_session["taskIds"] == [LINKED]
    assert "taskId" not in legacy_session
    assert legacy_session["name"] == f"Session {S_LEGACY}"
    assert legacy_session["env"] == {} and legacy_session["events"] == []
    assert legacy_session["status"] == "idle"
    assert legacy_session["timeline"][0]["message"] == "Started"
    assert legacy_session["strategy"] == "simple"
    assert sessions[S_NORMAL] == fixture_json(Path("sessions") / f"{S_NORMAL}.json")


def test_filters_compare_stored_values_verbatim(loaded):
    api = loaded
    def ids(path, **params):
        return [e["id"] for e in ok(api.get(path, params=params))]

    assert ids("/api/tasks", status="todo") == [LEGACY]
    assert ids("/api/tasks", status="cancelled") == [CANCELLED]
    assert ids("/api/tasks", status="pending") == [LINKED]
    assert ids("/api/tasks", projectId=P1, status="in_progress") == [PARTIAL]
    assert ids("/api/tasks", parentId=LEGACY) == [CANCELLED]
    assert ids(f"/api/tasks/{LEGACY}/children") == [CANCELLED]
    assert ids("/api/tasks", parentId="null") == [LEGACY, PARTIAL, LINKED, ONE_SIDED]
    assert ids("/api/sessions", status="idle") == [S_LEGACY]
    assert ids("/api/sessions", active="true") == [S_LEGACY, S_NORMAL]
    assert ids("/api/sessions", taskId=LINKED) == [S_LEGACY, S_NORMAL]
    assert ids("/api/sessions", projectId=P_LATE) == [S_FAILED]


def test_unknown_files_are_left_alone_and_new_entities_use_the_layout(srv, api):
    for rel in UNTOUCHABLE:
        assert (srv.data_dir / rel).read_bytes() == (FIXTURE / rel).read_bytes(), rel
    # Mutations everywhere, then a clean stop: still untouched, and nothing added to them.
    ok(api.patch(f"/api/tasks/{LEGACY}", json={"priority": "low"}))
    ok(api.patch(f"/api/sessions/{S_LEGACY}", json={"status": "running"}))
    ok(api.put(f"/api/projects/{P_LATE}", json={"description": "x"}))
    new = ok(api.post("/api/projects", json={"name": "new"}), 201)
    ok(api.delete(f"/api/projects/{new['id']}"))
    task = ok(api.post("/api/tasks", json={"projectId": P_TIE, "title": "fresh"}), 201)
    assert (srv.data_dir / "tasks" / P_TIE / f"{task['id']}.json").is_file()
    assert_file_matches(srv.data_dir, "task", task)
    session = ok(api.post("/api/sessions", json={"projectId": P_TIE, "taskIds": [task["id"]]}),
                 201)
    assert_stored(api, srv.data_dir, "session", session["id"])
    assert_stored(api, srv.data_dir, "task", task["id"])
    assert srv.stop() == 0
    for rel in UNTOUCHABLE:
        assert (srv.data_dir / rel).read_bytes() == (FIXTURE / rel).read_bytes(), rel
    assert tree_snapshot(srv.data_dir / "backups") == tree_snapshot(FIXTURE / "backups")
    # After a clean stop the directory holds the original's layout and what it had before.
    top = {p.name for p in srv.data_dir.iterdir()
           if not p.name.startswith(".") and p.name != "journal"}
    assert {"backups", "projects", "sessions", "tasks"} <= top
    assert top <= {"backups", "projects", "sessions", "tasks", "queues", "templates"}


def test_legacy_task_is_moved_on_first_write_and_keeps_unknown_keys(srv, api):
    original = fixture_json(LEGACY_FILE)
    updated = ok(api.patch(f"/api/tasks/{LEGACY}", json={"priority": "low",
                                                         "description": "rewritten"}))
    assert updated["priority"] == "low" and updated["description"] == "rewritten"
    for key in ("acceptanceCriteria", "metadata", "sessionStatus", "subtasks", "status",
                "initialPrompt", "createdAt", "startedAt", "completedAt", "parentId"):
        assert updated[key] == original[key], key
    moved = srv.data_dir / task_rel(LEGACY)
    assert moved.is_file()
    assert not (srv.data_dir / LEGACY_FILE).exists()
    assert_file_matches(srv.data_dir, "task", updated)
    # Key order kept: the original keys first, in their order; migrated keys after them.
    written = list(json.loads(moved.read_text(encoding="utf-8")))
    assert written[:len(original)] == list(original)
    # A status outside the enum is kept, but can never be written through the API.
    assert_error(api.patch(f"/api/tasks/{LEGACY}", json={"status": "todo"}), 400,
                 "VALIDATION_ERROR")
    assert get(api, "task", LEGACY)["status"] == "todo"

    # After a restart there is exactly one copy, with the same content.
    before = ok(api.get("/api/tasks"))
    srv.restart()
    assert ok(api.get("/api/tasks")) == before
    assert not (srv.data_dir / LEGACY_FILE).exists()
    assert_stored(api, srv.data_dir, "task", LEGACY)


def test_unknown_keys_survive_updates_of_every_kind(srv, api):
    cancelled = ok(api.patch(f"/api/tasks/{CANCELLED}", json={"title": "Renamed"}))
    assert cancelled["status"] == "cancelled"
    assert_stored(api, srv.data_dir, "task", CANCELLED)

    partial = ok(api.post(f"/api/tasks/{PARTIAL}/timeline", json={"message": "note"}))
    assert partial["metadata"] == {"note": "naïve ✓"} and partial["acceptanceCriteria"] == []
    assert "description" not in partial
    raw = (srv.data_dir / task_rel(PARTIAL)).read_bytes()
    assert "naïve ✓".encode() in raw
    assert_stored(api, srv.data_dir, "task", PARTIAL)

    project = ok(api.put(f"/api/projects/{P_LATE}", json={"description": "kept"}))
    assert project["color"] == "#ff8800" and project["name"] == "Zürich Café ☕"
    assert_stored(api, srv.data_dir, "project", P_LATE)

    session = ok(api.patch(f"/api/sessions/{S_LEGACY}", json={"status": "running"}))
    assert session["taskIds"] == [LINKED] and "taskId" not in session
    assert session["name"] == f"Session {S_LEGACY}"
    assert session["strategy"] == "simple"
    stored = assert_stored(api, srv.data_dir, "session", S_LEGACY)
    assert "taskId" not in stored and stored["env"] == {} and stored["events"] == []

    # Extension E2 appends to the session timeline written by the original.
    session = ok(api.post(f"/api/sessions/{S_LEGACY}/timeline",
                          json={"type": "task_completed", "message": "done", "taskId": LINKED}))
    original_timeline = fixture_json(Path("sessions") / f"{S_LEGACY}.json")["timeline"]
    assert session["timeline"][:1] == original_timeline
    assert session["timeline"][1]["type"] == "task_completed"
    assert_stored(api, srv.data_dir, "session", S_LEGACY)


def test_deleting_loaded_entities(srv, api):
    """A deleted legacy task does not come back after a restart; loaded tasks and sessions
    of any status count as dependencies of their project."""
    assert_error(api.delete(f"/api/projects/{P1}"), 400, "PROJECT_HAS_DEPENDENCIES",
                 "Cannot delete project with 5 existing task(s)")
    # A task with children goes only with them (§7.3.6); its child moves to the root first.
    assert_error(api.delete(f"/api/tasks/{LEGACY}"), 400, "TASK_HAS_CHILDREN",
                 "Cannot delete task with 1 child task(s)")
    assert ok(api.patch(f"/api/tasks/{CANCELLED}", json={"parentId": None}))["parentId"] is None
    assert ok(api.delete(f"/api/tasks/{LEGACY}")) == {"success": True, "id": LEGACY}
    assert not (srv.data_dir / LEGACY_FILE).exists()
    assert not (srv.data_dir / task_rel(LEGACY)).exists()
    srv.restart()
    assert_error(api.get(f"/api/tasks/{LEGACY}"), 404, "TASK_NOT_FOUND")
    assert get(api, "task", CANCELLED)["parentId"] is None
    # Loaded sessions of any status block a project's deletion too.
    assert_error(api.delete(f"/api/projects/{P_LATE}"), 400, "PROJECT_HAS_DEPENDENCIES",
                 "Cannot delete project with 1 existing session(s)")
    ok(api.delete(f"/api/sessions/{S_FAILED}"))
    assert ok(api.delete(f"/api/projects/{P_LATE}")) == {"success": True, "id": P_LATE}
    assert not (srv.data_dir / "projects" / f"{P_LATE}.json").exists()


def test_links_written_by_the_original(srv, api):
    # A link known to one side only (the drifted original wrote such files) is completed by
    # an add, with the four events.
    assert get(api, "task", ONE_SIDED)["sessionIds"] == []
    with WsClient(srv.ws_url) as ws:
        session = ok(api.post(f"/api/sessions/{S_NORMAL}/tasks/{ONE_SIDED}"))
        assert session["taskIds"] == [LINKED, ONE_SIDED]
        task = get(api, "task", ONE_SIDED)
        assert task["sessionIds"] == [S_NORMAL]
        assert [(e["type"], e.get("sessionId")) for e in task["timeline"]] == \
            [("session_started", S_NORMAL)]
        assert event_types(ws.barrier()) == ["session:task_added", "task:session_added",
                                             "session:updated", "task:updated"]
        # Deleting the migrated legacy session unlinks its task and ends the link.
        ok(api.delete(f"/api/sessions/{S_LEGACY}"))
        linked = get(api, "task", LINKED)
        assert linked["sessionIds"] == [S_NORMAL]
        assert linked["timeline"][-1]["type"] == "session_ended"
        assert linked["timeline"][-1]["sessionId"] == S_LEGACY
        assert event_types(ws.barrier()) == ["session:deleted", "task:session_removed",
                                             "task:updated"]
    assert not entity_path(srv.data_dir, "session", {"id": S_LEGACY}).exists()
    assert_stored(api, srv.data_dir, "task", LINKED)
    assert_stored(api, srv.data_dir, "task", ONE_SIDED)
    assert_stored(api, srv.data_dir, "session", S_NORMAL)

