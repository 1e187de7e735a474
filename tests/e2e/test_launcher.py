"""The local launcher, end to end: real servers start real agent processes (small scripts that
behave like LLM agents, in tests/agents/) in tmux windows or on pseudo-terminals, and the
WebSocket stream and REST state follow them: spawning -> running -> completed / failed, stop,
output log, restarts, the concurrency cap, and the `ui` launcher that starts nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from helpers import (
    WsClient,
    assert_error,
    http_client,
    new_project,
    new_session,
    new_task,
    ok,
    wait_for_item,
    wait_until,
)
from servers import AGENTS

from maestro.spawn.processes import pid_alive

HAVE_TMUX = shutil.which("tmux") is not None
MODES = [pytest.param("tmux", marks=pytest.mark.skipif(not HAVE_TMUX, reason="tmux missing")),
         "pty"]


def agent_cmd(script: str, *args: str) -> str:
    return shlex.join([sys.executable, str(AGENTS / script), *args])


def tmux_socket(srv) -> str:
    return "maestro-" + hashlib.sha256(str(srv.data_dir).encode()).hexdigest()[:12]


def tmux(srv, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["tmux", "-L", tmux_socket(srv), *args], capture_output=True,
                          text=True, timeout=10, check=False)


def reap_agents(srv) -> None:
    """Kill whatever a test left running: agents survive their server on purpose."""
    for info_path in srv.session_dir.glob("*/process.json"):
        info = json.loads(info_path.read_text())
        # Only the very processes recorded (a pid may have been reused since).
        if pid_alive(info["agentPid"], info["agentStart"]):
            os.killpg(info["agentPgid"], signal.SIGKILL)
        if pid_alive(info["wrapperPid"], info["wrapperStart"]):
            os.kill(info["wrapperPid"], signal.SIGKILL)
    if HAVE_TMUX:
        tmux(srv, "kill-server")


@pytest.fixture
def launch_server(make_server):
    """make_server for launcher tests: agents and tmux servers are reaped at teardown."""
    started = []

    def factory(env: dict) -> object:
        srv = make_server(env=env)
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        reap_agents(srv)


class Stream:
    """The events of one WebSocket client, kept in order."""

    def __init__(self, ws: WsClient):
        self.ws = ws
        self.seen: list[dict] = []

    def wait_for(self, predicate, timeout: float = 30.0) -> dict:
        for event in self.seen:
            if predicate(event):
                return event
        return wait_for_item(self.ws.next, predicate, timeout, self.seen, "event")

    def statuses(self, sid: str) -> list[str]:
        """The session's statuses in event order, repeats collapsed."""
        out: list[str] = []
        for event in self.seen:
            status = session_status(event, sid)
            if status and (not out or out[-1] != status):
                out.append(status)
        return out


def session_status(event: dict, sid: str) -> str | None:
    if event["type"] in ("session:created", "session:updated") and event["data"]["id"] == sid:
        return event["data"]["status"]
    return None


def until_status(sid: str, *statuses: str):
    return lambda event: session_status(event, sid) in statuses


def session_event(session: dict, type_: str) -> dict:
    found = [e for e in session["events"] if e["type"] == type_]
    assert len(found) == 1, session["events"]
    return found[0]["data"]


def spawn(api, project_id: str, task_ids: list[str], **extra) -> str:
    body = ok(api.post("/api/sessions/spawn", json={"projectId": project_id,
                                                    "taskIds": task_ids, **extra}), 201)
    assert body["session"]["status"] == "spawning"
    return body["sessionId"]


def log_lines(api, sid: str, tail: int = 100) -> list[str]:
    return ok(api.get(f"/api/sessions/{sid}/log", params={"tail": tail}))["lines"]


def wait_log(api, sid: str, text: str, timeout: float = 20.0) -> list[str]:
    return wait_until(lambda: (lines := log_lines(api, sid)) and
                      any(text in line for line in lines) and lines, timeout,
                      what=f"{text!r} in the output of {sid}")


