"""Bad input (SPEC §3.3): every refused request answers the documented status and error body,
and changes nothing — neither a file under the data and session directories, nor what GET
returns, nor a WebSocket event."""

from __future__ import annotations

import json

import pytest
from helpers import (
    Snapshot,
    assert_error,
    assert_stored,
    entity_path,
    event_types,
    get,
    new_project,
    new_session,
    new_task,
    ok,
)

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def world(api, ws_conn) -> dict:
    """A project with two tasks and a session linked to the second, and an empty project (which
    a DELETE would remove if a refused request slipped through)."""
    project = new_project(api, name="Bad input")
    empty = new_project(api, name="Empty")
    task = new_task(api, project["id"], title="target")
    linked = new_task(api, project["id"], title="linked")
    session = new_session(api, project["id"], [linked["id"]])
    ws_conn.barrier()
    return {"project": project["id"], "empty": empty["id"], "task": task["id"],
            "linked": linked["id"], "session": session["id"]}


# Every route that reads a body, with a path that exists (so only the body can be at fault).
ENDPOINTS = [
    ("POST", "/api/projects"),
    ("PUT", "/api/projects/{project}"),
    ("DELETE", "/api/projects/{empty}"),
    ("POST", "/api/tasks"),
    ("PATCH", "/api/tasks/{task}"),
    ("POST", "/api/tasks/{task}/timeline"),
    ("DELETE", "/api/tasks/{task}"),
    ("POST", "/api/sessions"),
    ("PATCH", "/api/sessions/{session}"),
    ("DELETE", "/api/sessions/{session}"),
    ("POST", "/api/sessions/{session}/tasks/{task}"),
    ("DELETE", "/api/sessions/{session}/tasks/{linked}"),
    ("POST", "/api/sessions/{session}/events"),
    ("POST", "/api/sessions/{session}/timeline"),
]
ENDPOINT_IDS = [f"{m} {p}" for m, p in ENDPOINTS]

VALID_BODY = json.dumps({"name": "n", "title": "t", "message": "m", "type": "update",
                         "projectId": "proj_x", "taskIds": []}).encode()

# (content type or None, raw body, status, message or None)
BAD_BODIES = {
    "truncated-json": ("application/json", b'{"name": "x",', 400, "Invalid JSON body"),
    "unquoted-keys": ("application/json", b"{name: 'x'}", 400, "Invalid JSON body"),
    "trailing-garbage": ("application/json", b'{"name": "x"} xyz', 400, "Invalid JSON body"),
    "invalid-utf8": ("application/json", b'{"name": "\xff\xfe"}', 400, "Invalid JSON body"),
    "charset-json-malformed": ("application/json; charset=utf-8", b"{", 400,
                               "Invalid JSON body"),
    "too-deep": ("application/json", b'{"metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400,
                 None),
    "null": ("application/json", b"null", 400, None),
    "array": ("application/json", b'[{"name": "x"}]', 400, None),
    "string": ("application/json", b'"name"', 400, None),
    "number": ("application/json", b"42", 400, None),
    "boolean": ("application/json", b"true", 400, None),
    "text-plain": ("text/plain", VALID_BODY, 415, None),
    "text-plain-charset": ("text/plain; charset=utf-8", VALID_BODY, 415, None),
    "form": ("application/x-www-form-urlencoded", b"name=x&title=t", 415, None),
    "multipart": ("multipart/form-data; boundary=xx",
                  b'--xx\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--xx--\r\n',
                  415, None),
    "no-content-type": (None, VALID_BODY, 415, None),
    "text-json": ("text/json", VALID_BODY, 415, None),
    "jsonp": ("application/jsonp", VALID_BODY, 415, None),
}


def raw(api, method: str, path: str, content: bytes, content_type: str | None):
    headers = {} if content_type is None else {"Content-Type": content_type}
    return api.request(method, path, content=content, headers=headers)


