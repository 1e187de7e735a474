"""Agent sessions as a person drives them, end to end with the local launcher and real agent
processes (tests/agents/): a spawn says what the launcher did and names the session after its
tasks; a stopped or failed session says why (in its metadata, in `maestro session info|list`);
`maestro session spawn|log -f|stop|delete`; following the output by offset, and who may read
it; deleting a project with running agents."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
from helpers import WsClient, assert_error, http_client, new_project, new_task, ok, wait_until
from test_cli_helpers import Cli
from test_launcher import launch_server  # noqa: F401 - the fixture (reaps agents)
from test_launcher import Stream, agent_cmd, session_event, until_status, wait_log

from maestro.spawn.processes import pid_alive


def spawn_body(api, project_id: str, task_ids: list[str], **extra) -> dict:
    return ok(api.post("/api/sessions/spawn", json={"projectId": project_id,
                                                    "taskIds": task_ids, **extra}), 201)


def test_spawn_says_what_the_local_launcher_did_and_stop_says_who(launch_server):
    srv = launch_server({"MAESTRO_TMUX": "0", "MAESTRO_MAX_AGENTS": "1",
                         "MAESTRO_STOP_GRACE": "1",
                         "MAESTRO_AGENT_COMMAND": agent_cmd("stubborn_agent.py")})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api)
        login = new_task(api, project["id"], title="Add login")
        form = new_task(api, project["id"], title="Login form")
        stream = Stream(ws)
        first = spawn_body(api, project["id"], [login["id"], form["id"]])
        sid = first["sessionId"]
        assert first["launch"]["launcher"] == "local" and first["launch"]["state"] == "started"
        pid = first["launch"]["pid"]
        assert first["message"] == (f"Agent started by the local launcher (pid {pid}, on a "
                                    "pseudo-terminal)")
        session = ok(api.get(f"/api/sessions/{sid}"))
        assert session_event(session, "process_started")["pid"] == pid
        assert session["name"] == "Worker: Add login +1 more"
        # The caller's declared source (the API's default) and the launcher that acted.
        assert session["metadata"]["spawnSource"] == "ui"
        assert session["metadata"]["launchedBy"] == "local"

        second = spawn_body(api, project["id"], [form["id"]], spawnSource="api")
        assert second["launch"] == {"launcher": "local", "state": "queued", "running": 1,
                                    "maxAgents": 1}
        assert "queued" in second["message"] and "MAESTRO_MAX_AGENTS=1" in second["message"]
        assert second["session"]["name"] == "Worker: Login form"

        wait_log(api, sid, "agent: working forever")
        ok(api.post(f"/api/sessions/{sid}/stop"))
        stream.wait_for(until_status(sid, "failed"))
        stopped = ok(api.get(f"/api/sessions/{sid}"))
        assert stopped["metadata"]["endReason"] == "stopped"
        assert stopped["metadata"]["endMessage"] == "stopped by the user"
        # The freed slot starts the queued agent; stopped while waiting, it says so too.
        stream.wait_for(until_status(second["sessionId"], "running"))
        ok(api.post(f"/api/sessions/{second['sessionId']}/stop"))
        stream.wait_for(until_status(second["sessionId"], "failed"))


def test_a_failed_agent_says_why_in_metadata_and_cli(launch_server, tmp_path):
    srv = launch_server({"MAESTRO_TMUX": "0"})
    cli = Cli(tmp_path, srv.url)
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api)
        task = new_task(api, project["id"], title="Fails")
        stream = Stream(ws)
        sid = spawn_body(api, project["id"], [task["id"]],
                         agent=agent_cmd("failing_agent.py"))["sessionId"]
        stream.wait_for(until_status(sid, "failed"))
        session = ok(api.get(f"/api/sessions/{sid}"))
        assert session["metadata"]["endReason"] == "exit_code"
        assert session["metadata"]["endMessage"] == (
            "the agent exited with code 3: agent: cannot reach the model, giving up")
    info, listed = cli.many(("session", "info", sid), ("session", "list", "--project",
                                                       project["id"]))
    assert info.code == 0, info.stderr
    assert "the agent exited with code 3: agent: cannot reach the model" in info.stdout
    assert "code 3" in info.stdout and "process_exit" in info.stdout
    assert "session event(s)" not in info.stdout
    assert "failed (the agent exited with code 3" in " ".join(listed.stdout.split())


def test_a_launch_that_fails_at_once_is_said_in_the_answer(launch_server):
    srv = launch_server({"MAESTRO_TMUX": "0", "MAESTRO_AGENT_COMMAND": "/nonexistent/agent"})
    with http_client(srv) as api:
        project = new_project(api)
        task = new_task(api, project["id"])
        body = spawn_body(api, project["id"], [task["id"]])
        assert body["launch"]["state"] == "failed"
        assert body["message"].startswith("The local launcher did not start the agent: ")
        assert "/nonexistent/agent was not found" in body["message"]
        session = ok(api.get(f"/api/sessions/{body['sessionId']}"))
        assert session["status"] == "failed"
        assert session["metadata"]["endReason"] == "executable_not_found"


def test_log_follows_by_offset(launch_server):
    srv = launch_server({"MAESTRO_TMUX": "0",
                         "MAESTRO_AGENT_COMMAND": agent_cmd("sleepy_agent.py", "1.5")})
    with http_client(srv) as api:
        project = new_project(api)
        task = new_task(api, project["id"])
        sid = spawn_body(api, project["id"], [task["id"]])["sessionId"]
        for bad in ("-1", "x", "1.5"):
            assert_error(api.get(f"/api/sessions/{sid}/log", params={"offset": bad}), 400,
                         "VALIDATION_ERROR")
        lines, offset, answers = [], 0, 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = ok(api.get(f"/api/sessions/{sid}/log", params={"offset": offset}))
            answers += 1
            assert answer["offset"] == offset
            lines += answer["lines"]
            offset = answer["nextOffset"]
            if answer["finished"] and not answer["lines"]:
                break
            time.sleep(0.1)
        assert lines == ["agent: working", "agent: done"]
        assert answers > 3  # the first line came well before the end
        size = (srv.session_dir / sid / "output.log").stat().st_size
        assert offset == size
        again = ok(api.get(f"/api/sessions/{sid}/log", params={"offset": 0}))
        assert again["lines"] == lines and again["nextOffset"] == size
        past = ok(api.get(f"/api/sessions/{sid}/log", params={"offset": size + 100}))
        assert past["lines"] == lines  # a shorter file than asked: read again from the start


def test_agents_read_only_their_own_output_log(make_server):
    token = "user-token-for-log-rights-0123456789"
    srv = make_server(env={"MAESTRO_TOKEN": token, "MAESTRO_LAUNCHER": "ui"})
    user = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"},
                        timeout=10)
    with user, WsClient(srv.ws_url + f"?token={token}") as ws:
        project = new_project(user)
        task = new_task(user, project["id"])
        mine = spawn_body(user, project["id"], [task["id"]])["sessionId"]
        other = spawn_body(user, project["id"], [task["id"]])["sessionId"]
        events = ws.barrier()
        agent_token = next(e["data"]["envVars"]["MAESTRO_SESSION_TOKEN"] for e in events
                           if e["type"] == "session:spawn_request"
                           and e["data"]["session"]["id"] == mine)
        with httpx.Client(base_url=srv.url, timeout=10,
                          headers={"Authorization": f"Bearer {agent_token}"}) as agent:
            refused = assert_error(agent.get(f"/api/sessions/{other}/log"), 403, "FORBIDDEN")
            assert "own output log" in refused["message"]
            # Its own: allowed (this launcher started nothing, so there is no log).
            assert_error(agent.get(f"/api/sessions/{mine}/log"), 409, "SESSION_NOT_LAUNCHED")
            assert agent.get(f"/api/sessions/{other}").status_code == 200  # the session itself
        assert_error(user.get(f"/api/sessions/{other}/log"), 409, "SESSION_NOT_LAUNCHED")


def test_cli_spawns_follows_stops_and_deletes_a_session(launch_server, tmp_path):
    srv = launch_server({"MAESTRO_TMUX": "0", "MAESTRO_STOP_GRACE": "1"})
    cli = Cli(tmp_path, srv.url)
    project = cli.data("project", "create", "Agents", "--dir", str(tmp_path))
    first = cli.data("task", "create", "Add login", "--project", project["id"])
    second = cli.data("task", "create", "Login form", "--project", project["id"])

    spawned = cli.ok("session", "spawn", "--task", first["id"], "--task", second["id"],
                     "--agent", agent_cmd("stubborn_agent.py"))
    assert "Agent started by the local launcher (pid " in spawned.stdout
    sid = next(word for word in spawned.stdout.split() if word.startswith("sess_"))
    with http_client(srv) as api:
        session = ok(api.get(f"/api/sessions/{sid}"))
        assert session["taskIds"] == [first["id"], second["id"]]
        assert session["name"] == "Worker: Add login +1 more"
        assert session["metadata"]["agent"] == agent_cmd("stubborn_agent.py")
        assert session["metadata"]["spawnSource"] == "cli"
        wait_log(api, sid, "agent: working forever")

    follower = subprocess.Popen([sys.executable, "-m", "maestro", "session", "log", sid, "-f"],
                                env=cli.env(), cwd=str(cli.cwd), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stopped = cli.ok("session", "stop", sid, "--wait")
    assert f"Stopped session {sid}: stopped by the user" in stopped.stdout
    out, err = follower.communicate(timeout=30)  # -f ends by itself with the session
    assert follower.returncode == 0, err
    assert "agent: working forever" in out and "agent: ignoring SIGTERM" in out
    assert "stopped by the user" in err

    info, listed, log_json = cli.many(("session", "info", sid),
                                      ("session", "list", "--project", project["id"]),
                                      ("session", "log", sid, "--tail", "1", "--json"))
    assert "stopped by the user" in info.stdout and "signal SIGKILL" in info.stdout
    assert "failed (stopped by the user)" in " ".join(listed.stdout.split())
    assert log_json.data["finished"] is True and len(log_json.data["lines"]) == 1

    deleted = cli.ok("session", "delete", sid)
    assert f"Deleted session {sid}" in deleted.stdout
    gone, missing_task = cli.many(("session", "info", sid),
                                  ("session", "spawn", "--task", "task_missing"))
    assert gone.code == 2 and missing_task.code == 2


def test_deleting_a_project_stops_its_agents_first(launch_server, tmp_path):
    srv = launch_server({"MAESTRO_TMUX": "0", "MAESTRO_STOP_GRACE": "1",
                         "MAESTRO_AGENT_COMMAND": agent_cmd("stubborn_agent.py", "--polite")})
    cli = Cli(tmp_path, srv.url)
    with http_client(srv) as api:
        project = new_project(api)
        task = new_task(api, project["id"])
        child = new_task(api, project["id"], parentId=task["id"])
        sid = spawn_body(api, project["id"], [child["id"]])["sessionId"]
        wait_log(api, sid, "agent: working forever")
        info = json.loads((srv.session_dir / sid / "process.json").read_text())
        result = cli.data("project", "delete", project["id"], "--cascade", "--yes")
        assert result["stopped"] == [sid]
        assert result["deleted"] == {"sessions": [sid], "tasks": [child["id"], task["id"]]}
        wait_until(lambda: not pid_alive(info["agentPid"], info["agentStart"]), 15,
                   what="the project's agent to end")
        assert api.get(f"/api/projects/{project['id']}").status_code == 404


@pytest.mark.parametrize("with_agent", [False, True])
def test_server_side_cascade_is_one_change_and_stops_agents(launch_server, with_agent):
    env = {"MAESTRO_TMUX": "0", "MAESTRO_STOP_GRACE": "1",
           "MAESTRO_AGENT_COMMAND": agent_cmd("stubborn_agent.py")}
    srv = launch_server(env)
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api)
        keep = new_project(api)
        root = new_task(api, project["id"], title="Root")
        leaf = new_task(api, project["id"], title="Leaf", parentId=root["id"])
        outside = new_task(api, keep["id"], title="Elsewhere")
        plain = ok(api.post("/api/sessions", json={"projectId": project["id"],
                                                   "taskIds": [root["id"]]}), 201)
        agent_pid = None
        sessions = [plain["id"]]
        if with_agent:
            sid = spawn_body(api, project["id"], [leaf["id"]])["sessionId"]
            wait_log(api, sid, "agent: working forever")
            agent_pid = json.loads((srv.session_dir / sid / "process.json").read_text())
            sessions.append(sid)
        refused = assert_error(api.delete(f"/api/projects/{project['id']}"), 400,
                               "PROJECT_HAS_DEPENDENCIES")
        assert "2 existing task(s)" in refused["message"]
        ws.barrier()
        body = ok(api.delete(f"/api/projects/{project['id']}", params={"cascade": "true"}))
        assert body == {"success": True, "id": project["id"],
                        "deleted": {"sessions": sessions, "tasks": [leaf["id"], root["id"]]}}
        kinds = [e["type"] for e in ws.barrier()]
        assert kinds.count("session:deleted") == len(sessions)
        assert kinds.count("task:deleted") == 2 and kinds[-1] == "project:deleted"
        for path in ([f"/api/projects/{project['id']}"]
                     + [f"/api/sessions/{s}" for s in sessions]
                     + [f"/api/tasks/{t['id']}" for t in (root, leaf)]):
            assert api.get(path).status_code == 404, path
        assert ok(api.get(f"/api/tasks/{outside['id']}"))["projectId"] == keep["id"]
        assert_error(api.delete(f"/api/projects/{project['id']}", params={"cascade": "true"}),
                     404, "PROJECT_NOT_FOUND")
        if agent_pid is not None:
            wait_until(lambda: not pid_alive(agent_pid["agentPid"], agent_pid["agentStart"]),
                       15, what="the deleted session's agent to end")


def test_an_orchestrator_that_stops_its_worker_is_named_as_the_stopper(launch_server, tmp_path):
    srv = launch_server({"MAESTRO_TMUX": "0", "MAESTRO_STOP_GRACE": "1"})
    script = tmp_path / "orchestrator.sh"
    script.write_text(f"""set -e
