"""The board tells the truth (SPEC §15.5) and the launcher keeps claims alive (§15.3), with
real agents started by the local launcher (stand-ins in tests/agents/ that report through the
`maestro` CLI): whatever way a session ends, no task still shows an agent of it at work."""

from __future__ import annotations

import json
import os
import signal
import time

from helpers import WsClient, get, http_client, new_project, new_task, ok, wait_until
from test_launcher import Stream, agent_cmd, launch_server, spawn, until_status  # noqa: F401

AT_WORK = ("queued", "working", "needs_input")
BASE = {"MAESTRO_TMUX": "0", "MAESTRO_STOP_GRACE": "2"}


def reported_working(api, tid: str):
    return lambda: get(api, "task", tid).get("sessionStatus") == "working"


def last_entry(api, tid: str) -> dict:
    return get(api, "task", tid)["timeline"][-1]


def test_no_task_shows_an_ended_agent_at_work(launch_server):
    srv = launch_server(BASE)
    busy = agent_cmd("worker_agent.py", "--sleep", "120", "{prompt_file}")
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        pid = new_project(api)["id"]
        stopped_task, quiet_task, killed_task = (new_task(api, pid, title=t)["id"]
                                                 for t in ("stopped", "quiet", "killed"))
        stream = Stream(ws)
        stopped = spawn(api, pid, [stopped_task], agent=busy)
        killed = spawn(api, pid, [killed_task], agent=busy)
        # Reports progress, completes its task, exits 0 without reporting completion.
        quiet = spawn(api, pid, [quiet_task], agent=agent_cmd("worker_agent.py",
                                                              "{prompt_file}"))
        for tid in (stopped_task, killed_task):
            wait_until(reported_working(api, tid), timeout=60, what=f"{tid} reported working")

        # 1. Stopped while working: its task's status from that session is failed.
        ok(api.post(f"/api/sessions/{stopped}/stop"))
        stream.wait_for(until_status(stopped, "completed", "failed"), timeout=60)
        wait_until(lambda: get(api, "task", stopped_task).get("sessionStatus") == "failed",
                   what="the stopped session's task to show failed")
        assert last_entry(api, stopped_task)["message"] == \
            f"Session {stopped} was stopped: its status here was set to failed"

        # 2. Ended with exit code 0 without a report: the status it left is cleared.
        stream.wait_for(until_status(quiet, "completed", "failed"), timeout=60)
        assert ok(api.get(f"/api/sessions/{quiet}"))["status"] == "completed"
        done = get(api, "task", quiet_task)
        assert done["status"] == "completed"
        assert "sessionStatus" not in done and "sessionStatusBy" not in done
        assert last_entry(api, quiet_task)["message"] == (
            f"Session {quiet} completed: its status here (working) was cleared: "
            "it ended without a report")

    # 3. Killed while the server is down: found dead at the restart.
    srv.stop()
    info = json.loads((srv.session_dir / killed / "process.json").read_text())
    os.killpg(info["agentPgid"], signal.SIGKILL)
    os.kill(info["wrapperPid"], signal.SIGKILL)
    srv.start()
    with http_client(srv) as api:
        assert ok(api.get(f"/api/sessions/{killed}"))["status"] == "failed"
        assert get(api, "task", killed_task)["sessionStatus"] == "failed"
        assert last_entry(api, killed_task)["message"] == \
            f"Session {killed} failed: its status here was set to failed"
        for task in ok(api.get("/api/tasks", params={"projectId": pid})):
            assert task.get("sessionStatus") not in AT_WORK, task


def test_the_launcher_heartbeats_the_claims_of_a_live_agent(launch_server):
    srv = launch_server({**BASE, "MAESTRO_HEARTBEAT_SECONDS": "0.3",
                         "MAESTRO_CLAIM_MIN_TTL": "1", "MAESTRO_CLAIM_SWEEP_SECONDS": "0.2"})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        pid = new_project(api)["id"]
        own, extra = new_task(api, pid)["id"], new_task(api, pid)["id"]
        stream = Stream(ws)
        sid = spawn(api, pid, [own], agent=agent_cmd("sleepy_agent.py", "120"))
        stream.wait_for(until_status(sid, "running"), timeout=60)
        claim = ok(api.post(f"/api/tasks/{extra}/claim",
                            json={"sessionId": sid, "ttlSeconds": 1}))["claim"]
        time.sleep(2.5)  # more than twice the lease
        held = get(api, "task", extra)["claim"]
        assert held is not None and held["token"] == claim["token"]
        assert held["leaseExpiresAt"] > claim["leaseExpiresAt"]
        # The agent ends: its claims go with it in the same change.
        ok(api.post(f"/api/sessions/{sid}/stop"))
        stream.wait_for(until_status(sid, "completed", "failed"), timeout=60)
        after = get(api, "task", extra)
        assert after["claim"] is None and after["status"] == "pending"
