"""Agent identities through the real server: each spawned session gets its own token (kept only
as a hash); with it an agent reads its own project, changes only its own session and tasks (and
their children), spawns only as an orchestrator, and loses access when its session ends."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import signal
import threading
import time

import httpx
import psycopg
import pytest
from helpers import wait_for_item
from test_postgres_server import database, pg_env  # noqa: F401 - the PostgreSQL fixture
from websockets.sync.client import connect

USER_TOKEN = "user-token-for-identity-tests-0123456789"


class Events:
    """A WebSocket listener collecting every envelope in the background."""

    def __init__(self, url: str):
        self.ws = connect(url, open_timeout=5)
        self.items: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for message in self.ws:
                self.items.put(json.loads(message))
        except Exception:
            pass

    def until(self, predicate, timeout=10.0):
        seen: list = []
        item = wait_for_item(lambda left: self.items.get(timeout=left), predicate, timeout, seen,
                             "event")
        return item, seen

    def drain(self, settle: float = 0.5) -> list:
        import time
        time.sleep(settle)
        out = []
        while not self.items.empty():
            out.append(self.items.get())
        return out

    def close(self):
        self.ws.close()


@pytest.fixture
def world(make_server):
    """A token-protected server with the `ui` launcher (nothing is started), two projects, and
    a worker spawned for task A1 (child A1c) of project A."""
    srv = make_server(env={"MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_LAUNCHER": "ui"})
    user = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {USER_TOKEN}"},
                        timeout=10)
    listener = Events(srv.ws_url + f"?token={USER_TOKEN}")
    a = user.post("/api/projects", json={"name": "A"}).json()
    b = user.post("/api/projects", json={"name": "B"}).json()
    a1 = user.post("/api/tasks", json={"projectId": a["id"], "title": "A1"}).json()
    a1c = user.post("/api/tasks", json={"projectId": a["id"], "title": "A1 child",
                                        "parentId": a1["id"]}).json()
    a2 = user.post("/api/tasks", json={"projectId": a["id"], "title": "A2"}).json()
    b1 = user.post("/api/tasks", json={"projectId": b["id"], "title": "B1"}).json()
    spawned = user.post("/api/sessions/spawn", json={"projectId": a["id"],
                                                     "taskIds": [a1["id"]]})
    assert spawned.status_code == 201, spawned.text
    sid = spawned.json()["sessionId"]
    request, _ = listener.until(lambda e: e["type"] == "session:spawn_request"
                                and e["data"]["session"]["id"] == sid)
    token = request["data"]["envVars"]["MAESTRO_SESSION_TOKEN"]
    agent = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"},
                         timeout=10)
    yield {"srv": srv, "user": user, "agent": agent, "token": token, "sid": sid,
           "a": a, "b": b, "a1": a1, "a1c": a1c, "a2": a2, "b1": b1, "listener": listener}
    listener.close()
    user.close()
    agent.close()


def test_token_is_handed_to_the_agent_and_stored_only_as_a_hash(world):
    srv, token, sid = world["srv"], world["token"], world["sid"]
    assert token.startswith("mst.") and sid in token
    session = world["user"].get(f"/api/sessions/{sid}").json()
    assert "MAESTRO_SESSION_TOKEN" not in session["env"]
    for root in (srv.data_dir, srv.session_dir):
        for dirpath, _, files in os.walk(root):
            for name in files:
                try:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        assert token.encode() not in f.read(), name
                except FileNotFoundError:  # journal.old, gone once its checkpoint is done
                    continue
    stored = (srv.session_dir / sid / "token.sha256").read_text().split()[0]
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert token not in srv.log()


def test_agent_reads_only_its_own_project(world):
    agent, a, b = world["agent"], world["a"], world["b"]
    assert [p["id"] for p in agent.get("/api/projects").json()] == [a["id"]]
    assert agent.get(f"/api/projects/{a['id']}").status_code == 200
    assert agent.get(f"/api/projects/{b['id']}").status_code == 403
    tasks = agent.get("/api/tasks").json()
    assert {t["projectId"] for t in tasks} == {a["id"]} and len(tasks) == 3
    assert agent.get("/api/tasks", params={"projectId": b["id"]}).status_code == 403
    r = agent.get(f"/api/tasks/{world['b1']['id']}")
    assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    assert agent.get(f"/api/tasks/{world['a2']['id']}").status_code == 200
    assert [s["id"] for s in agent.get("/api/sessions").json()] == [world["sid"]]


def test_agent_changes_only_its_tasks_and_their_children(world):
    agent, user = world["agent"], world["user"]
    a1, a1c, a2, b1 = world["a1"]["id"], world["a1c"]["id"], world["a2"]["id"], world["b1"]["id"]
    assert agent.patch(f"/api/tasks/{a1}", json={"status": "in_progress"}).status_code == 200
    assert agent.patch(f"/api/tasks/{a1c}", json={"priority": "high"}).status_code == 200
    assert agent.post(f"/api/tasks/{a1}/timeline", json={"message": "half"}).status_code == 200
    before = user.get(f"/api/tasks/{a2}").json()
    for method, path, body in [("PATCH", f"/api/tasks/{a2}", {"status": "completed"}),
                               ("POST", f"/api/tasks/{a2}/timeline", {"message": "x"}),
                               ("PATCH", f"/api/tasks/{b1}", {"status": "completed"}),
                               ("DELETE", f"/api/tasks/{a1}", None),
                               ("PATCH", f"/api/tasks/{a1c}", {"parentId": a2})]:
        r = agent.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"] is True and r.json()["code"] == "FORBIDDEN"
    assert user.get(f"/api/tasks/{a2}").json() == before
    child = agent.post("/api/tasks", json={"projectId": world["a"]["id"], "title": "sub",
                                           "parentId": a1c})
    assert child.status_code == 201
    assert agent.patch(f"/api/tasks/{child.json()['id']}",
                       json={"status": "completed"}).status_code == 200
    assert agent.post("/api/tasks", json={"projectId": world["a"]["id"],
                                          "title": "root"}).status_code == 403
    assert agent.post("/api/tasks", json={"projectId": world["b"]["id"], "title": "x",
                                          "parentId": b1}).status_code == 403


def test_agent_changes_only_its_own_session(world):
    agent, user, sid, a = world["agent"], world["user"], world["sid"], world["a"]
    other = user.post("/api/sessions", json={"projectId": a["id"],
                                             "taskIds": [world["a2"]["id"]]}).json()
    assert agent.patch(f"/api/sessions/{sid}", json={"status": "running"}).status_code == 200
    assert agent.post(f"/api/sessions/{sid}/events", json={"type": "log"}).status_code == 200
    assert agent.post(f"/api/sessions/{sid}/timeline",
                      json={"message": "working"}).status_code == 200
    for method, path, body in [
        ("PATCH", f"/api/sessions/{other['id']}", {"status": "failed"}),
        ("POST", f"/api/sessions/{other['id']}/events", {"type": "log"}),
        ("DELETE", f"/api/sessions/{other['id']}", None),
        ("DELETE", f"/api/sessions/{sid}", None),
        ("PATCH", f"/api/sessions/{sid}", {"taskIds": [world["a1"]["id"], world["a2"]["id"]]}),
        ("POST", f"/api/sessions/{sid}/tasks/{world['a2']['id']}", None),
        ("POST", "/api/sessions", {"projectId": a["id"], "taskIds": []}),
        ("POST", "/api/projects", {"name": "mine"}),
        ("PUT", f"/api/projects/{a['id']}", {"name": "renamed"}),
        ("DELETE", f"/api/projects/{world['b']['id']}", None),
        ("POST", "/api/sessions/spawn", {"projectId": a["id"], "taskIds": [world["a1"]["id"]]}),
        ("POST", f"/api/sessions/{other['id']}/stop", None),
    ]:
        r = agent.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
    assert user.get(f"/api/sessions/{other['id']}").json()["status"] == "running"
    assert user.get(f"/api/projects/{a['id']}").json()["name"] == "A"


def test_orchestrator_spawns_only_for_its_own_tasks(world):
    user, listener, a = world["user"], world["listener"], world["a"]
    r = user.post("/api/sessions/spawn", json={"projectId": a["id"], "role": "orchestrator",
                                               "taskIds": [world["a2"]["id"]]})
    osid = r.json()["sessionId"]
    event, _ = listener.until(lambda e: e["type"] == "session:spawn_request"
                              and e["data"]["session"]["id"] == osid)
    orch = httpx.Client(base_url=world["srv"].url, timeout=10, headers={
        "Authorization": f"Bearer {event['data']['envVars']['MAESTRO_SESSION_TOKEN']}"})
    sub = orch.post("/api/sessions/spawn", json={"projectId": a["id"],
                                                 "taskIds": [world["a2"]["id"]],
                                                 "spawnedBy": osid})
    assert sub.status_code == 201, sub.text
    sub_id = sub.json()["sessionId"]
    assert user.get(f"/api/sessions/{sub_id}").json()["metadata"]["spawnedBy"] == osid
    assert orch.post("/api/sessions/spawn", json={"projectId": a["id"],
                                                  "taskIds": [world["a1"]["id"]]}).status_code \
        == 403
    assert orch.post("/api/sessions/spawn", json={"projectId": world["b"]["id"],
                                                  "taskIds": [world["b1"]["id"]]}).status_code \
        == 403
    # It may stop the session it spawned, not another.
    r = orch.post(f"/api/sessions/{sub_id}/stop")
    assert r.status_code != 403
    assert orch.post(f"/api/sessions/{world['sid']}/stop").status_code == 403
    orch.close()


def test_secrets_redacted_for_agents_not_for_the_user(world):
    user, agent, a = world["user"], world["agent"], world["a"]
    agent_events = Events(world["srv"].ws_url + f"?token={world['token']}")
    try:
        s = user.post("/api/sessions", json={
            "projectId": a["id"], "taskIds": [],
            "env": {"OPENAI_API_KEY": "sk-very-secret", "PLAIN": "visible"}}).json()
        user.post("/api/tasks", json={"projectId": world["b"]["id"], "title": "hidden B"})
        user.post("/api/tasks", json={"projectId": a["id"], "title": "seen A"})
        assert user.get(f"/api/sessions/{s['id']}").json()["env"]["OPENAI_API_KEY"] == \
            "sk-very-secret"
        seen = agent.get(f"/api/sessions/{s['id']}").json()
        assert seen["env"] == {"OPENAI_API_KEY": "[redacted]", "PLAIN": "visible"}
        listed = {x["id"]: x for x in agent.get("/api/sessions").json()}
        assert listed[s["id"]]["env"]["OPENAI_API_KEY"] == "[redacted]"
        agent_events.until(lambda e: e["type"] == "task:created"
                           and e["data"]["title"] == "seen A")
        got = agent_events.drain(0.3)
        # What the agent's stream carried: its own project only, no secret anywhere.
        raw = json.dumps(got)
        assert "sk-very-secret" not in raw and "hidden B" not in raw
    finally:
        agent_events.close()
    created, _ = world["listener"].until(lambda e: e["type"] == "session:created"
                                         and e["data"]["id"] == s["id"])
    assert created["data"]["env"]["OPENAI_API_KEY"] == "sk-very-secret"


def test_token_stops_working_when_the_session_ends(world):
    user, agent, sid = world["user"], world["agent"], world["sid"]
    assert agent.get("/api/tasks").status_code == 200
    assert user.patch(f"/api/sessions/{sid}", json={"status": "completed"}).status_code == 200
    r = agent.get("/api/tasks")
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
    with pytest.raises(Exception):
        connect(world["srv"].ws_url + f"?token={world['token']}", open_timeout=5).close()


def test_reopening_or_recreating_a_session_never_revives_its_token(world):
    user, agent, sid, a = world["user"], world["agent"], world["sid"], world["a"]
    assert user.patch(f"/api/sessions/{sid}", json={"status": "failed"}).status_code == 200
    assert user.patch(f"/api/sessions/{sid}", json={"status": "running"}).status_code == 200
    assert agent.get("/api/tasks").status_code == 401
    assert not (world["srv"].session_dir / sid / "token.sha256").exists()
    assert user.delete(f"/api/sessions/{sid}").status_code == 200
    b = world["b"]
    again = user.post("/api/sessions", json={"id": sid, "projectId": b["id"], "taskIds": [],
                                             "metadata": {"role": "orchestrator"}})
    assert again.status_code == 201
    assert agent.get(f"/api/projects/{b['id']}").status_code == 401
    assert agent.get("/api/projects").status_code == 401


def test_an_agent_stream_ends_with_its_session(world):
    user, sid, a = world["user"], world["sid"], world["a"]
    stream = Events(world["srv"].ws_url + f"?token={world['token']}")
    try:
        user.put(f"/api/projects/{a['id']}", json={"description": "seen"})
        event, _ = stream.until(lambda e: e["type"] == "project:updated")
        assert event["data"]["description"] == "seen"
        assert user.patch(f"/api/sessions/{sid}", json={"status": "completed"}).status_code == 200
        user.post("/api/tasks", json={"projectId": a["id"], "title": "after the end"})
        user.post("/api/tasks", json={"projectId": a["id"], "title": "after the end 2"})
        later = json.dumps(stream.drain(0.5))
        assert "after the end" not in later
        stream.thread.join(5)
        assert not stream.thread.is_alive(), "the server closes an ended agent's stream"
    finally:
        stream.close()


def test_spawn_refuses_deeply_nested_context(world):
    user, a = world["user"], world["a"]
    deep: dict = {}
    node = deep
    for _ in range(300):
        node["x"] = {}
        node = node["x"]
    r = user.post("/api/sessions/spawn", json={"projectId": a["id"],
                                               "taskIds": [world["a2"]["id"]], "context": deep})
    assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR"


def test_token_stops_working_when_the_session_is_deleted(world):
    user, agent, sid = world["user"], world["agent"], world["sid"]
    assert user.delete(f"/api/sessions/{sid}").status_code == 200
    assert agent.get("/api/projects").status_code == 401


def test_agent_token_works_on_a_server_without_user_token(make_server):
    srv = make_server(env={"MAESTRO_LAUNCHER": "ui"})
    user = httpx.Client(base_url=srv.url, timeout=10)
    listener = Events(srv.ws_url)
    try:
        a = user.post("/api/projects", json={"name": "A"}).json()
        t = user.post("/api/tasks", json={"projectId": a["id"], "title": "t"}).json()
        other = user.post("/api/tasks", json={"projectId": a["id"], "title": "o"}).json()
        sid = user.post("/api/sessions/spawn", json={"projectId": a["id"],
                                                     "taskIds": [t["id"]]}).json()["sessionId"]
        event, _ = listener.until(lambda e: e["type"] == "session:spawn_request")
        token = event["data"]["envVars"]["MAESTRO_SESSION_TOKEN"]
        auth = {"Authorization": f"Bearer {token}"}
        assert user.patch(f"/api/tasks/{t['id']}", json={"status": "blocked"},
                          headers=auth).status_code == 200
        # Presenting the token means acting as the agent, even on an open loopback server.
        assert user.patch(f"/api/tasks/{other['id']}", json={"status": "blocked"},
                          headers=auth).status_code == 403
        assert user.patch(f"/api/sessions/{sid}", json={"status": "running"},
                          headers={"Authorization": "Bearer mst.nope.00"}).status_code == 401
    finally:
        listener.close()
        user.close()


# ------------------------------------------------------------------ revocation survives a crash
def spawned_agent(srv, user: httpx.Client, project_id: str, task_id: str) -> tuple[str, str]:
    """Spawn a session on a `ui` launcher server; returns (session id, the agent's token)."""
    listener = Events(srv.ws_url + f"?token={USER_TOKEN}")
    try:
        r = user.post("/api/sessions/spawn", json={"projectId": project_id, "taskIds": [task_id],
                                                   "role": "orchestrator"})
        assert r.status_code == 201, r.text
        sid = r.json()["sessionId"]
        event, _ = listener.until(lambda e: e["type"] == "session:spawn_request"
                                  and e["data"]["session"]["id"] == sid)
    finally:
        listener.close()
    return sid, event["data"]["envVars"]["MAESTRO_SESSION_TOKEN"]


def crash_during(srv, send, term_after: float | None, kill_after: float) -> None:
    """Run `send` (one request) in a thread and crash the server around it: SIGTERM
    `term_after` seconds after sending (None: once it is answered), then SIGKILL `kill_after`
    seconds later."""
    done = threading.Event()

    def run():
        try:
            send()
        except httpx.HTTPError:
            pass  # the server died under it
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if term_after is None:
        assert done.wait(15), "the request was not answered"
    else:
        time.sleep(term_after)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(kill_after)
    srv.kill()
    thread.join(15)


class Digest:
    """Where a session's token digest is kept: its file under SESSION_DIR, or its row in the
    database (`url`) on PostgreSQL."""

    def __init__(self, srv, sid: str, url: str | None = None):
        self.path = srv.session_dir / sid / "token.sha256"
        self.sid, self.url = sid, url

    def read(self):
        if self.url is None:
            return self.path.read_text() if self.path.exists() else None
        with psycopg.connect(self.url) as conn:
            return conn.execute("SELECT session_id, digest, session_started_at, created_at "
                                "FROM maestro_session_tokens WHERE session_id = %s",
                                (self.sid,)).fetchone()

    def exists(self) -> bool:
        return self.read() is not None

    def write(self, kept) -> None:
        """Put the digest back as it was."""
        if self.url is None:
            self.path.write_text(kept)
            return
        with psycopg.connect(self.url) as conn:
            conn.execute("INSERT INTO maestro_session_tokens (session_id, digest, "
                         "session_started_at, created_at) VALUES (%s, %s, %s, %s)", kept)


def end_crash_and_reopen(srv, rng: random.Random, how: str, term_after: float | None,
                         b_project: str, url: str | None = None) -> bool:
    """One try: spawn an agent, end its session (`how`: completed, failed or delete) while the
    server is being stopped and killed, put the token digest back if the crash removed it (as
    a power loss may undo a removal that had not reached the disk), restart, then reopen or
    recreate the session. The token must be dead exactly when the end was committed. Returns
    whether it was."""
    headers = {"Authorization": f"Bearer {USER_TOKEN}"}
    with httpx.Client(base_url=srv.url, headers=headers, timeout=10, trust_env=False) as user:
        project = user.post("/api/projects", json={"name": "crash"}).json()
        task = user.post("/api/tasks", json={"projectId": project["id"], "title": "t"}).json()
        sid, token = spawned_agent(srv, user, project["id"], task["id"])
        digest = Digest(srv, sid, url)
        kept = digest.read()
        assert httpx.get(srv.url + "/api/tasks", headers={"Authorization": f"Bearer {token}"},
                         timeout=10).status_code == 200

    def send():
        with httpx.Client(base_url=srv.url, headers=headers, timeout=10) as client:
            if how == "delete":
                client.delete(f"/api/sessions/{sid}")
            else:
                client.patch(f"/api/sessions/{sid}", json={"status": how})

    crash_during(srv, send, term_after, rng.uniform(0.0, 0.01))
    if not digest.exists():
        digest.write(kept)
    srv.start()
    agent = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=srv.url, headers=headers, timeout=10, trust_env=False) as user:
        found = user.get(f"/api/sessions/{sid}")
        ended = found.status_code == 404 if how == "delete" \
            else found.json()["status"] == how
        if not ended:  # the crash came first: the session and its token still stand
            assert found.status_code == 200 and found.json()["status"] == "spawning"
            assert user.get("/api/tasks", headers=agent).status_code == 200
            return False
        if url is None or how != "delete":
            assert not digest.exists(), "the start-up sweep removes the digest of an ended " \
                "session"
        # On PostgreSQL the digest of a session the database does not hold may stay a while
        # (another server may be about to create it): bound to the deleted session's
        # startedAt, it never stands for the session created again below.
        if how == "delete":
            again = user.post("/api/sessions", json={
                "id": sid, "projectId": b_project, "taskIds": [],
                "metadata": {"role": "orchestrator", "spawnSource": "ui"}})
            assert again.status_code == 201, again.text
        else:
            reopened = user.patch(f"/api/sessions/{sid}", json={"status": "running"})
            assert reopened.status_code == 200 and reopened.json()["tokenRevokedAt"]
        for path in ("/api/tasks", f"/api/sessions/{sid}", "/api/projects"):
            r = user.get(path, headers=agent)
            assert r.status_code == 401, (how, path, r.text)
        with pytest.raises(Exception):
            connect(srv.ws_url + f"?token={token}", open_timeout=5).close()
        return True