# ------------------------------------------------------------------ the whole way
@pytest.mark.parametrize("mode", MODES)
def test_agent_runs_its_task_to_completion(mode, launch_server, tmp_path):
    srv = launch_server({"MAESTRO_TMUX": "1" if mode == "tmux" else "0",
                         "MAESTRO_AGENT": agent_cmd("worker_agent.py", "{prompt_file}")})
    workdir = tmp_path / "shop"
    workdir.mkdir()
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api, name="Shop", workingDir=str(workdir))
        task = new_task(api, project["id"], title="Add login")
        stream = Stream(ws)
        sid = spawn(api, project["id"], [task["id"]])
        stream.wait_for(until_status(sid, "completed", "failed"))
        assert stream.statuses(sid) == ["spawning", "running", "completed"], \
            log_lines(api, sid)

        session = ok(api.get(f"/api/sessions/{sid}"))
        assert session["status"] == "completed"
        assert isinstance(session["completedAt"], int)
        assert session["lastActivity"] >= session["completedAt"]
        started = session_event(session, "process_started")
        assert started["mode"] == mode and started["cwd"] == str(workdir)
        if mode == "tmux":
            assert started["tmux"]["attach"] == f"tmux -L {tmux_socket(srv)} attach -t maestro"
        assert session_event(session, "process_exit") == {"exitCode": 0, "signal": None,
                                                          "reason": "exited"}
        assert [e["message"] for e in session.get("timeline", [])
                if e["type"] == "progress"] == ["starting work"]

        done = ok(api.get(f"/api/tasks/{task['id']}"))
        assert done["status"] == "completed" and isinstance(done["completedAt"], int)
        # `worker init` reported the session working on it; the agent ended without a
        # report, so the board no longer shows it at work (§15.5).
        assert "sessionStatus" not in done
        assert done["timeline"][-1]["message"].startswith(f"Session {sid} completed: its "
                                                          "status here (working) was cleared")
        assert {"type": "session_started", "sessionId": sid} in [
            {k: e.get(k) for k in ("type", "sessionId")} for e in done["timeline"]]

        lines = log_lines(api, sid)
        assert f"agent: session={sid} tasks={task['id']} cwd={workdir}" in lines
        assert any(line.startswith("agent: tty=True manifest=") for line in lines)
        assert f"agent: prompt starts with: You are a Maestro worker agent in session {sid}." \
            in lines
        assert lines[-1] == "agent: done"
        assert (srv.session_dir / sid / "output.log").is_file()


def start_stubborn_and_polite(api, ws):
    """Spawn an agent that ignores SIGTERM and one that exits on it, both running; returns
    (event stream, stubborn session id, polite session id)."""
    project = new_project(api)
    task = new_task(api, project["id"])
    stream = Stream(ws)
    stubborn = spawn(api, project["id"], [task["id"]], agent=agent_cmd("stubborn_agent.py"))
    polite = spawn(api, project["id"], [task["id"]],
                   agent=agent_cmd("stubborn_agent.py", "--polite"))
    for sid in (stubborn, polite):
        stream.wait_for(until_status(sid, "running"))
        wait_log(api, sid, "agent: working forever")
    return stream, stubborn, polite


