"""The WebSocket event stream (SPEC §10, §7.0, extensions E7 and E8): the envelope, the exact
events of every mutating endpoint in order, ping/pong, ignored client frames, several clients,
/ws-status, and a client that never reads."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time

import pytest
from helpers import (
    WsClient,
    assert_envelope,
    event_types,
    get,
    http_client,
    new_project,
    new_session,
    new_task,
    ok,
    wait_until,
)
from server_fixtures import server_fixture


# A client whose oldest unsent event waited over 1 s is dropped (default 10 s).
srv = server_fixture(env={"MAESTRO_WS_LAG": "1"})


@pytest.fixture
def ws(srv):
    """A WebSocket client of its own for each test (some are dropped on purpose)."""
    with WsClient(srv.ws_url) as client:
        yield client


def status(api) -> dict:
    return ok(api.get("/ws-status"))


def no_clients_left(api) -> int:
    """Wait until the clients of earlier tests are gone (their close is seen asynchronously)."""
    wait_until(lambda: status(api)["connectedClients"] == 0, what="earlier clients to go")
    return 0


# ------------------------------------------------------------------ every endpoint
def test_every_mutating_endpoint_emits_exactly_its_events(api, ws):
    """One request after another, the events each one produced, in the order of §7 and §10.4;
    the first event of a request is always its primary event."""
    seen: list[dict] = []

    def step(method, url, body, expected_types, status_code=200):
        resp = api.request(method, url, json=body)
        result = ok(resp, status_code)
        events = ws.barrier()
        assert event_types(events) == expected_types, (method, url)
        for event in events:
            assert_envelope(event)
        seen.extend(events)
        return result, events

    project, ev = step("POST", "/api/projects", {"name": "WS"}, ["project:created"], 201)
    assert ev[0]["data"] == project
    project, ev = step("PUT", f"/api/projects/{project['id']}", {"description": "d"},
                       ["project:updated"])
    assert ev[0]["data"] == project == get(api, "project", project["id"])

    pid = project["id"]
    t1, ev = step("POST", "/api/tasks", {"projectId": pid, "title": "one"}, ["task:created"], 201)
    assert ev[0]["data"] == t1
    t2, _ = step("POST", "/api/tasks", {"projectId": pid, "title": "two"}, ["task:created"], 201)
    t1, ev = step("PATCH", f"/api/tasks/{t1['id']}", {"status": "in_progress"}, ["task:updated"])
    assert ev[0]["data"] == t1 == get(api, "task", t1["id"])
    t1, ev = step("POST", f"/api/tasks/{t1['id']}/timeline", {"message": "m"}, ["task:updated"])
    assert ev[0]["data"] == t1 == get(api, "task", t1["id"])

    session, ev = step("POST", "/api/sessions", {"projectId": pid, "taskIds": [t1["id"]]},
                       ["session:created", "task:session_added", "task:updated"], 201)
    sid = session["id"]
    assert ev[0]["data"] == session
    assert ev[1]["data"] == {"taskId": t1["id"], "sessionId": sid}
    assert ev[2]["data"] == get(api, "task", t1["id"])

    session, ev = step("POST", f"/api/sessions/{sid}/tasks/{t2['id']}", None,
                       ["session:task_added", "task:session_added", "session:updated",
                        "task:updated"])
    assert ev[0]["data"] == {"sessionId": sid, "taskId": t2["id"]}
    assert ev[1]["data"] == {"taskId": t2["id"], "sessionId": sid}
    assert ev[2]["data"] == session
    assert ev[3]["data"] == get(api, "task", t2["id"])

    session, ev = step("DELETE", f"/api/sessions/{sid}/tasks/{t2['id']}", None,
                       ["session:task_removed", "task:session_removed", "session:updated",
                        "task:updated"])
    assert ev[0]["data"] == {"sessionId": sid, "taskId": t2["id"]}
    assert ev[1]["data"] == {"taskId": t2["id"], "sessionId": sid}
    assert ev[2]["data"] == session
    assert ev[3]["data"] == get(api, "task", t2["id"])

    session, ev = step("PATCH", f"/api/sessions/{sid}", {"status": "completed"},
                       ["session:updated"])
    assert ev[0]["data"] == session
    session, ev = step("PATCH", f"/api/sessions/{sid}", {"taskIds": [t2["id"]]},
                       ["session:updated",
                        "session:task_removed", "task:session_removed", "task:updated",
                        "session:task_added", "task:session_added", "task:updated"])
    assert ev[0]["data"] == session
    session, ev = step("POST", f"/api/sessions/{sid}/events", {"type": "log"},
                       ["session:updated"])
    assert ev[0]["data"] == session
    session, ev = step("POST", f"/api/sessions/{sid}/timeline", {"message": "m"},
                       ["session:updated"])
    assert ev[0]["data"] == session

    _, ev = step("DELETE", f"/api/sessions/{sid}", None,
                 ["session:deleted", "task:session_removed", "task:updated"])
    assert ev[0]["data"] == {"id": sid}
    assert ev[1]["data"] == {"taskId": t2["id"], "sessionId": sid}
    assert ev[2]["data"] == get(api, "task", t2["id"])

    for t in (t1, t2):
        _, ev = step("DELETE", f"/api/tasks/{t['id']}", None, ["task:deleted"])
        assert ev[0]["data"] == {"id": t["id"]}
    _, ev = step("DELETE", f"/api/projects/{pid}", None, ["project:deleted"])
    assert ev[0]["data"] == {"id": pid}

    timestamps = [e["timestamp"] for e in seen]
    assert timestamps == sorted(timestamps)
    assert not {t for t in event_types(seen) if t.startswith("subtask:")}


def test_reads_and_refusals_emit_nothing(api, ws):
    project = new_project(api, name="Quiet")
    ws.barrier()
    for path in ("/health", "/ws-status", "/api/projects", "/api/tasks", "/api/sessions",
                 f"/api/projects/{project['id']}", "/api/nothing"):
        api.get(path)
    api.post("/api/tasks", json={"projectId": project["id"]})
    api.patch("/api/tasks/task_0_missing", json={"title": "x"})
    api.post("/api/projects", content=b"{", headers={"Content-Type": "application/json"})
    assert ws.barrier() == []


def test_no_op_link_changes_emit_nothing(api, ws):
    project = new_project(api, name="No-op")
    task = new_task(api, project["id"])
    session = new_session(api, project["id"], [task["id"]])
    other = new_task(api, project["id"])
    ws.barrier()
    ok(api.post(f"/api/sessions/{session['id']}/tasks/{task['id']}"))
    ok(api.delete(f"/api/sessions/{session['id']}/tasks/{other['id']}"))
    assert ws.barrier() == []


# ------------------------------------------------------------------ clients
@pytest.mark.parametrize("path", ["/", "/ws"])
def test_both_paths_stream_events(srv, api, path):
    with WsClient(f"ws://127.0.0.1:{srv.port}{path}") as client:
        project = new_project(api, name=f"path {path}")
        [event] = client.barrier()
        assert event["type"] == "project:created" and event["data"] == project


def test_two_clients_receive_everything_in_the_same_order(srv, api):
    with WsClient(srv.ws_url) as first, WsClient(f"ws://127.0.0.1:{srv.port}/ws") as second:
        project = new_project(api, name="Pair")
        tasks = [new_task(api, project["id"], title=f"p{i}")["id"] for i in range(5)]
        session = new_session(api, project["id"], tasks[:3])
        ok(api.patch(f"/api/sessions/{session['id']}", json={"taskIds": tasks[2:]}))
        ok(api.delete(f"/api/sessions/{session['id']}"))
        a, b = first.barrier(), second.barrier()
        assert a == b
        assert len(a) == 1 + 5 + (1 + 2 * 3) + (1 + 3 * 2 + 3 * 2) + (1 + 2 * 3)


def test_events_of_concurrent_requests_never_interleave(srv, api, ws):
    project = new_project(api, name="Concurrent")
    tasks = [new_task(api, project["id"], title=f"c{i}")["id"] for i in range(6)]
    ws.barrier()
    errors: list[BaseException] = []

    def create(i):
        try:
            with http_client(srv) as client:
                body = {"projectId": project["id"], "taskIds": [tasks[i % 6], tasks[(i + 1) % 6]]}
                ok(client.post("/api/sessions", json=body), 201)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    events = ws.barrier()
    assert len(events) == 16 * 5
    for i in range(0, len(events), 5):
        group = events[i:i + 5]
        assert event_types(group) == ["session:created", "task:session_added", "task:updated",
                                      "task:session_added", "task:updated"]
        sid = group[0]["data"]["id"]
        assert group[1]["data"]["sessionId"] == sid == group[3]["data"]["sessionId"]
        assert [group[1]["data"]["taskId"], group[3]["data"]["taskId"]] == \
            group[0]["data"]["taskIds"]


# ------------------------------------------------------------------ ping / pong, client frames
def test_ping_is_answered_with_pong(ws):
    before = int(time.time() * 1000)
    ws.send(json.dumps({"type": "ping"}))
    pong = ws.next()
    assert pong["type"] == "pong"
    assert isinstance(pong["timestamp"], int)
    assert before - 5 <= pong["timestamp"] <= int(time.time() * 1000) + 5
    ws.send(json.dumps({"type": "ping", "id": 7}))
    assert ws.next()["type"] == "pong"


def test_unparsable_and_unknown_frames_are_ignored(api, ws):
    for frame in ("not json", "{", "", "[1, 2]", '"ping"', "null", '{"type": "hello"}',
                  '{"type": "PING"}', '{"event": "ping"}', b"\x00\xff binary"):
        ws.send(frame)
    # The next message is the answer to this ping: nothing was answered before it.
    ws.send(json.dumps({"type": "ping"}))
    assert ws.next()["type"] == "pong"
    assert not ws.closed.is_set()
    project = new_project(api, name="Still streaming")
    assert ws.barrier()[0]["data"] == project


# ------------------------------------------------------------------ /ws-status
def test_ws_status_counts_open_clients(srv, api):
    baseline = no_clients_left(api)
    with WsClient(srv.ws_url), WsClient(f"ws://127.0.0.1:{srv.port}/ws"):
        now = wait_until(lambda: (s := status(api))["connectedClients"] == baseline + 2 and s,
                         what="two more clients")
        assert set(now) == {"connectedClients", "clients"}
        assert len(now["clients"]) == now["connectedClients"]
        for client in now["clients"]:
            assert client == {"readyState": 1, "readyStateText": "OPEN"}
    wait_until(lambda: status(api)["connectedClients"] == baseline, what="clients to go")


# ------------------------------------------------------------------ a client that never reads
def _stuck_client(port: int) -> socket.socket:
    """A raw TCP client that completes the WebSocket handshake, then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "connection closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_a_client_that_never_reads_delays_nobody_and_is_dropped(srv, api):
    baseline = no_clients_left(api)
    stuck = _stuck_client(srv.port)
    try:
        with WsClient(srv.ws_url) as reader:
            wait_until(lambda: status(api)["connectedClients"] == baseline + 2,
                       what="both clients connected")
            project = new_project(api, name="Flood")
            tasks = [new_task(api, project["id"], title=f"flood {i}")["id"] for i in range(300)]
            session = new_session(api, project["id"], [])
            expected = 1 + 300 + 1
            rounds = 0
            # Each round links and unlinks every task: 2 * (1 + 3 * 300) events. Keep going
            # until the server gives up on the stuck client (bounded by the round limit).
            while status(api)["connectedClients"] > baseline + 1 and rounds < 40:
                ok(api.patch(f"/api/sessions/{session['id']}", json={"taskIds": tasks}))
                ok(api.patch(f"/api/sessions/{session['id']}", json={"taskIds": []}))
                expected += 2 * (1 + 3 * 300)
                rounds += 1
            wait_until(lambda: status(api)["connectedClients"] == baseline + 1, timeout=30,
                       what="the stuck client to be dropped")
            # The reading client got every single event, in order.
            events = reader.barrier(timeout=60)
            assert len(events) == expected
            assert events[0]["type"] == "project:created"
            assert event_types(events[-901:]) == ["session:updated"] + [
                "session:task_removed", "task:session_removed", "task:updated"] * 300
            # The server still serves new clients and requests normally.
            with WsClient(srv.ws_url) as late:
                ok(api.put(f"/api/projects/{project['id']}", json={"description": "after"}))
                assert event_types(late.barrier()) == ["project:updated"]
    finally:
        stuck.close()