def test_a_crash_never_revives_an_ended_sessions_token(make_server):
    srv = make_server(env={"MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_LAUNCHER": "ui"})
    rng = random.Random()
    with httpx.Client(base_url=srv.url, timeout=10, trust_env=False,
                      headers={"Authorization": f"Bearer {USER_TOKEN}"}) as user:
        other = user.post("/api/projects", json={"name": "B"}).json()["id"]
    ways = ["completed", "failed", "delete"] * 3
    committed = [end_crash_and_reopen(srv, rng, how, rng.uniform(0.0, 0.04), other)
                 for how in ways]
    # And once more of each with the end acknowledged before the crash.
    committed += [end_crash_and_reopen(srv, rng, how, None, other)
                  for how in ("completed", "delete")]
    assert committed[-2:] == [True, True]


def test_a_crash_never_revives_a_token_on_postgresql(make_server, database):
    srv = make_server(env={"MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_LAUNCHER": "ui",
                           **pg_env(database)})
    rng = random.Random()
    with httpx.Client(base_url=srv.url, timeout=10, trust_env=False,
                      headers={"Authorization": f"Bearer {USER_TOKEN}"}) as user:
        other = user.post("/api/projects", json={"name": "B"}).json()["id"]
    end_crash_and_reopen(srv, rng, "completed", rng.uniform(0.0, 0.04), other, database)
    assert end_crash_and_reopen(srv, rng, "completed", None, other, database)
    assert end_crash_and_reopen(srv, rng, "delete", None, other, database)