@pytest.mark.parametrize("mode", MODES)
def test_stop_kills_a_stubborn_agent_and_lets_a_polite_one_finish(mode, launch_server):
    # The polite agent must end within the grace: 3 s leaves room on a loaded 2-core machine
    # (with 1 s it once ended `failed` in a full run under load).
    srv = launch_server({"MAESTRO_TMUX": "1" if mode == "tmux" else "0",
                         "MAESTRO_STOP_GRACE": "3"})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        stream, stubborn, polite = start_stubborn_and_polite(api, ws)
        if mode == "tmux":  # a person can attach: each agent has its window
            windows = tmux(srv, "list-windows", "-t", "maestro", "-F", "#{window_name}")
            assert {stubborn, polite} <= set(windows.stdout.split())
            pane = tmux(srv, "capture-pane", "-p", "-t", f"maestro:{stubborn}")
            assert "agent: working forever" in pane.stdout
        agent_pid = json.loads((srv.session_dir / stubborn / "process.json").read_text())[
            "agentPid"]

        answer = ok(api.post(f"/api/sessions/{stubborn}/stop"))
        assert answer["success"] is True and answer["signal"] == "SIGTERM"
        assert answer["graceSeconds"] == 3 and answer["session"]["id"] == stubborn
        ok(api.post(f"/api/sessions/{polite}/stop"))

        stream.wait_for(until_status(polite, "completed", "failed"))
        stream.wait_for(until_status(stubborn, "completed", "failed"))
        assert stream.statuses(polite)[-1] == "completed"
        assert stream.statuses(stubborn)[-1] == "failed"
        ended = ok(api.get(f"/api/sessions/{stubborn}"))
        assert session_event(ended, "process_exit")["signal"] == "SIGKILL"
        assert session_event(ended, "process_exit")["reason"] == "stopped"
        assert "agent: ignoring SIGTERM" in log_lines(api, stubborn)
        finished = ok(api.get(f"/api/sessions/{polite}"))
        assert session_event(finished, "process_exit") == {"exitCode": 0, "signal": None,
                                                           "reason": "stopped"}
        assert "agent: SIGTERM, finishing cleanly" in log_lines(api, polite)
        with pytest.raises(ProcessLookupError):
            os.kill(agent_pid, 0)
        assert_error(api.post(f"/api/sessions/{stubborn}/stop"), 409, "SESSION_NOT_RUNNING")
        if mode == "tmux":
            windows = tmux(srv, "list-windows", "-t", "maestro", "-F", "#{window_name}")
            assert stubborn not in windows.stdout


# ------------------------------------------------------------------ failures
def test_failing_agent_and_missing_agent_cli_fail_with_a_clear_event(launch_server):
    srv = launch_server({"MAESTRO_TMUX": "0"})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api)
        task = new_task(api, project["id"])
        stream = Stream(ws)
        failing = spawn(api, project["id"], [task["id"]], agent=agent_cmd("failing_agent.py"))
        missing = spawn(api, project["id"], [task["id"]], agent="no-such-agent-cli --go")
        leader = spawn(api, project["id"], [task["id"]], role="orchestrator",
                       agent=agent_cmd("failing_agent.py"))
        for sid in (failing, missing, leader):
            stream.wait_for(until_status(sid, "completed", "failed"))
            assert stream.statuses(sid) == ["spawning", "running", "failed"]
        exit_data = session_event(ok(api.get(f"/api/sessions/{failing}")), "process_exit")
        assert exit_data == {"exitCode": 3, "signal": None, "reason": "exit_code",
                             "message": "agent: cannot reach the model, giving up"}
        exit_data = session_event(ok(api.get(f"/api/sessions/{missing}")), "process_exit")
        assert exit_data["exitCode"] == 5 and exit_data["reason"] == "agent_launch_failed"
        assert "agent executable 'no-such-agent-cli' not found" in exit_data["message"]
        lead = ok(api.get(f"/api/sessions/{leader}"))
        assert session_event(lead, "process_started")["command"].endswith(
            "-m maestro orchestrator init")
        assert session_event(lead, "process_exit")["exitCode"] == 3
        assert ok(api.get(f"/api/tasks/{task['id']}"))["status"] == "pending"
        # A final status the agent set itself stands, whatever its exit code.
        finisher = spawn(api, project["id"], [task["id"]],
                         agent=agent_cmd("worker_agent.py", "--finish-session", "--exit", "4"))
        stream.wait_for(lambda e: e["type"] == "session:updated" and e["data"]["id"] == finisher
                        and any(ev["type"] == "process_exit" for ev in e["data"]["events"]))
        finished = ok(api.get(f"/api/sessions/{finisher}"))
        assert finished["status"] == "completed"
        assert session_event(finished, "process_exit")["exitCode"] == 4