@pytest.mark.parametrize("case", list(BAD_BODIES))
@pytest.mark.parametrize("method,path", ENDPOINTS, ids=ENDPOINT_IDS)
def test_bad_body_is_refused_and_changes_nothing(api, srv, ws, world, method, path, case):
    content_type, body, status, message = BAD_BODIES[case]
    snap = Snapshot(api, srv)
    resp = raw(api, method, path.format(**world), body, content_type)
    assert_error(resp, status, "VALIDATION_ERROR", message)
    snap.assert_unchanged()
    assert ws.barrier() == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("method,path", ENDPOINTS, ids=ENDPOINT_IDS)
def test_body_over_one_mib_is_413(api, srv, ws, world, method, path, chunked):
    body = json.dumps({"name": "big", "title": "big", "message": "big",
                       "description": "x" * MIB}).encode()
    assert len(body) > MIB
    snap = Snapshot(api, srv)
    headers = {"Content-Type": "application/json"}
    if chunked:
        def pieces():
            for i in range(0, len(body), 65536):
                yield body[i:i + 65536]
        resp = api.request(method, path.format(**world), content=pieces(), headers=headers)
    else:
        resp = api.request(method, path.format(**world), content=body, headers=headers)
    assert_error(resp, 413, "VALIDATION_ERROR")
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_body_of_exactly_one_mib_is_accepted(api, srv):
    skeleton = json.dumps({"name": "exact", "description": ""}).encode()
    body = json.dumps({"name": "exact", "description": "d" * (MIB - len(skeleton))}).encode()
    assert len(body) == MIB
    project = ok(api.post("/api/projects", content=body,
                          headers={"Content-Type": "application/json"}), 201)
    assert len(project["description"]) == MIB - len(skeleton)
    assert_stored(api, srv.data_dir, "project", project["id"])
    ok(api.delete(f"/api/projects/{project['id']}"))


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/json;charset=UTF-8", "Application/JSON"])
def test_json_content_types_are_accepted(api, content_type, ws):
    resp = raw(api, "POST", "/api/projects", json.dumps({"name": "ct"}).encode(), content_type)
    project = ok(resp, 201)
    assert project["name"] == "ct"
    assert event_types(ws.barrier()) == ["project:created"]
    ok(api.delete(f"/api/projects/{project['id']}"))


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain"])
def test_empty_body_is_an_empty_object(api, srv, world, content_type):
    # POST with an empty body: the same answer as for {} (name is required).
    snap = Snapshot(api, srv)
    assert_error(raw(api, "POST", "/api/projects", b"", content_type), 400, "VALIDATION_ERROR",
                 "name is required")
    assert_error(raw(api, "POST", f"/api/tasks/{world['task']}/timeline", b"", content_type),
                 400, "VALIDATION_ERROR", "message is required")
    snap.assert_unchanged()
    # PATCH with an empty body is an update that changes no field.
    before = get(api, "task", world["task"])
    after = ok(raw(api, "PATCH", f"/api/tasks/{world['task']}", b"", content_type))
    assert {k: v for k, v in after.items() if k != "updatedAt"} == \
        {k: v for k, v in before.items() if k != "updatedAt"}