# ------------------------------------------------------------------ parents from other projects
def test_an_orchestrator_names_only_sessions_of_its_own_project_as_parent(world):
    user, listener, srv, a, b = (world["user"], world["listener"], world["srv"], world["a"],
                                 world["b"])
    r = user.post("/api/sessions/spawn", json={"projectId": a["id"], "role": "orchestrator",
                                               "taskIds": [world["a2"]["id"]]})
    osid = r.json()["sessionId"]
    event, _ = listener.until(lambda e: e["type"] == "session:spawn_request"
                              and e["data"]["session"]["id"] == osid)
    orch = httpx.Client(base_url=srv.url, timeout=10, headers={
        "Authorization": f"Bearer {event['data']['envVars']['MAESTRO_SESSION_TOKEN']}"})
    elsewhere = user.post("/api/sessions", json={"projectId": b["id"],
                                                 "taskIds": [world["b1"]["id"]]}).json()["id"]
    sessions = user.get("/api/sessions").json()
    folders = sorted(p.name for p in srv.session_dir.iterdir())
    body = {"projectId": a["id"], "taskIds": [world["a2"]["id"]]}
    try:
        for extra in ({"sessionId": "{}"}, {"sessionId": "{}", "spawnSource": "session"},
                      {"spawnedBy": "{}"}):
            answers = []
            for parent in (elsewhere, "sess_1700000000000_nosuchone"):
                named = {k: (parent if v == "{}" else v) for k, v in extra.items()}
                r = orch.post("/api/sessions/spawn", json={**body, **named})
                answers.append((r.status_code, r.json()))
            assert answers[0] == answers[1], answers
            assert answers[0][0] == 403 and answers[0][1]["code"] == "FORBIDDEN"
            assert elsewhere not in json.dumps(answers[0][1])
        assert user.get("/api/sessions").json() == sessions
        assert sorted(p.name for p in srv.session_dir.iterdir()) == folders
        # Its own session (or another of its project) is a fine parent.
        for key in ("sessionId", "spawnedBy"):
            r = orch.post("/api/sessions/spawn", json={**body, key: osid})
            assert r.status_code == 201, r.text
            assert r.json()["session"]["metadata"]["spawnedBy"] == osid
    finally:
        orch.close()