def test_missing_agent_command_fails_at_once(launch_server):
    srv = launch_server({"MAESTRO_TMUX": "0", "MAESTRO_AGENT_COMMAND": "/nonexistent/agent run"})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api)
        task = new_task(api, project["id"])
        stream = Stream(ws)
        sid = spawn(api, project["id"], [task["id"]])
        stream.wait_for(until_status(sid, "completed", "failed"), timeout=10)
        assert stream.statuses(sid) == ["spawning", "failed"]
        data = session_event(ok(api.get(f"/api/sessions/{sid}")), "launch_failed")
        assert data["reason"] == "executable_not_found"
        assert "/nonexistent/agent was not found" in data["message"]
        assert_error(api.post(f"/api/sessions/{sid}/stop"), 409, "SESSION_NOT_RUNNING")


# ------------------------------------------------------------------ restarts
@pytest.mark.parametrize("mode", MODES)
def test_restart_marks_vanished_agents_failed_and_adopts_live_ones(mode, launch_server):
    srv = launch_server({"MAESTRO_TMUX": "1" if mode == "tmux" else "0",
                         "MAESTRO_STOP_GRACE": "1"})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        stream, vanished, alive = start_stubborn_and_polite(api, ws)
    srv.stop()
    # Agents outlive their server; this one dies while nobody watches (as in a reboot).
    info = json.loads((srv.session_dir / vanished / "process.json").read_text())
    os.kill(info["wrapperPid"], signal.SIGKILL)
    os.killpg(info["agentPgid"], signal.SIGKILL)
    srv.start()
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        gone = ok(api.get(f"/api/sessions/{vanished}"))
        assert gone["status"] == "failed"
        data = session_event(gone, "process_exit")
        assert data["reason"] == "server_restarted" and data["exitCode"] is None
        assert ok(api.get(f"/api/sessions/{alive}"))["status"] == "running"
        stream = Stream(ws)
        ok(api.post(f"/api/sessions/{alive}/stop"))
        stream.wait_for(until_status(alive, "completed", "failed"))
        adopted = ok(api.get(f"/api/sessions/{alive}"))
        assert adopted["status"] == "completed"
        assert session_event(adopted, "process_exit")["reason"] == "stopped"


# ------------------------------------------------------------------ the concurrency cap
def test_concurrency_cap_holds_and_queue_starts_in_order(launch_server):
    cap = 2
    srv = launch_server({"MAESTRO_TMUX": "0", "MAESTRO_MAX_AGENTS": str(cap),
                         "MAESTRO_AGENT_COMMAND": agent_cmd("sleepy_agent.py", "0.3")})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api)
        tasks = [new_task(api, project["id"], title=f"T{i}") for i in range(12)]
        stream = Stream(ws)
        sids = [spawn(api, project["id"], [t["id"]]) for t in tasks]
        for sid in sids:
            stream.wait_for(until_status(sid, "completed", "failed"), timeout=60)
    status: dict[str, str] = {}
    most_running = 0
    waited = False
    started_order = []
    for event in stream.seen:
        if event["type"] not in ("session:created", "session:updated"):
            continue
        sid, new = event["data"]["id"], event["data"]["status"]
        if new == "running" and status.get(sid) != "running":
            started_order.append(sid)
        status[sid] = new
        running = sum(1 for s in status.values() if s == "running")
        most_running = max(most_running, running)
        waited = waited or (running == cap and "spawning" in status.values())
    assert most_running == cap
    assert waited, "no spawn ever waited for a free slot"
    assert started_order == sids
    assert set(status.values()) == {"completed"}