# ------------------------------------------------------------------ wrong JSON types
WRONG_TYPES = [
    ("POST", "/api/projects", {"name": 5}),
    ("POST", "/api/projects", {"name": ["x"]}),
    ("POST", "/api/projects", {"name": {"x": 1}}),
    ("POST", "/api/projects", {"name": True}),
    ("POST", "/api/projects", {"name": "ok", "workingDir": 5}),
    ("POST", "/api/projects", {"name": "ok", "workingDir": ["/x"]}),
    ("POST", "/api/projects", {"name": "ok", "description": 5}),
    ("POST", "/api/projects", {"name": "ok", "description": {"md": "x"}}),
    ("PUT", "/api/projects/{project}", {"name": 5}),
    ("PUT", "/api/projects/{project}", {"workingDir": []}),
    ("PUT", "/api/projects/{project}", {"description": 1.5}),
    ("PUT", "/api/projects/{project}", {"description": "fine", "name": False}),
    ("POST", "/api/tasks", {"projectId": 5, "title": "t"}),
    ("POST", "/api/tasks", {"projectId": ["{project}"], "title": "t"}),
    ("POST", "/api/tasks", {"projectId": "{project}", "title": 5}),
    ("POST", "/api/tasks", {"projectId": "{project}", "title": "t", "description": 5}),
    ("POST", "/api/tasks", {"projectId": "{project}", "title": "t", "priority": 1}),
    ("POST", "/api/tasks", {"projectId": "{project}", "title": "t", "initialPrompt": []}),
    ("POST", "/api/tasks", {"projectId": "{project}", "title": "t", "skillIds": "a"}),
    ("POST", "/api/tasks", {"projectId": "{project}", "title": "t", "skillIds": [1]}),
    ("POST", "/api/tasks", {"projectId": "{project}", "title": "t", "parentId": 5}),
    ("POST", "/api/tasks", {"projectId": "{project}", "title": "t", "parentId": ["{task}"]}),
    ("PATCH", "/api/tasks/{task}", {"title": 5}),
    ("PATCH", "/api/tasks/{task}", {"description": ["x"]}),
    ("PATCH", "/api/tasks/{task}", {"status": 1}),
    ("PATCH", "/api/tasks/{task}", {"status": ["pending"]}),
    ("PATCH", "/api/tasks/{task}", {"priority": {"v": "low"}}),
    ("PATCH", "/api/tasks/{task}", {"parentId": 5}),
    ("PATCH", "/api/tasks/{task}", {"parentId": {"id": "{linked}"}}),
    ("PATCH", "/api/tasks/{task}", {"sessionIds": "{session}"}),
    ("PATCH", "/api/tasks/{task}", {"sessionIds": [1]}),
    ("PATCH", "/api/tasks/{task}", {"skillIds": {"a": 1}}),
    ("PATCH", "/api/tasks/{task}", {"agentIds": [None]}),
    ("PATCH", "/api/tasks/{task}", {"timeline": {"type": "update"}}),
    ("PATCH", "/api/tasks/{task}", {"timeline": ["update"]}),
    ("PATCH", "/api/tasks/{task}", {"timeline": [{"type": 5}]}),
    ("PATCH", "/api/tasks/{task}", {"timeline": [{"message": 5}]}),
    ("PATCH", "/api/tasks/{task}", {"timeline": [{"message": "m", "timestamp": "now"}]}),
    ("PATCH", "/api/tasks/{task}", {"timeline": [{"message": "m", "sessionId": 5}]}),
    ("PATCH", "/api/tasks/{task}", {"sessionStatus": 5}),
    ("PATCH", "/api/tasks/{task}", {"description": "ok", "status": None}),
    ("POST", "/api/tasks/{task}/timeline", {"message": 5}),
    ("POST", "/api/tasks/{task}/timeline", {"message": "m", "type": 5}),
    ("POST", "/api/tasks/{task}/timeline", {"message": "m", "sessionId": ["s"]}),
    ("POST", "/api/sessions", {"projectId": 5, "taskIds": []}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": {"a": 1}}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [None]}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskId": 5}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "id": 5}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "name": ["n"]}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "agentId": 5}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "status": 5}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "env": "A=1"}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "env": {"A": 1}}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "env": {"A": None}}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "metadata": []}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "metadata": "m"}),
    ("PATCH", "/api/sessions/{session}", {"status": 5}),
    ("PATCH", "/api/sessions/{session}", {"agentId": ["a"]}),
    ("PATCH", "/api/sessions/{session}", {"taskIds": "{task}"}),
    ("PATCH", "/api/sessions/{session}", {"taskIds": [5]}),
    ("PATCH", "/api/sessions/{session}", {"events": {"type": "log"}}),
    ("PATCH", "/api/sessions/{session}", {"events": ["log"]}),
    ("PATCH", "/api/sessions/{session}", {"events": [{"type": 5}]}),
    ("PATCH", "/api/sessions/{session}", {"events": [{"type": "log", "timestamp": "x"}]}),
    ("PATCH", "/api/sessions/{session}", {"env": ["A"]}),
    ("PATCH", "/api/sessions/{session}", {"env": {"A": 5}}),
    ("POST", "/api/sessions/{session}/events", {"type": 5}),
    ("POST", "/api/sessions/{session}/events", {"type": ["log"]}),
    ("POST", "/api/sessions/{session}/timeline", {"message": 5}),
    ("POST", "/api/sessions/{session}/timeline", {"message": "m", "type": 5}),
    ("POST", "/api/sessions/{session}/timeline", {"message": "m", "taskId": 5}),
]