def test_agent_claims_for_its_own_session_in_its_own_project(world):
    agent, user, sid = world["agent"], world["user"], world["sid"]
    a, a2, b1 = world["a"]["id"], world["a2"]["id"], world["b1"]["id"]
    other = user.post("/api/sessions", json={"projectId": a, "taskIds": []}).json()["id"]
    # Any ready task of its own project, for itself only (a2 is outside its tasks).
    for path, body in [(f"/api/tasks/{a2}/claim", {"sessionId": other}),
                       (f"/api/tasks/{b1}/claim", {"sessionId": sid}),
                       (f"/api/projects/{world['b']['id']}/claim-next", {"sessionId": sid}),
                       (f"/api/projects/{a}/claim-next", {"sessionId": other}),
                       (f"/api/sessions/{other}/heartbeat", {})]:
        r = agent.post(path, json=body)
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN", (path, r.text)
    granted = agent.post(f"/api/tasks/{a2}/claim", json={"sessionId": sid})
    assert granted.status_code == 200, granted.text
    token = granted.json()["claim"]["token"]
    # Claiming linked the task: now the agent may work on it.
    assert agent.patch(f"/api/tasks/{a2}", json={"priority": "high"}).status_code == 200
    beat = agent.post(f"/api/sessions/{sid}/heartbeat", json={})
    assert beat.status_code == 200 and [c["taskId"] for c in beat.json()["claims"]] == [a2]
    assert agent.post(f"/api/tasks/{a2}/claim/release",
                      json={"sessionId": sid, "token": token}).status_code == 200