def test_stop_while_queued_and_delete_while_running(launch_server):
    srv = launch_server({"MAESTRO_TMUX": "0", "MAESTRO_MAX_AGENTS": "1",
                         "MAESTRO_STOP_GRACE": "1",
                         "MAESTRO_AGENT_COMMAND": agent_cmd("stubborn_agent.py")})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api)
        task = new_task(api, project["id"])
        stream = Stream(ws)
        running = spawn(api, project["id"], [task["id"]])
        queued = spawn(api, project["id"], [task["id"]])
        stream.wait_for(until_status(running, "running"))
        wait_log(api, running, "agent: working forever")
        assert ok(api.get(f"/api/sessions/{queued}"))["status"] == "spawning"
        answer = ok(api.post(f"/api/sessions/{queued}/stop"))
        assert answer["signal"] is None and answer["session"]["status"] == "failed"
        data = session_event(answer["session"], "process_exit")
        assert data["reason"] == "stopped" and data["exitCode"] is None
        assert not (srv.session_dir / queued / "output.log").exists()

        # Deleting a session ends its agent, which frees the slot for the next spawn.
        info = json.loads((srv.session_dir / running / "process.json").read_text())
        ok(api.delete(f"/api/sessions/{running}"))
        wait_until(lambda: not pid_alive(info["agentPid"], info["agentStart"]), 15,
                   what="the deleted session's agent to end")
        after = spawn(api, project["id"], [task["id"]])
        stream.wait_for(until_status(after, "running"))
        ok(api.post(f"/api/sessions/{after}/stop"))
        stream.wait_for(until_status(after, "failed"))


# ------------------------------------------------------------------ output and control API
def test_log_endpoint_returns_clean_tail_and_errors(launch_server):
    srv = launch_server({"MAESTRO_TMUX": "0",
                         "MAESTRO_AGENT_COMMAND": agent_cmd("chatty_agent.py", "20000")})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api)
        task = new_task(api, project["id"])
        stream = Stream(ws)
        sid = spawn(api, project["id"], [task["id"]])
        stream.wait_for(until_status(sid, "completed", "failed"))
        assert stream.statuses(sid)[-1] == "completed"
        tail = ok(api.get(f"/api/sessions/{sid}/log", params={"tail": 4}))
        size = (srv.session_dir / sid / "output.log").stat().st_size
        assert tail == {"sessionId": sid, "truncated": True, "finished": True,
                        "nextOffset": size, "lines": [
                            "line 019999 of the agent's output",
                            "line 020000 of the agent's output", "progress 3/3",
                            "agent: finished"]}
        assert len(log_lines(api, sid, 10000)) == 10000
        default = ok(api.get(f"/api/sessions/{sid}/log"))["lines"]
        assert len(default) == 100 and default[0] == "line 019903 of the agent's output"
        assert (srv.session_dir / sid / "output.log").read_bytes().count(b"\n") == 20002
        for bad in ("0", "-1", "abc", "10001", "1.5"):
            assert_error(api.get(f"/api/sessions/{sid}/log", params={"tail": bad}), 400,
                         "VALIDATION_ERROR")
        for path in ("log", "stop"):
            method = api.get if path == "log" else api.post
            assert_error(method(f"/api/sessions/sess_unknown/{path}"), 404,
                         "SESSION_NOT_FOUND")
        manual = new_session(api, project["id"], [task["id"]])
        assert_error(api.get(f"/api/sessions/{manual['id']}/log"), 409, "SESSION_NOT_LAUNCHED")
        assert_error(api.post(f"/api/sessions/{manual['id']}/stop"), 409,
                     "SESSION_NOT_LAUNCHED")