def _fill(value, world):
    if isinstance(value, str):
        return value.format(**world)
    if isinstance(value, list):
        return [_fill(v, world) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    return value


@pytest.mark.parametrize("method,path,body", WRONG_TYPES,
                         ids=[f"{m} {p} {json.dumps(b)}" for m, p, b in WRONG_TYPES])
def test_wrong_type_for_a_known_field(api, srv, ws, world, method, path, body):
    snap = Snapshot(api, srv)
    resp = api.request(method, path.format(**world), json=_fill(body, world))
    assert_error(resp, 400, "VALIDATION_ERROR")
    snap.assert_unchanged()
    assert ws.barrier() == []


# ------------------------------------------------------------------ sizes
LONG = "n" * 1001
LONG_ID = "i" * 129
TOO_LONG = [
    ("POST", "/api/projects", {"name": LONG}),
    ("PUT", "/api/projects/{project}", {"name": LONG}),
    ("POST", "/api/tasks", {"projectId": "{project}", "title": LONG}),
    ("PATCH", "/api/tasks/{task}", {"title": LONG}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "name": LONG}),
    ("POST", "/api/tasks", {"projectId": LONG_ID, "title": "t"}),
    ("POST", "/api/tasks", {"projectId": "{project}", "title": "t", "parentId": LONG_ID}),
    ("PATCH", "/api/tasks/{task}", {"parentId": LONG_ID}),
    ("POST", "/api/sessions", {"projectId": LONG_ID, "taskIds": []}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [LONG_ID]}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "id": LONG_ID}),
    ("PATCH", "/api/sessions/{session}", {"taskIds": [LONG_ID]}),
    ("GET", f"/api/projects/{LONG_ID}", None),
    ("GET", f"/api/tasks/{LONG_ID}", None),
    ("GET", f"/api/tasks/{LONG_ID}/children", None),
    ("GET", f"/api/sessions/{LONG_ID}", None),
    ("PUT", f"/api/projects/{LONG_ID}", {"name": "x"}),
    ("PATCH", f"/api/tasks/{LONG_ID}", {"title": "x"}),
    ("DELETE", f"/api/tasks/{LONG_ID}", None),
    ("PATCH", f"/api/sessions/{LONG_ID}", {"status": "running"}),
    ("POST", f"/api/sessions/{{session}}/tasks/{LONG_ID}", None),
    ("DELETE", f"/api/sessions/{LONG_ID}/tasks/{{task}}", None),
]


@pytest.mark.parametrize("method,path,body", TOO_LONG,
                         ids=[f"{m} {p[:40]} {json.dumps(b)[:60]}" for m, p, b in TOO_LONG])
def test_sizes_beyond_the_limits(api, srv, ws, world, method, path, body):
    snap = Snapshot(api, srv)
    resp = api.request(method, path.format(**world),
                       json=_fill(body, world) if body is not None else None)
    assert_error(resp, 400, "VALIDATION_ERROR")
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_sizes_at_the_limits_are_accepted(api, srv, world):
    name = "é" * 1000  # characters, not bytes
    project = new_project(api, name=name)
    assert project["name"] == name
    task = new_task(api, project["id"], title="t" * 1000)
    session = new_session(api, project["id"], [task["id"]], name="s" * 1000, id="k" * 128)
    assert session["id"] == "k" * 128
    assert_stored(api, srv.data_dir, "session", session["id"])
    assert_stored(api, srv.data_dir, "task", task["id"])
    ok(api.delete(f"/api/sessions/{session['id']}"))
    ok(api.delete(f"/api/tasks/{task['id']}"))
    ok(api.delete(f"/api/projects/{project['id']}"))