def test_a_claim_fences_writes_from_other_sessions_but_not_the_user(world):
    agent, user, a1 = world["agent"], world["user"], world["a1"]["id"]
    other = user.post("/api/sessions", json={"projectId": world["a"]["id"],
                                             "taskIds": []}).json()["id"]
    held = user.post(f"/api/tasks/{a1}/claim", json={"sessionId": other}).json()["claim"]
    before = user.get(f"/api/tasks/{a1}").json()
    for method, path, body in [("PATCH", f"/api/tasks/{a1}", {"status": "completed"}),
                               ("POST", f"/api/tasks/{a1}/timeline", {"message": "mine"}),
                               ("PATCH", f"/api/tasks/{a1}", {"sessionStatus": "working",
                                                              "updateSource": "session"})]:
        r = agent.request(method, path, json=body)
        assert r.status_code == 409 and r.json()["code"] == "CLAIM_LOST", (path, r.text)
        assert r.json()["details"]["sessionId"] == other
    assert user.get(f"/api/tasks/{a1}").json() == before
    # The user may always write; a user's status change to pending ends the claim.
    reopened = user.patch(f"/api/tasks/{a1}", json={"status": "pending"}).json()
    assert reopened["claim"] is None and reopened["claimToken"] == held["token"]
    assert agent.patch(f"/api/tasks/{a1}", json={"status": "in_progress"}).status_code == 200