def test_ui_launcher_only_broadcasts(launch_server):
    srv = launch_server({"MAESTRO_LAUNCHER": "ui",
                         "MAESTRO_AGENT_COMMAND": agent_cmd("sleepy_agent.py", "0")})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api)
        task = new_task(api, project["id"])
        ws.barrier()
        sid = spawn(api, project["id"], [task["id"]])
        events = ws.barrier()
        assert [e["type"] for e in events][:2] == ["session:spawn_request", "session:created"]
        assert events[0]["data"]["command"] == agent_cmd("sleepy_agent.py", "0")
        # Nothing is started: the session stays `spawning` and no output appears.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert ok(api.get(f"/api/sessions/{sid}"))["status"] == "spawning"
            assert not (srv.session_dir / sid / "output.log").exists()
            time.sleep(0.05)
        assert ws.barrier() == []
        assert_error(api.get(f"/api/sessions/{sid}/log"), 409, "SESSION_NOT_LAUNCHED")
        assert_error(api.post(f"/api/sessions/{sid}/stop"), 409, "SESSION_NOT_LAUNCHED")


# ------------------------------------------------------------------ the agent's environment
SERVER_SECRETS = {
    "DATABASE_URL": "postgresql://secret-db-user:db-password@127.0.0.1:1/prod",
    "PGPASSWORD": "pg-password", "PGHOST": "db.internal",
    "SOME_USER_SECRET": "user-shell-secret", "AWS_SECRET_ACCESS_KEY": "aws-unlisted-secret",
}
AGENT_TOKEN_OF_USER = "user-token-never-for-agents-0123456789"


def allowed_for_agent(name: str) -> bool:
    """What the README promises an agent's environment holds, given the server below."""
    basics = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TMPDIR",
              "TZ", "PYTHONPATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
              "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"}
    proxies = {p for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
               for p in (name, name.lower())}
    maestro = {"MAESTRO_SESSION_ID", "MAESTRO_PROJECT_ID", "MAESTRO_TASK_IDS",
               "MAESTRO_SERVER_URL", "MAESTRO_SKILLS", "MAESTRO_MANIFEST_PATH",
               "MAESTRO_STRATEGY", "MAESTRO_AGENT", "MAESTRO_API_URL", "MAESTRO_LAUNCHER",
               "MAESTRO_SESSION_TOKEN"}
    listed = {"AWS_PROFILE", "PROJECT_FLAG"}
    return name in basics | proxies | maestro | listed or name.startswith(
        ("LC_", "XDG_", "ANTHROPIC_", "CLAUDE_", "OPENAI_", "CODEX_", "GH_"))


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if item)