# ------------------------------------------------------------------ unknown fields
def test_unknown_fields_are_ignored_and_never_stored(api, srv, ws, world):
    extra = {"bogus": 1, "nested": {"deep": True}, "__proto__": {"x": 1}, "statusCode": 500,
             "_suppressCreatedEvent": True, "constructor": "y"}

    def assert_clean(kind, eid):
        entity = assert_stored(api, srv.data_dir, kind, eid)
        for key in extra:
            assert key not in entity, (kind, key)
        raw_file = entity_path(srv.data_dir, kind, entity).read_text()
        for key in extra:
            assert f'"{key}"' not in raw_file

    project = ok(api.post("/api/projects", json={"name": "extra", **extra}), 201)
    assert_clean("project", project["id"])
    ok(api.put(f"/api/projects/{project['id']}", json={"description": "d", **extra}))
    assert_clean("project", project["id"])
    task = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "t", **extra}),
              201)
    assert_clean("task", task["id"])
    ok(api.patch(f"/api/tasks/{task['id']}", json={"priority": "high", **extra}))
    assert_clean("task", task["id"])
    ok(api.post(f"/api/tasks/{task['id']}/timeline", json={"message": "m", **extra}))
    assert_clean("task", task["id"])
    assert set(get(api, "task", task["id"])["timeline"][-1]) == \
        {"id", "type", "timestamp", "message"}
    # The original let a client hide a session's creation with an internal flag: not here.
    session = ok(api.post("/api/sessions", json={"projectId": project["id"],
                                                 "taskIds": [task["id"]], **extra}), 201)
    assert_clean("session", session["id"])
    ok(api.patch(f"/api/sessions/{session['id']}", json={"status": "running", **extra}))
    assert_clean("session", session["id"])
    ok(api.post(f"/api/sessions/{session['id']}/events", json={"type": "log", **extra}))
    assert_clean("session", session["id"])
    assert set(get(api, "session", session["id"])["events"][-1]) == {"id", "timestamp", "type"}
    assert_clean("task", task["id"])
    events = ws.barrier()
    assert event_types(events) == [
        "project:created", "project:updated", "task:created", "task:updated", "task:updated",
        "session:created", "task:session_added", "task:updated", "session:updated",
        "session:updated"]
    for event in events:
        if isinstance(event["data"], dict):
            assert not set(extra) & set(event["data"])
    ok(api.delete(f"/api/sessions/{session['id']}"))
    ok(api.delete(f"/api/tasks/{task['id']}"))
    ok(api.delete(f"/api/projects/{project['id']}"))


# ------------------------------------------------------------------ client session ids
@pytest.mark.parametrize("sid", ["../x", "../../escape", "a/b", "/abs", "x\u0000", "x\u0000y",
                                 "a\\b", "..", ".", " ", "tab\there", "new\nline", "ü",
                                 "dot.name", "", "x" * 129])
def test_bad_client_session_id_creates_no_file_anywhere(api, srv, ws, world, sid):
    snap = Snapshot(api, srv)
    outside = sorted(p.name for p in srv.tmp.parent.iterdir())
    resp = api.post("/api/sessions", json={"projectId": world["project"],
                                           "taskIds": [world["task"]], "id": sid})
    assert_error(resp, 400, "VALIDATION_ERROR")
    snap.assert_unchanged()
    assert sorted(p.name for p in srv.tmp.parent.iterdir()) == outside
    assert ws.barrier() == []


def test_duplicate_client_session_id(api, srv, ws, world):
    snap = Snapshot(api, srv)
    resp = api.post("/api/sessions", json={"projectId": world["project"], "taskIds": [],
                                           "id": world["session"]})
    assert_error(resp, 400, "VALIDATION_ERROR", f"Session {world['session']} already exists")
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_world_is_intact(api, srv, world):
    """After all the refusals above, every entity of the fixture still exists unchanged on
    disk."""
    for kind, key in (("project", "project"), ("project", "empty"), ("task", "task"),
                      ("task", "linked"), ("session", "session")):
        assert_stored(api, srv.data_dir, kind, world[key])
    assert get(api, "session", world["session"])["taskIds"] == [world["linked"]]
