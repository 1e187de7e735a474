"""Conformance checks written from SPEC.md and DATA-MODELS.md for rules the other modules leave
open: unicode in every string field (wire, events, files, restart), client key order, duplicate
JSON keys, odd numbers, empty bodies on every mutating route, URL-encoded ids and query values,
HEAD, concurrent mixed requests, start-up configuration (§2), list order of a hand-written data
directory, manifests built from loaded tasks, and the discrepancies once found against the spec
(each fixed; the tests keep them fixed)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from servers import ROOT, ServerProcess, free_port
from helpers import (
    Snapshot,
    WsClient,
    assert_error,
    assert_file_matches,
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
    tree_snapshot,
)
from server_fixtures import server_fixture


# Spawned sessions are only announced (a UI would open the terminal): no agent is started.
srv = server_fixture(env={"MAESTRO_LAUNCHER": "ui"})


@pytest.fixture
def project_id(api) -> str:
    return new_project(api, name=f"Spec check {time.monotonic_ns()}")["id"]


def in_threads(target, count: int, *args) -> None:
    """Run `target(index, *args)` in `count` threads at once and wait for all of them."""
    threads = [threading.Thread(target=target, args=(i, *args)) for i in range(count)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)


def agent_token(api: httpx.Client, ws: WsClient, project_id: str, task_id: str) -> tuple:
    """Spawn a session for `task_id`; its id and the agent token the UI is handed for it."""
    ws.barrier()
    spawned = ok(api.post("/api/sessions/spawn", json={"projectId": project_id,
                                                      "taskIds": [task_id]}), 201)
    request = next(e for e in ws.barrier() if e["type"] == "session:spawn_request")["data"]
    return spawned["sessionId"], request["envVars"]["MAESTRO_SESSION_TOKEN"]


def send_raw(api: httpx.Client, method: str, path: str, body: bytes | str,
             content_type: str | None = "application/json") -> httpx.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return api.request(method, path, content=body, headers=headers)


# ------------------------------------------------------------------ unicode everywhere
# Accents, CJK, an astral-plane emoji, right-to-left text, a combining mark, the JavaScript line
# separator, quotes, a backslash, a tab and a control character.
U = "Ünïcödé ✓ 名前 🚀 עברית e\u0301 \u2028 \"q\" \\ \t \u0001 end"
LITERAL = ["Ünïcödé ✓ 名前 🚀 עברית", "\u2028"]


def _assert_literal_utf8(path: Path) -> None:
    raw = path.read_bytes()
    for piece in LITERAL:
        assert piece.encode() in raw, f"{path} does not hold {piece!r} literally"
    assert b"\\u540d" not in raw.lower() and b"\\ud83d" not in raw.lower()


def test_every_string_field_keeps_unicode_on_the_wire_in_events_on_disk_and_after_restart(
        make_server):
    """§5.2 and §13: non-ASCII written literally, key order kept; the same text comes back from
    GET, the WebSocket events and, after a restart, from the files."""
    srv = make_server(env={"MAESTRO_LAUNCHER": "ui"})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = ok(api.post("/api/projects", json={"name": U, "workingDir": "/tmp/" + U,
                                                     "description": U}), 201)
        pid = project["id"]
        assert (project["name"], project["workingDir"], project["description"]) == \
            (U.strip(), "/tmp/" + U, U)
        task = ok(api.post("/api/tasks", json={"projectId": pid, "title": U, "description": U,
                                               "initialPrompt": U, "skillIds": [U]}), 201)
        tid = task["id"]
        task = ok(api.patch(f"/api/tasks/{tid}", json={
            "agentIds": [U], "timeline": [{"type": "milestone", "message": U,
                                           "sessionId": "sess-ü"}]}))
        task = ok(api.post(f"/api/tasks/{tid}/timeline",
                           json={"message": U, "type": "blocker", "sessionId": "sess-ü"}))
        assert task["title"] == U.strip()
        assert (task["description"], task["initialPrompt"]) == (U, U)
        assert task["skillIds"] == [U] and task["agentIds"] == [U]
        assert [e.get("message") for e in task["timeline"][-2:]] == [U, U]
        metadata = {U: [U, {"k": U}], "zeta": 1, "alpha": {"y": 2, "b": 3}}
        session = ok(api.post("/api/sessions", json={
            "projectId": pid, "taskIds": [tid], "name": U, "agentId": U,
            "env": {"VAR_Ü": U}, "metadata": metadata}), 201)
        sid = session["id"]
        assert (session["name"], session["agentId"], session["env"]) == (U, U, {"VAR_Ü": U})
        assert list(session["metadata"]) == [U, "zeta", "alpha"]
        ok(api.patch(f"/api/sessions/{sid}", json={"events": [{"type": U, "data": {U: U}}]}))
        ok(api.post(f"/api/sessions/{sid}/events", json={"type": U, "data": U}))
        session = ok(api.post(f"/api/sessions/{sid}/timeline",
                              json={"type": U, "message": U, "taskId": tid,
                                    "metadata": {U: U}}))
        assert [e["type"] for e in session["events"]] == [U, U]
        assert session["events"][0]["data"] == {U: U} and session["events"][1]["data"] == U
        assert session["timeline"][-1]["message"] == U
        assert session["timeline"][-1]["metadata"] == {U: U}

        events = ws.barrier()
        last = {}
        for event in events:
            last[event["type"]] = event["data"]
        assert last["project:created"] == get(api, "project", pid)
        assert last["task:updated"] == get(api, "task", tid)
        assert last["session:updated"] == get(api, "session", sid)

        stored = {kind: assert_stored(api, srv.data_dir, kind, eid)
                  for kind, eid in (("project", pid), ("task", tid), ("session", sid))}
        for kind, entity in stored.items():
            _assert_literal_utf8(entity_path(srv.data_dir, kind, entity))
        files = tree_snapshot(srv.data_dir)

    srv.restart()
    with http_client(srv) as api:
        for kind, entity in stored.items():
            assert get(api, kind, entity["id"]) == entity
            assert_file_matches(srv.data_dir, kind, entity)
        after = tree_snapshot(srv.data_dir)
        assert {k: v for k, v in after.items() if k.endswith(".json")} == \
            {k: v for k, v in files.items() if k.endswith(".json")}


# ------------------------------------------------------------------ JSON details
def test_client_key_order_is_kept_in_responses_events_and_files(api, srv, ws):
    project = new_project(api, name="Key order")
    body = ('{"projectId": "' + project["id"] + '", "taskIds": [], "metadata": {"z": 1, '
            '"a": {"y": 2, "b": 3}, "m": [{"q": 1, "c": 2}]}, "env": {"ZED": "1", "ALPHA": "2"}}')
    session = ok(send_raw(api, "POST", "/api/sessions", body), 201)
    assert list(session["metadata"]) == ["z", "a", "m"]
    assert list(session["metadata"]["a"]) == ["y", "b"]
    assert list(session["metadata"]["m"][0]) == ["q", "c"]
    assert list(session["env"]) == ["ZED", "ALPHA"]
    created = next(e for e in ws.barrier() if e["type"] == "session:created")["data"]
    assert list(created["metadata"]) == ["z", "a", "m"]
    on_disk = json.loads(entity_path(srv.data_dir, "session", session).read_text())
    assert list(on_disk) == list(session)
    assert list(on_disk["metadata"]["a"]) == ["y", "b"]
    assert_stored(api, srv.data_dir, "session", session["id"])


def test_duplicate_json_keys_last_one_wins_as_in_javascript(api, srv):
    body = '{"name": "first", "description": "d", "name": "second"}'
    project = ok(send_raw(api, "POST", "/api/projects", body), 201)
    assert project["name"] == "second"
    raw = entity_path(srv.data_dir, "project", project).read_bytes()
    assert raw.count(b'"name"') == 1 and b"first" not in raw
    task = new_task(api, project["id"])
    patched = ok(send_raw(api, "PATCH", f"/api/tasks/{task['id']}",
                          '{"status": "in_progress", "status": "completed"}'))
    assert patched["status"] == "completed"
    # Only the surviving value was applied: no start was recorded.
    assert patched["startedAt"] is None and isinstance(patched["completedAt"], int)
    session = ok(send_raw(api, "POST", "/api/sessions",
                          '{"projectId": "' + project["id"] + '", "taskIds": ["nope"], '
                          '"metadata": {"k": 1, "k": 2}, "taskIds": []}'), 201)
    assert session["taskIds"] == [] and session["metadata"] == {"k": 2}
    assert_stored(api, srv.data_dir, "session", session["id"])


@pytest.mark.parametrize("method,path,body", [
    ("PATCH", "/api/tasks/{task}", {"timeline": [{"message": "m",
                                                  "timestamp": "1706789123456"}]}),
    ("PATCH", "/api/tasks/{task}", {"timeline": [{"message": "m", "timestamp": 1.5}]}),
    ("PATCH", "/api/tasks/{task}", {"timeline": [{"message": "m", "timestamp": True}]}),
    ("PATCH", "/api/sessions/{session}", {"events": [{"type": "t",
                                                      "timestamp": "1706789123456"}]}),
    ("PATCH", "/api/tasks/{task}", {"status": 1}),
    ("PATCH", "/api/tasks/{task}", {"title": 12345}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": "[]"}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "env": {"N": 1}}),
    ("POST", "/api/sessions", {"projectId": "{project}", "taskIds": [], "name": 7}),
    ("POST", "/api/projects", {"name": 10 ** 30}),
])
def test_numbers_where_strings_or_timestamps_belong_are_refused(api, srv, ws, method, path,
                                                                 body):
    """§3.3 wrong JSON type → 400 and nothing changes; §3.2 timestamps are integer ms."""
    project = new_project(api, name="Numbers")
    world = {"project": project["id"], "task": new_task(api, project["id"])["id"],
             "session": new_session(api, project["id"], [])["id"]}
    ws.barrier()
    snap = Snapshot(api, srv)
    text = json.dumps(body).replace("{project}", world["project"])
    assert_error(send_raw(api, method, path.format(**world), text), 400, "VALIDATION_ERROR")
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_odd_numbers_in_free_form_fields_round_trip(api, srv):
    project = new_project(api, name="Odd numbers")
    text = ('{"big": 18446744073709551615, "bigger": 1208925819614629174706176, '
            '"neg": -9223372036854775808, "tiny": 5e-324, "max": 1.7976931348623157e308, '
            '"negzero": -0.0, "frac": 0.1, "exp": 1e21}')
    session = ok(send_raw(api, "POST", "/api/sessions",
                          f'{{"projectId": "{project["id"]}", "taskIds": [], '
                          f'"metadata": {text}}}'), 201)
    sent = json.loads(text)
    assert session["metadata"].keys() == sent.keys()
    for key, value in sent.items():
        assert session["metadata"][key] == pytest.approx(value, rel=1e-15), key
    assert_stored(api, srv.data_dir, "session", session["id"])
    # A whole-number float timestamp is stored as the integer it is (§3.2).
    task = new_task(api, project["id"])
    patched = ok(send_raw(api, "PATCH", f"/api/tasks/{task['id']}",
                          '{"timeline": [{"message": "m", "timestamp": 1706789123456.0}]}'))
    stamp = patched["timeline"][-1]["timestamp"]
    assert stamp == 1706789123456 and isinstance(stamp, int)
    assert b"1706789123456.0" not in entity_path(srv.data_dir, "task", patched).read_bytes()


# A run of 19 digits anywhere in a body (here inside a string) must not change what is JSON.
LONG_DIGITS = '"pad": "1234567890123456789"'


def _bodies_with(project_id: str, value: str) -> list[str]:
    head = f'{{"projectId": "{project_id}", "taskIds": [], '
    return [head + f'{LONG_DIGITS}, "metadata": {{"x": {value}}}}}',
            head + f'"name": {value}, {LONG_DIGITS}}}']


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_refused_whatever_else_the_body_holds(api, srv, ws, value):
    project = new_project(api, name="Not JSON")
    ws.barrier()
    snap = Snapshot(api, srv)
    for body in _bodies_with(project["id"], value):
        assert_error(send_raw(api, "POST", "/api/sessions", body), 400, "VALIDATION_ERROR",
                     "Invalid JSON body")
    snap.assert_unchanged()
    assert ws.barrier() == []


@pytest.mark.parametrize("value", ['"a\\ud800b"', '"\\udc00"'])
def test_lone_surrogates_are_never_a_server_error(api, srv, ws, value):
    project = new_project(api, name="Surrogates")
    ws.barrier()
    snap = Snapshot(api, srv)
    for body in _bodies_with(project["id"], value):
        resp = send_raw(api, "POST", "/api/sessions", body)
        assert resp.status_code < 500, resp.text[:300]
        if resp.status_code == 201:  # accepted: then stored and served faithfully
            assert_stored(api, srv.data_dir, "session", resp.json()["id"])
            snap = Snapshot(api, srv)
        else:
            assert_error(resp, 400, "VALIDATION_ERROR")
    snap.assert_unchanged()


# ------------------------------------------------------------------ empty bodies
@pytest.mark.parametrize("content_type", [None, "application/json",
                                          "application/json; charset=utf-8", "text/plain"])
def test_an_empty_body_is_the_empty_object_on_every_mutating_route(api, srv, ws, content_type):
    """§3.3: an empty body is `{}`, with or without a content type, on every route that reads
    one; each route then answers exactly as it answers `{}`."""
    project = new_project(api, name="Empty bodies")
    spare = new_project(api, name="Spare")
    pid = project["id"]
    task, doomed, extra = (new_task(api, pid, title=t) for t in ("task", "doomed", "extra"))
    session = new_session(api, pid, [task["id"]])
    gone = new_session(api, pid, [])
    sid = session["id"]
    ws.barrier()

    def empty(method, path):
        return send_raw(api, method, path, b"", content_type)

    assert_error(empty("POST", "/api/projects"), 400, "VALIDATION_ERROR", "name is required")
    assert_error(empty("POST", "/api/tasks"), 400, "VALIDATION_ERROR", "projectId is required")
    assert_error(empty("POST", f"/api/tasks/{task['id']}/timeline"), 400, "VALIDATION_ERROR",
                 "message is required")
    assert_error(empty("POST", "/api/sessions"), 400, "VALIDATION_ERROR", "taskIds is required")
    assert_error(empty("POST", f"/api/sessions/{sid}/events"), 400, "VALIDATION_ERROR",
                 "type is required")
    assert_error(empty("POST", f"/api/sessions/{sid}/timeline"), 400, "VALIDATION_ERROR",
                 "message is required")
    assert_error(empty("POST", "/api/sessions/spawn"), 400, "missing_project_id",
                 "projectId is required")
    assert ws.barrier() == []

    assert ok(empty("PUT", f"/api/projects/{pid}"))["name"] == "Empty bodies"
    assert ok(empty("PATCH", f"/api/tasks/{task['id']}"))["title"] == "task"
    assert ok(empty("PATCH", f"/api/sessions/{sid}"))["taskIds"] == [task["id"]]
    assert ok(empty("POST", f"/api/sessions/{sid}/tasks/{extra['id']}"))["taskIds"] == \
        [task["id"], extra["id"]]
    assert ok(empty("DELETE", f"/api/sessions/{sid}/tasks/{extra['id']}"))["taskIds"] == \
        [task["id"]]
    assert ok(empty("DELETE", f"/api/sessions/{gone['id']}")) == {"success": True,
                                                                   "id": gone["id"]}
    assert ok(empty("DELETE", f"/api/tasks/{doomed['id']}")) == {"success": True,
                                                                  "id": doomed["id"]}
    assert ok(empty("DELETE", f"/api/projects/{spare['id']}")) == {"success": True,
                                                                    "id": spare["id"]}
    assert event_types(ws.barrier()) == [
        "project:updated", "task:updated", "session:updated",
        "session:task_added", "task:session_added", "session:updated", "task:updated",
        "session:task_removed", "task:session_removed", "session:updated", "task:updated",
        "session:deleted", "task:deleted", "project:deleted"]
    assert_stored(api, srv.data_dir, "session", sid)
    assert_stored(api, srv.data_dir, "task", extra["id"])
    assert_link_invariant(api, pid)


# ------------------------------------------------------------------ URLs
def test_url_encoded_ids_and_query_values_are_decoded(api):
    project = new_project(api, name="Encoded")
    pid = project["id"]
    root = new_task(api, pid, title="root")
    child = new_task(api, pid, title="child", parentId=root["id"])
    ok(api.patch(f"/api/tasks/{child['id']}", json={"status": "in_progress"}))
    session = new_session(api, pid, [root["id"]], id="my-session_1")

    def enc(value: str) -> str:
        return "".join(f"%{ord(c):02X}" if c in "_-" else c for c in value)

    def ids(url: str) -> list[str]:
        return [e["id"] for e in ok(api.get(url))]

    assert get(api, "task", enc(root["id"]))["id"] == root["id"]
    assert ok(api.get(f"/api/sessions/{enc('my-session_1')}"))["id"] == "my-session_1"
    assert ids(f"/api/tasks/{enc(root['id'])}/children") == [child["id"]]
    assert ids(f"/api/tasks?projectId={enc(pid)}&status=in%5Fprogress") == [child["id"]]
    assert ids(f"/api/tasks?projectId={enc(pid)}&parentId=%6Eull") == [root["id"]]
    assert ids(f"/api/tasks?parentId={enc(root['id'])}") == [child["id"]]
    assert ids(f"/api/sessions?taskId={enc(root['id'])}&active=tru%65") == [session["id"]]
    assert ids(f"/api/sessions?projectId={enc(pid)}&status=%72unning") == [session["id"]]
    # "+" is a space and "%26" an ampersand inside a value: neither matches anything here.
    assert ids(f"/api/tasks?projectId={enc(pid)}&status=in+progress") == []
    assert ids(f"/api/tasks?projectId={enc(pid)}&status=a%26b") == []
    linked = ok(api.post(f"/api/sessions/{enc('my-session_1')}/tasks/{enc(child['id'])}"))
    assert linked["taskIds"] == [root["id"], child["id"]]
    assert get(api, "task", child["id"])["sessionIds"] == ["my-session_1"]


@pytest.mark.parametrize("path", ["/health", "/api/projects", "/api/projects/{project}",
                                  "/api/tasks", "/api/tasks/{task}", "/api/tasks/{task}/children",
                                  "/api/sessions", "/api/sessions/{session}",
                                  "/api/tasks/task_0_missing", "/api/sessions/sess_0_missing"])
def test_head_answers_like_get_without_a_body(api, path):
    project = new_project(api, name="Head")
    task = new_task(api, project["id"])
    session = new_session(api, project["id"], [])
    url = path.format(project=project["id"], task=task["id"], session=session["id"])
    got, head = api.get(url), api.head(url)
    assert head.status_code == got.status_code
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.content == b""


# ------------------------------------------------------------------ concurrency
def test_concurrent_mixed_requests_keep_every_rule(api, srv):
    """Eight clients at once create, link, unlink, re-parent, patch and delete: no 5xx, the §8
    invariant holds, no parent cycle appears, and every file equals what GET returns."""
    project = new_project(api, name="Concurrent")
    pid = project["id"]
    tasks = [new_task(api, pid, title=f"t{i}")["id"] for i in range(6)]
    sessions = [new_session(api, pid, tasks[:2])["id"] for _ in range(3)]
    guard = threading.Lock()
    failures: list[str] = []

    def client(seed: int) -> None:
        rnd = random.Random(seed)
        with http_client(srv) as cl:
            for _ in range(40):
                with guard:
                    t, s, other = rnd.choice(tasks), rnd.choice(sessions), rnd.choice(tasks)
                    some_tasks = rnd.sample(tasks, rnd.randrange(4))
                    some_sessions = rnd.sample(sessions, rnd.randrange(3))
                rare = rnd.random() < 0.3
                method, url, body = rnd.choice([
                    ("POST", f"/api/sessions/{s}/tasks/{t}", None),
                    ("DELETE", f"/api/sessions/{s}/tasks/{t}", None),
                    ("PATCH", f"/api/sessions/{s}", {"taskIds": some_tasks, "status": "running"}),
                    ("PATCH", f"/api/tasks/{t}", {"sessionIds": some_sessions,
                                                  "status": "in_progress"}),
                    ("POST", "/api/sessions", {"projectId": pid, "taskIds": some_tasks}),
                    ("POST", "/api/tasks", {"projectId": pid, "title": "n", "parentId": t}),
                    ("DELETE", f"/api/sessions/{s}" if rare else f"/api/tasks/{t}", None),
                    ("PATCH", f"/api/tasks/{t}", {"parentId": other}),
                    ("POST", f"/api/sessions/{s}/events", {"type": "log"}),
                    ("POST", f"/api/tasks/{t}/timeline", {"message": "m"}),
                ])
                r = cl.request(method, url, json=body)
                with guard:
                    if r.status_code == 201:
                        (sessions if "/sessions" in r.request.url.path else tasks).append(
                            r.json()["id"])
                    if r.status_code not in (200, 201, 400, 404):
                        failures.append(f"{r.request.method} {r.request.url}: "
                                        f"{r.status_code} {r.text[:200]}")

    in_threads(client, 8)
    assert not failures, failures[:5]
    assert_link_invariant(api, pid)
    listed_tasks = {t["id"]: t for t in ok(api.get("/api/tasks", params={"projectId": pid}))}
    for task in listed_tasks.values():
        seen, current = set(), task["id"]
        while current in listed_tasks and listed_tasks[current]["parentId"] is not None:
            assert current not in seen, f"parent cycle through {current}"
            seen.add(current)
            current = listed_tasks[current]["parentId"]
        assert_file_matches(srv.data_dir, "task", task)
    for session in ok(api.get("/api/sessions", params={"projectId": pid})):
        assert_file_matches(srv.data_dir, "session", session)


def test_long_lists_and_same_millisecond_ties(api, srv, ws):
    """Hundreds of tasks created at once (many share a millisecond) list by (createdAt, id)
    (§3.5); one session links them all in one request with every event in order (§7.4.2);
    thousands of timeline entries and session events are kept whole on disk."""
    project = new_project(api, name="Long lists")
    pid = project["id"]
    created: list[dict] = []
    guard = threading.Lock()

    def create(_: int) -> None:
        with http_client(srv) as cl:
            for i in range(40):
                task = ok(cl.post("/api/tasks", json={"projectId": pid, "title": f"t{i}"}), 201)
                with guard:
                    created.append(task)

    in_threads(create, 6)
    assert len(created) == 240
    order = [t["id"] for t in sorted(created, key=lambda t: (t["createdAt"], t["id"]))]
    assert [t["id"] for t in ok(api.get("/api/tasks", params={"projectId": pid}))] == order
    assert [t["id"] for t in ok(api.get("/api/tasks", params={"projectId": pid,
                                                              "parentId": "null"}))] == order
    ws.barrier()
    session = new_session(api, pid, order)
    events = ws.barrier()
    assert event_types(events) == ["session:created"] + \
        ["task:session_added", "task:updated"] * len(order)
    assert [e["data"]["taskId"] for e in events[1::2]] == order
    assert session["taskIds"] == order
    kept = list(reversed(order[:120]))
    updated = ok(api.patch(f"/api/sessions/{session['id']}", json={"taskIds": kept}))
    assert updated["taskIds"] == kept
    assert event_types(ws.barrier()) == ["session:updated"] + \
        ["session:task_removed", "task:session_removed", "task:updated"] * 120
    assert_link_invariant(api, pid)
    assert_stored(api, srv.data_dir, "session", session["id"])
    many = ok(api.patch(f"/api/tasks/{order[0]}", json={
        "timeline": [{"message": f"m{i}"} for i in range(3000)]}))
    assert [e.get("message") for e in many["timeline"][-3000:]] == [f"m{i}" for i in
                                                                     range(3000)]
    assert_stored(api, srv.data_dir, "task", order[0])
    logged = ok(api.patch(f"/api/sessions/{session['id']}", json={
        "events": [{"type": "log", "data": {"i": i}} for i in range(3000)]}))
    assert [e["data"]["i"] for e in logged["events"]] == list(range(3000))
    assert_stored(api, srv.data_dir, "session", session["id"])


# ------------------------------------------------------------------ configuration (§2)
BAD_SETTINGS = [("PORT", "0"), ("PORT", "65536"), ("PORT", "abc"), ("LOG_LEVEL", "verbose"),
                ("DATABASE_TYPE", "mysql"), ("DATABASE_TYPE", "postgres"),
                ("MANIFEST_GENERATOR", "magic"), ("NODE_ENV", "staging")]


def test_invalid_settings_abort_start_up_with_a_message(tmp_path):
    """§2: a bad port, an invalid enumerated value or postgres without DATABASE_URL aborts
    start-up (nonzero exit, a message naming the variable, nothing created)."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("MAESTRO_") and k != "DATABASE_URL"}
    procs = []
    for i, (name, value) in enumerate(BAD_SETTINGS):
        env = dict(base, PORT=str(free_port()), HOST="127.0.0.1",
                   DATA_DIR=str(tmp_path / f"d{i}"), SESSION_DIR=str(tmp_path / f"s{i}"))
        env[name] = value
        procs.append((name, value, subprocess.Popen(
            [sys.executable, "-m", "maestro", "serve"], env=env, cwd=str(ROOT),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    for name, value, proc in procs:
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"{name}={value}: the server started instead of refusing")
        assert proc.returncode != 0, (name, value)
        assert name.encode() in out, (name, value, out[-500:])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_tilde_paths_and_server_url_reach_storage_and_agents(make_server, tmp_path):
    """§2: `~` expands to the home directory; SERVER_URL is what agents get as
    MAESTRO_SERVER_URL (§9.5)."""
    home = tmp_path / "home"
    home.mkdir()
    srv = make_server(env={"HOME": str(home), "DATA_DIR": "~/mdata", "SESSION_DIR": "~/msess",
                           "SERVER_URL": "http://maestro.test:4100", "MAESTRO_LAUNCHER": "ui"})
    with http_client(srv) as api:
        project = new_project(api, name="Home")
        task = new_task(api, project["id"])
        body = ok(api.post("/api/sessions/spawn", json={"projectId": project["id"],
                                                        "taskIds": [task["id"]]}), 201)
    assert (home / "mdata" / "projects" / f"{project['id']}.json").is_file()
    assert (home / "mdata" / "tasks" / project["id"] / f"{task['id']}.json").is_file()
    assert body["manifestPath"] == str(home / "msess" / body["sessionId"] / "manifest.json")
    assert Path(body["manifestPath"]).is_file()
    assert body["session"]["env"]["MAESTRO_SERVER_URL"] == "http://maestro.test:4100"
    assert not (srv.tmp / "data").exists()


# ------------------------------------------------------------------ a hand-written directory
P = "proj_1706789123456_handmade1"
LOADED_TASKS = [
    # (id, createdAt, parentId or absent, status)
    ("task_1706790000300_zzzzzzzzz", 1706790000300, None, "pending"),
    ("task_1706790000100_mmmmmmmmm", 1706790000100, None, "pending"),
    ("task_1706790000100_bbbbbbbbb", 1706790000100, "task_1706790000300_zzzzzzzzz", "pending"),
    ("task_1706790000200_aaaaaaaaa", 1706790000200, "task_1706790000300_zzzzzzzzz", "pending"),
    ("task_1706790000100_yyyyyyyyy", 1706790000100, "task_1706790000300_zzzzzzzzz", "pending"),
]
LOADED_SESSIONS = [
    ("sess_1706792000000_zzzzzzzzz", 1706792000000, "running"),
    ("sess_1706791000000_ccccccccc", 1706791000000, "completed"),
    ("sess_1706792000000_aaaaaaaaa", 1706792000000, "spawning"),
    ("sess_1706791000000_xxxxxxxxx", 1706791000000, "running"),
]
RICH = "task_1706790000123_richtask1"


def _write(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    """A data directory written by hand, files in an order unrelated to creation order."""
    srv = ServerProcess(tmp_path_factory.mktemp("handmade"), {"MAESTRO_LAUNCHER": "ui"})
    data = srv.data_dir
    _write(data / "projects" / f"{P}.json",
           {"id": P, "name": "Handmade", "workingDir": "/work/shop", "description": "",
            "createdAt": 1706789123456, "updatedAt": 1706789123456})
    first = LOADED_TASKS[0][0]
    for tid, created, parent, status in LOADED_TASKS:
        _write(data / "tasks" / P / f"{tid}.json",
               {"id": tid, "projectId": P, "parentId": parent, "title": tid[-9:],
                "description": "", "status": status, "priority": "medium",
                "sessionIds": [s for s, _, _ in LOADED_SESSIONS] if tid == first else [],
                "timeline": [], "createdAt": created, "updatedAt": created})
    # A task of another revision: no parentId key, no description, its own acceptance
    # criteria, metadata and dependencies, a priority outside the enum.
    _write(data / "tasks" / P / f"{RICH}.json",
           {"id": RICH, "projectId": P, "title": "Rich", "status": "todo",
            "priority": "urgent", "acceptanceCriteria": ["Logs in", "Logs out"],
            "metadata": {"area": "auth"}, "dependencies": [first],
            "createdAt": 1706790000123, "updatedAt": 1706790000123})
    for sid, started, status in LOADED_SESSIONS:
        _write(data / "sessions" / f"{sid}.json",
               {"id": sid, "projectId": P, "taskIds": [first], "name": sid[-9:],
                "status": status, "env": {}, "events": [], "startedAt": started,
                "lastActivity": started, "completedAt": None, "hostname": "h",
                "platform": "linux"})
    _write(data / "sessions" / "sess_1706793000000_nulltasks.json",
           {"id": "sess_1706793000000_nulltasks", "projectId": P, "taskIds": None,
            "name": "null task ids", "status": "running", "env": {}, "events": [],
            "startedAt": 1706793000000, "lastActivity": 1706793000000, "completedAt": None})
    srv.start()
    try:
        with http_client(srv) as api:
            yield srv, api
    finally:
        srv.stop()


def test_loaded_lists_are_in_creation_order_with_ties_by_id(handmade):
    """§3.5: projects and tasks by createdAt, sessions by startedAt, ties by id — for whole
    lists and for every filter, whatever the order of the files."""
    _, api = handmade

    def ids(path, **params):
        return [e["id"] for e in ok(api.get(path, params=params))]

    by_created = [t for t, _, _, _ in sorted(LOADED_TASKS, key=lambda t: (t[1], t[0]))]
    children = [t for t, _, parent, _ in sorted(LOADED_TASKS, key=lambda t: (t[1], t[0]))
                if parent]
    expected_tasks = sorted(by_created + [RICH],
                            key=lambda t: (int(t.split("_")[1]), t))
    assert ids("/api/tasks") == expected_tasks
    assert ids("/api/tasks", projectId=P) == expected_tasks
    assert ids("/api/tasks", status="pending") == by_created
    assert ids("/api/tasks", parentId=LOADED_TASKS[0][0]) == children
    assert ids(f"/api/tasks/{LOADED_TASKS[0][0]}/children") == children
    roots = [t for t in ids("/api/tasks", parentId="null") if t != RICH]
    assert roots == [t for t in by_created if t not in children]
    by_started = [s for s, _, _ in sorted(LOADED_SESSIONS, key=lambda s: (s[1], s[0]))]
    everything = by_started + ["sess_1706793000000_nulltasks"]
    assert ids("/api/sessions") == everything
    assert ids("/api/sessions", projectId=P) == everything
    assert ids("/api/sessions", taskId=LOADED_TASKS[0][0]) == by_started
    assert ids("/api/sessions", status="running") == [
        s for s in everything if s.endswith(("xxxxxxxxx", "zzzzzzzzz", "nulltasks"))]
    assert ids("/api/sessions", active="true") == [
        s for s in everything if not s.endswith("ccccccccc")]


def test_manifest_of_loaded_tasks_carries_what_they_hold(handmade):
    """§9.6 TaskData: acceptance criteria and metadata of the task, description "" when absent,
    parentId only when the key exists, dependencies as stored, priority only when the schema
    knows it, createdAt as ISO-8601 with milliseconds."""
    srv, api = handmade
    first = LOADED_TASKS[0][0]
    body = ok(api.post("/api/sessions/spawn", json={"projectId": P, "taskIds": [RICH, first]}),
              201)
    manifest = json.loads(Path(body["manifestPath"]).read_text())
    rich, plain = manifest["tasks"]
    assert rich == {"id": RICH, "title": "Rich", "description": "",
                    "acceptanceCriteria": ["Logs in", "Logs out"], "projectId": P,
                    "createdAt": "2024-02-01T12:20:00.123Z", "dependencies": [first],
                    "metadata": {"area": "auth"}}
    assert plain["parentId"] is None and plain["priority"] == "medium"
    assert plain["acceptanceCriteria"] == ["Task completion as described"]
    assert plain["createdAt"] == "2024-02-01T12:20:00.300Z"
    assert manifest["session"]["workingDirectory"] == "/work/shop"
    # Unknown keys of the loaded task survive the link that spawn made (§4.9).
    stored = get(api, "task", RICH)
    assert stored["acceptanceCriteria"] == ["Logs in", "Logs out"]
    assert stored["priority"] == "urgent" and stored["status"] == "todo"
    assert "parentId" not in stored
    assert_file_matches(srv.data_dir, "task", stored)


def test_patch_task_ids_replaces_a_null_list_read_from_disk(handmade):
    _, api = handmade
    sid = "sess_1706793000000_nulltasks"
    updated = ok(api.patch(f"/api/sessions/{sid}", json={"taskIds": []}))
    assert updated["taskIds"] == []


# ------------------------------------------------------------------ browsers (§3.4)
def test_credentials_header_only_when_configured(api, make_server):
    origin = {"Origin": "http://localhost:5173"}
    plain = api.get("/api/projects", headers=origin)
    assert plain.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert "access-control-allow-credentials" not in plain.headers
    srv = make_server(env={"CORS_CREDENTIALS": "true", "CORS_ORIGINS": "https://team.example/"})
    team = {"Origin": "https://team.example"}
    got = httpx.get(srv.url + "/api/projects", headers=team)
    pre = httpx.options(srv.url + "/api/projects",
                        headers={**team, "Access-Control-Request-Method": "POST"})
    for resp in (got, pre):
        assert resp.headers["access-control-allow-origin"] == "https://team.example"
        assert resp.headers["access-control-allow-credentials"] == "true"
    evil = httpx.get(srv.url + "/api/projects", headers={"Origin": "https://evil.example"})
    assert not [h for h in evil.headers if h.lower().startswith("access-control-")]


# ------------------------------------------------------------------ discrepancies once found
@pytest.mark.parametrize("route", ["session-metadata", "session-event", "session-timeline"])
def test_deeply_nested_free_form_values_are_never_a_server_error(api, srv, ws, route):
    project = new_project(api, name="Deep")
    session = new_session(api, project["id"], [])
    deep = '{"a":' * 1000 + "1" + "}" * 1000
    new_session_body = f'{{"projectId": "{project["id"]}", "taskIds": [], "metadata": {deep}}}'
    path, body = {
        "session-metadata": ("/api/sessions", new_session_body),
        "session-event": (f"/api/sessions/{session['id']}/events",
                          f'{{"type": "log", "data": {deep}}}'),
        "session-timeline": (f"/api/sessions/{session['id']}/timeline",
                             f'{{"message": "m", "metadata": {deep}}}'),
    }[route]
    ws.barrier()
    snap = Snapshot(api, srv)
    resp = send_raw(api, "POST", path, body)
    assert resp.status_code < 500, resp.text[:300]
    if resp.status_code >= 400:
        assert_error(resp, resp.status_code, "VALIDATION_ERROR")
        snap.assert_unchanged()
        assert ws.barrier() == []


def test_cors_disabled_sends_no_cors_headers(make_server):
    srv = make_server(env={"CORS_ENABLED": "false"})
    origin = {"Origin": "http://localhost:5173"}
    got = httpx.get(srv.url + "/api/projects", headers=origin)
    assert got.status_code == 200
    pre = httpx.options(srv.url + "/api/projects",
                        headers={**origin, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
    for resp in (got, pre):
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_a_session_created_in_a_final_status_starts_with_completed_at_null(api, project_id,
                                                                           status):
    session = new_session(api, project_id, [], status=status)
    assert session["completedAt"] is None


def test_timeline_session_id_over_128_characters_is_refused(api, srv, ws, project_id):
    task = new_task(api, project_id)
    ws.barrier()
    snap = Snapshot(api, srv)
    resp = api.post(f"/api/tasks/{task['id']}/timeline",
                    json={"message": "m", "sessionId": "s" * 129})
    assert_error(resp, 400, "VALIDATION_ERROR")
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_a_whitespace_message_is_a_non_empty_string(api, project_id):
    task = new_task(api, project_id)
    updated = ok(api.post(f"/api/tasks/{task['id']}/timeline", json={"message": "  "}))
    assert updated["timeline"][-1]["message"] == "  "


def test_an_agent_cannot_change_other_sessions_through_its_task_session_ids(api, srv, ws):
    project = new_project(api, name="Agent scope")
    elsewhere = new_project(api, name="Elsewhere")
    mine = new_task(api, project["id"], title="mine")
    neighbour = new_session(api, project["id"], [])
    foreign = new_session(api, elsewhere["id"], [])
    me, token = agent_token(api, ws, project["id"], mine["id"])
    agent = {"Authorization": f"Bearer {token}"}
    # The token works for what the agent owns.
    ok(api.post(f"/api/tasks/{mine['id']}/timeline", json={"message": "m"}, headers=agent))
    ws.barrier()
    snap = Snapshot(api, srv)
    for others in ([neighbour["id"]], [foreign["id"]]):
        resp = api.patch(f"/api/tasks/{mine['id']}", json={"sessionIds": [me, *others]},
                         headers=agent)
        assert_error(resp, 403, "FORBIDDEN")
    snap.assert_unchanged()
    assert ws.barrier() == []


def test_an_agent_stream_hears_every_event_of_its_project(api, srv, ws):
    project = new_project(api, name="Agent stream")
    mine, other = new_task(api, project["id"]), new_task(api, project["id"])
    _, token = agent_token(api, ws, project["id"], mine["id"])
    with WsClient(f"{srv.ws_url}?token={token}") as agent_ws:
        new_session(api, project["id"], [other["id"]])
        ok(api.post("/api/sessions/spawn", json={"projectId": project["id"],
                                                "taskIds": [other["id"]]}), 201)
        heard_by_user = event_types(ws.barrier())
        heard_by_agent = agent_ws.barrier()
    assert event_types(heard_by_agent) == heard_by_user
    assert "mst." not in json.dumps(heard_by_agent)  # no agent token reaches another agent