W=$(maestro session spawn --task "$MAESTRO_TASK_IDS" --agent '{agent_cmd("stubborn_agent.py")}' \\
    --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["data"]["sessionId"])')
echo "worker=$W"
for i in $(seq 100); do
  maestro session info "$W" --json | grep -q '"status": "running"' && break
  sleep 0.2
done
maestro session stop "$W" --wait
""")
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api, workingDir=str(tmp_path))
        task = new_task(api, project["id"], title="Plan")
        stream = Stream(ws)
        lead = spawn_body(api, project["id"], [task["id"]], role="orchestrator",
                          agent=f"bash {script}")["sessionId"]
        stream.wait_for(until_status(lead, "completed", "failed"), timeout=60)
        lines = ok(api.get(f"/api/sessions/{lead}/log"))["lines"]
        assert ok(api.get(f"/api/sessions/{lead}"))["status"] == "completed", lines
        worker = next(line.split("=", 1)[1] for line in lines if line.startswith("worker="))
        assert any(f"Stopped session {worker}: stopped by session {lead}" in line
                   for line in lines), lines
        stopped = ok(api.get(f"/api/sessions/{worker}"))
        assert stopped["status"] == "failed"
        assert stopped["metadata"]["spawnedBy"] == lead
        assert stopped["metadata"]["endMessage"] == f"stopped by session {lead}"
        assert session_event(stopped, "process_exit")["stoppedBy"] == lead