@pytest.mark.parametrize("mode", MODES)
def test_agent_environment_is_built_from_an_allow_list(mode, make_server, tmp_path):
    out = tmp_path / "agent-env.json"
    env = {"MAESTRO_TMUX": "1" if mode == "tmux" else "0", "DATABASE_TYPE": "filesystem",
           **SERVER_SECRETS, "MAESTRO_TOKEN": AGENT_TOKEN_OF_USER, "MAESTRO_MAX_AGENTS": "3",
           "ANTHROPIC_API_KEY": "sk-ant-for-the-agent", "https_proxy": "http://proxy:3128",
           "AWS_PROFILE": "dev", "GH_TOKEN": "gh-for-the-agent", "GH_HOST": "git.example",
           "MAESTRO_AGENT_ENV": "AWS_PROFILE, GH_*", "MAESTRO_AGENT": "claude --verbose",
           "MAESTRO_AGENT_COMMAND": agent_cmd("env_agent.py", str(out), "60")}
    srv = make_server(env=env, start=False)
    if mode == "tmux":
        # A tmux server left by an earlier run, started from a shell full of secrets: its
        # environment must not reach the windows the launcher opens in it.
        dirty = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"),
                 **SERVER_SECRETS}
        subprocess.run(["tmux", "-L", tmux_socket(srv), "-f", os.devnull, "new-session", "-d",
                        "-s", "maestro", "sleep", "600"], env=dirty, check=True, timeout=10)
        tmux(srv, "set-environment", "-t", "maestro", "SOME_USER_SECRET", "in-the-session")
    try:
        srv.start()
        auth = {"Authorization": f"Bearer {AGENT_TOKEN_OF_USER}"}
        with httpx.Client(base_url=srv.url, headers=auth, timeout=30, trust_env=False) as api, \
                WsClient(srv.ws_url + f"?token={AGENT_TOKEN_OF_USER}") as ws:
            project = new_project(api)
            task = new_task(api, project["id"])
            for bad in ({"DATABASE_URL": "postgresql://x"}, {"PGPASSWORD": "x"},
                        {"DATA_DIR": "/tmp"}, {"MAESTRO_TOKEN": "x"}, {"MAESTRO_TMUX": "0"},
                        {"BAD-NAME": "x"}, {"FLAG": 1}, []):
                before = ok(api.get("/api/sessions"))
                assert_error(api.post("/api/sessions/spawn", json={
                    "projectId": project["id"], "taskIds": [task["id"]], "env": bad}),
                    400, "VALIDATION_ERROR")
                assert ok(api.get("/api/sessions")) == before
            stream = Stream(ws)
            sid = spawn(api, project["id"], [task["id"]], env={"PROJECT_FLAG": "on"})
            stream.wait_for(until_status(sid, "running"))
            agent_env = wait_until(lambda: out.exists() and json.loads(out.read_text()), 30,
                                   what="the agent's environment")
            wrapper_pid = json.loads((srv.session_dir / sid / "process.json").read_text())[
                "wrapperPid"]
            wrapper_env = proc_environ(wrapper_pid)
            if mode == "tmux":
                shown = tmux(srv, "show-environment", "-g").stdout + \
                    tmux(srv, "show-environment", "-t", "maestro").stdout
            ok(api.post(f"/api/sessions/{sid}/stop"))
            stream.wait_for(until_status(sid, "completed", "failed"))
    finally:
        reap_agents(srv)

    assert not [name for name in agent_env if not allowed_for_agent(name)], agent_env
    for name in (*SERVER_SECRETS, "DATA_DIR", "SESSION_DIR", "MAESTRO_TOKEN",
                 "MAESTRO_AGENT_ENV", "MAESTRO_MAX_AGENTS", "MAESTRO_AGENT_COMMAND",
                 "MAESTRO_TMUX", "DATABASE_TYPE", "PORT"):
        assert name not in agent_env, name
    secrets_seen = [value for value in (*SERVER_SECRETS.values(), AGENT_TOKEN_OF_USER)
                    if value in json.dumps(agent_env)]
    assert secrets_seen == []
    assert agent_env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert agent_env["HOME"] == os.environ["HOME"]
    assert agent_env["ANTHROPIC_API_KEY"] == "sk-ant-for-the-agent"
    assert agent_env["https_proxy"] == "http://proxy:3128"
    assert agent_env["AWS_PROFILE"] == "dev"
    assert agent_env["GH_TOKEN"] == "gh-for-the-agent" and agent_env["GH_HOST"] == "git.example"
    assert agent_env["PROJECT_FLAG"] == "on"
    assert agent_env["MAESTRO_SESSION_ID"] == sid
    assert agent_env["MAESTRO_SESSION_TOKEN"].startswith(f"mst.{sid}.")
    assert agent_env["MAESTRO_AGENT"] == "claude --verbose"
    assert agent_env["MAESTRO_API_URL"] == agent_env["MAESTRO_SERVER_URL"]
    assert agent_env["MAESTRO_LAUNCHER"] == "local"
    # Nor anything around the agent: its wrapper process and, under tmux, the tmux server.
    for value in (*SERVER_SECRETS.values(), AGENT_TOKEN_OF_USER):
        assert value not in json.dumps(wrapper_env)
        if mode == "tmux":
            assert value not in shown
    assert "DATABASE_URL" not in wrapper_env and "SOME_USER_SECRET" not in wrapper_env
    if mode == "tmux":
        assert "DATABASE_URL" not in shown and "in-the-session" not in shown
