"""Stop and output requests for an agent another replica launched (spawn/forward.py): any
replica answers them by forwarding them, once, to the replica that launched the agent, with the
caller's own credentials; a launching replica that is gone or cannot be reached is named in a
prompt 409 SESSION_NOT_LAUNCHED."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import psycopg
import pytest
from helpers import wait_until
from test_agent_identity import USER_TOKEN
from test_launcher import agent_cmd, reap_agents
from test_postgres_server import database, pg_env  # noqa: F401 - the PostgreSQL fixture

from maestro.spawn.processes import pid_alive

FORWARDED = "X-Maestro-Forwarded-By"
# A slow timeout: a killed replica still counts as alive (reachable or not) for the test.
SLOW = {"MAESTRO_REPLICA_HEARTBEAT_SECONDS": "0.5", "MAESTRO_REPLICA_TIMEOUT_SECONDS": "60"}


def client(srv, token: str = USER_TOKEN) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=30, trust_env=False,
                        headers={"Authorization": f"Bearer {token}"})


def two_replicas(make_server, database, tmp_path, agent: str, fast_paths: str = "1", **extra):
    shared = {**pg_env(database), "MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_TMUX": "0",
              "MAESTRO_STOP_GRACE": "2", "MAESTRO_AGENT_COMMAND": agent, **extra}
    a = make_server(env={"MAESTRO_REPLICA_ID": "replica-a", **shared})
    b = make_server(env={"MAESTRO_REPLICA_ID": "replica-b", "MAESTRO_FAST_PATHS": fast_paths,
                         **shared})
    return a, b


def spawn_on(api: httpx.Client, project_id: str, task_id: str) -> str:
    spawned = api.post("/api/sessions/spawn", json={"projectId": project_id,
                                                    "taskIds": [task_id]})
    assert spawned.status_code == 201, spawned.text
    sid = spawned.json()["sessionId"]
    wait_until(lambda: api.get(f"/api/sessions/{sid}").json()["status"] == "running")
    return sid


def env_agent_token(path, sid: str, api: httpx.Client) -> str:
    """The token the agent of `sid` was handed (env_agent.py wrote its environment)."""
    wait_until(lambda: path.exists(), timeout=15)
    env = json.loads(path.read_text())
    path.unlink()
    token = env["MAESTRO_SESSION_TOKEN"]
    assert api.get(f"/api/sessions/{sid}", headers={"Authorization": f"Bearer {token}"}
                   ).status_code == 200
    return token


def agent_process(srv, sid: str) -> dict:
    return wait_until(lambda: (srv.session_dir / sid / "process.json").exists()
                      and json.loads((srv.session_dir / sid / "process.json").read_text()))


def replica_taken_over(url: str, replica_id: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT taken_over_by, takeover_done_at FROM maestro_replicas "
                           "WHERE replica_id = %s", (replica_id,)).fetchone()
    return row is not None and row[0] is not None and row[1] is not None


def error_of(answer: httpx.Response, status: int, code: str) -> dict:
    assert answer.status_code == status, (answer.status_code, answer.text)
    body = answer.json()
    assert body["error"] is True and body["code"] == code, body
    assert set(body) <= {"error", "code", "message", "details"}
    return body


@pytest.mark.parametrize("fast_paths", ["1", "0"])
def test_another_replica_forwards_log_and_stop_to_the_launching_one(make_server, database,
                                                                      tmp_path, fast_paths):
    """(B answering through uvicorn's connection directly, and through plain ASGI.)"""
    env_file = tmp_path / "agent-env.json"
    a, b = two_replicas(make_server, database, tmp_path,
                        agent_cmd("env_agent.py", str(env_file), "120"), fast_paths, **SLOW)
    try:
        with client(a) as on_a, client(b) as on_b:
            project = on_a.post("/api/projects", json={"name": "p"}).json()
            task = on_a.post("/api/tasks", json={"projectId": project["id"],
                                                 "title": "t"}).json()
            first = spawn_on(on_a, project["id"], task["id"])
            first_token = env_agent_token(env_file, first, on_a)
            second = spawn_on(on_a, project["id"], task["id"])
            second_token = env_agent_token(env_file, second, on_a)
            wait_until(lambda: on_b.get(f"/api/sessions/{first}").status_code == 200)
            assert not (b.session_dir / first).exists()  # nothing of it on B's machine

            # The output, read through B, is A's, byte for byte.
            for params in ({}, {"tail": "1"}, {"offset": "0"}):
                here, there = (on_a.get(f"/api/sessions/{first}/log", params=params),
                               on_b.get(f"/api/sessions/{first}/log", params=params))
                assert there.status_code == 200, there.text
                assert there.content == here.content
                assert there.headers["content-type"] == here.headers["content-type"]
                assert "agent: environment written" in there.json()["lines"]
            # Invalid queries are A's to refuse, the same way.
            bad = on_b.get(f"/api/sessions/{first}/log", params={"tail": "0"})
            assert bad.content == on_a.get(f"/api/sessions/{first}/log",
                                           params={"tail": "0"}).content
            error_of(bad, 400, "VALIDATION_ERROR")

            # Forwarded once: a request that was already forwarded is answered here.
            started = time.monotonic()
            for answer in (on_b.get(f"/api/sessions/{first}/log", headers={FORWARDED: "x"}),
                           on_b.post(f"/api/sessions/{first}/stop",
                                     headers={FORWARDED: "x"})):
                body = error_of(answer, 409, "SESSION_NOT_LAUNCHED")
                assert body["details"] == {"sessionId": first, "replica": "replica-a",
                                           "reason": "forwarded"}
                assert "replica-a" in body["message"]
            assert time.monotonic() - started < 2
            assert on_a.get(f"/api/sessions/{first}").json()["status"] == "running"

            # Agents: the rights they have on A, no more, no less.
            own = {"Authorization": f"Bearer {first_token}"}
            other = {"Authorization": f"Bearer {second_token}"}
            mine = on_b.get(f"/api/sessions/{first}/log", headers=own)
            assert mine.status_code == 200 and mine.content == \
                on_a.get(f"/api/sessions/{first}/log", headers=own).content
            for path, send in ((f"/api/sessions/{first}/log", "get"),
                               (f"/api/sessions/{first}/stop", "post")):
                via_b = getattr(on_b, send)(path, headers=other)
                on_owner = getattr(on_a, send)(path, headers={**other, FORWARDED: "replica-b"})
                error_of(via_b, 403, "FORBIDDEN")
                assert (via_b.status_code, via_b.json()) == \
                    (on_owner.status_code, on_owner.json())
            forged = {"Authorization": "Bearer mst.sess_0_nobody." + "0" * 64}
            error_of(on_b.post(f"/api/sessions/{first}/stop", headers=forged), 401,
                     "UNAUTHORIZED")
            assert on_a.get(f"/api/sessions/{first}").json()["status"] == "running"

            # Stop through B: A's agent goes, and the session ends as a stop on A ends it.
            process = agent_process(a, first)
            stopped = on_b.post(f"/api/sessions/{first}/stop")
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["signal"] == "SIGTERM"
            assert stopped.json()["session"]["id"] == first
            wait_until(lambda: not pid_alive(process["agentPid"], process["agentStart"]),
                       timeout=15)
            ended = wait_until(lambda: (s := on_b.get(f"/api/sessions/{first}").json())
                               ["status"] != "running" and s, timeout=15)
            assert on_a.post(f"/api/sessions/{second}/stop").status_code == 200
            compare = wait_until(lambda: (s := on_a.get(f"/api/sessions/{second}").json())
                                 ["status"] != "running" and s, timeout=15)
            assert ended["status"] == compare["status"]
            assert ended["metadata"]["endReason"] == compare["metadata"]["endReason"] \
                == "stopped"
            assert ended["events"][-1]["type"] == "process_exit"
            assert ended["events"][-1]["data"]["reason"] == "stopped"
            # Its agent has ended: A's answer, through B.
            again = on_b.post(f"/api/sessions/{first}/stop")
            error_of(again, 409, "SESSION_NOT_RUNNING")
            assert again.content == on_a.post(f"/api/sessions/{first}/stop").content
            finished = on_b.get(f"/api/sessions/{first}/log").json()
            assert finished["finished"] is True
        for srv in (a, b):  # credentials are never written to a server's log
            for secret in (USER_TOKEN, first_token, second_token):
                assert secret not in srv.log()
    finally:
        reap_agents(a)


def test_a_killed_launching_replica_is_named_promptly(make_server, database, tmp_path):
    a, b = two_replicas(make_server, database, tmp_path, agent_cmd("sleepy_agent.py", "120"),
                        **SLOW)
    try:
        with client(a) as on_a, client(b) as on_b:
            project = on_a.post("/api/projects", json={"name": "p"}).json()
            task = on_a.post("/api/tasks", json={"projectId": project["id"],
                                                 "title": "t"}).json()
            sid = spawn_on(on_a, project["id"], task["id"])
            wait_until(lambda: on_b.get(f"/api/sessions/{sid}/log").status_code == 200)

            # Frozen: its heartbeat is recent, it accepts connections but does not answer.
            os.kill(a.proc.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                body = error_of(on_b.post(f"/api/sessions/{sid}/stop"), 409,
                                "SESSION_NOT_LAUNCHED")
                assert time.monotonic() - started < 8
            finally:
                os.kill(a.proc.pid, signal.SIGCONT)
            assert body["details"] == {"sessionId": sid, "replica": "replica-a",
                                       "reason": "unreachable"}
            assert "replica-a" in body["message"] and a.url in body["message"]

            # Killed: connections are refused at once.
            a.kill()
            started = time.monotonic()
            for answer in (on_b.get(f"/api/sessions/{sid}/log"),
                           on_b.post(f"/api/sessions/{sid}/stop")):
                body = error_of(answer, 409, "SESSION_NOT_LAUNCHED")
                assert body["details"] == {"sessionId": sid, "replica": "replica-a",
                                           "reason": "unreachable"}
                assert "could not be reached" in body["message"]
            assert time.monotonic() - started < 3

            # Gone (its heartbeat too old): B takes it over, and says so.
            with psycopg.connect(database) as conn:
                conn.execute("UPDATE maestro_replicas SET heartbeat_at = now() - "
                             "interval '5 minutes' WHERE replica_id = 'replica-a'")
            wait_until(lambda: replica_taken_over(database, "replica-a"), timeout=15)
            started = time.monotonic()
            for answer in (on_b.get(f"/api/sessions/{sid}/log"),
                           on_b.post(f"/api/sessions/{sid}/stop")):
                body = error_of(answer, 409, "SESSION_NOT_LAUNCHED")
                assert body["details"] == {"sessionId": sid, "replica": "replica-a",
                                           "reason": "gone"}
                assert "replica-a, which is gone" in body["message"]
                assert "replica-b" in body["message"]  # who took it over
            assert time.monotonic() - started < 3
    finally:
        reap_agents(a)


def test_a_replica_sharing_the_session_dir_reads_a_gone_replica_s_log(make_server, database,
                                                                      tmp_path):
    """Replicas on one machine with one SESSION_DIR: the log of a replica's agent stays
    readable through the other when the launching replica is gone."""
    shared = {**pg_env(database), "MAESTRO_TMUX": "0", **SLOW,
              "MAESTRO_AGENT_COMMAND": agent_cmd("sleepy_agent.py", "120")}
    a = make_server(env={"MAESTRO_REPLICA_ID": "replica-a", **shared}, tmp=tmp_path / "one")
    b = make_server(env={"MAESTRO_REPLICA_ID": "replica-b", **shared}, tmp=tmp_path / "one")
    try:
        with httpx.Client(base_url=b.url, timeout=10, trust_env=False) as on_b:
            project = on_b.post("/api/projects", json={"name": "p"}).json()
            task = on_b.post("/api/tasks", json={"projectId": project["id"],
                                                 "title": "t"}).json()
            with httpx.Client(base_url=a.url, timeout=10, trust_env=False) as on_a:
                sid = spawn_on(on_a, project["id"], task["id"])
            wait_until(lambda: "agent: working" in on_b.get(f"/api/sessions/{sid}/log")
                       .json()["lines"])
            a.kill()
            answer = on_b.get(f"/api/sessions/{sid}/log")
            assert answer.status_code == 200, answer.text
            assert "agent: working" in answer.json()["lines"]
            error_of(on_b.post(f"/api/sessions/{sid}/stop"), 409, "SESSION_NOT_LAUNCHED")
    finally:
        reap_agents(a)
