"""POST /api/sessions/spawn (SPEC §9) through the real server: validation order and error codes,
nothing stored on failure, the session, its environment and metadata, the manifest on disk with
its strict key set, the event order, CLI manifest generation, and `maestro worker init`'s strict
reading of the manifest. The `ui` launcher is used so that no agent runs here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    Snapshot,
    WsClient,
    assert_error,
    event_types,
    http_client,
    new_project,
    new_session,
    new_task,
    ok,
)
from server_fixtures import server_fixture
from servers import ROOT
MAESTRO = str(Path(sys.executable).parent / "maestro")

MANIFEST_KEYS = {"manifestVersion", "role", "tasks", "session", "context", "skills"}
TASK_ENTRY_KEYS = {"id", "title", "description", "acceptanceCriteria", "projectId", "createdAt",
                   "parentId", "dependencies", "priority"}
PAYLOAD_KEYS = {"session", "projectId", "taskIds", "skillIds", "name", "command", "cwd",
                "envVars", "manifestPath", "manifest", "spawnSource", "parentSessionId"}


srv = server_fixture(env={"MAESTRO_LAUNCHER": "ui"})


@pytest.fixture
def world(api, tmp_path):
    """A project with a working directory and two tasks (one a child of the other)."""
    project = new_project(api, name="Shop", workingDir=str(tmp_path))
    parent = new_task(api, project["id"], title="Auth", description="Login and logout",
                      priority="high")
    child = new_task(api, project["id"], title="User model", parentId=parent["id"])
    return project, parent, child


def spawn(api, **body):
    return api.post("/api/sessions/spawn", json=body)


# ------------------------------------------------------------------ refused requests
def test_validation_order_codes_and_nothing_stored(srv, api, world):
    project, parent, _ = world
    other = new_session(api, project["id"], [])
    P, T = project["id"], parent["id"]
    cases = [
        ({}, 400, "missing_project_id", "projectId is required"),
        ({"projectId": "", "taskIds": [T]}, 400, "missing_project_id", None),
        ({"projectId": 7, "taskIds": [T]}, 400, "missing_project_id", None),
        ({"projectId": "nope"}, 400, "invalid_task_ids", "taskIds must be a non-empty array"),
        ({"projectId": "nope", "taskIds": []}, 400, "invalid_task_ids", None),
        ({"projectId": P, "taskIds": T}, 400, "invalid_task_ids", None),
        ({"projectId": P, "taskIds": [1]}, 400, "invalid_task_ids", None),
        ({"projectId": P, "taskIds": [T], "spawnSource": "bogus", "role": "boss"}, 400,
         "invalid_spawn_source",
         "spawnSource must be one of: manual, orchestrator, ui, cli, api, session"),
        ({"projectId": P, "taskIds": [T], "spawnSource": None}, 400, "invalid_spawn_source",
         None),
        ({"projectId": P, "taskIds": [T], "spawnSource": "session", "role": "boss"}, 400,
         "missing_session_id", 'sessionId is required when spawnSource is "session"'),
        ({"projectId": P, "taskIds": [T], "sessionId": "sess_gone", "role": "boss"}, 404,
         "parent_session_not_found", "Parent session sess_gone not found"),
        ({"projectId": P, "taskIds": [T], "role": "boss", "model": "gpt"}, 400, "invalid_role",
         'role must be "worker" or "orchestrator"'),
        ({"projectId": P, "taskIds": ["task_gone"], "model": "gpt"}, 400, "VALIDATION_ERROR",
         None),
        ({"projectId": P, "taskIds": [T], "skills": "maestro-worker"}, 400, "VALIDATION_ERROR",
         None),
        ({"projectId": P, "taskIds": [T], "permissionMode": "yolo"}, 400, "VALIDATION_ERROR",
         None),
        ({"projectId": P, "taskIds": [T], "context": ["x"]}, 400, "VALIDATION_ERROR", None),
        ({"projectId": P, "taskIds": [T], "strategy": "tree"}, 400, "VALIDATION_ERROR", None),
        ({"projectId": P, "taskIds": [T], "sessionName": "x" * 1001}, 400, "VALIDATION_ERROR",
         None),
        ({"projectId": "proj_gone", "taskIds": [T, "task_gone"]}, 404, "task_not_found",
         "Task task_gone not found"),
        ({"projectId": "proj_gone", "taskIds": [T]}, 404, "project_not_found",
         "Project proj_gone not found"),
    ]
    before = Snapshot(api, srv)
    with WsClient(srv.ws_url) as ws:
        for body, status, code, message in cases:
            assert_error(spawn(api, **body), status, code, message)
        assert ws.barrier() == [], "a refused spawn must broadcast nothing"
    before.assert_unchanged()
    missing = assert_error(spawn(api, projectId="proj_gone", taskIds=[T, "task_gone"]), 404,
                           "task_not_found")
    assert missing["details"] == {"taskId": "task_gone"}
    # A parent session that exists passes check 5.
    assert ok(spawn(api, projectId=P, taskIds=[T], spawnSource="session",
                    sessionId=other["id"]), 201)


def test_not_json_and_unknown_routes(api):
    resp = api.post("/api/sessions/spawn", content=b"projectId=x",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert_error(resp, 415, "VALIDATION_ERROR")
    assert_error(api.post("/api/sessions/spawn", content=b"{nope",
                          headers={"content-type": "application/json"}), 400,
                 "VALIDATION_ERROR", "Invalid JSON body")
    # GET /api/sessions/spawn is an ordinary lookup of a session named "spawn".
    assert_error(api.get("/api/sessions/spawn"), 404, "SESSION_NOT_FOUND")


# ------------------------------------------------------------------ a successful spawn
def test_spawn_creates_session_manifest_links_and_events(srv, api, world):
    project, parent, child = world
    with WsClient(srv.ws_url) as ws:
        resp = spawn(api, projectId=project["id"], taskIds=[parent["id"], child["id"],
                                                           parent["id"]])
        body = ok(resp, 201)
        events = ws.barrier()
    sid = body["sessionId"]
    manifest_path = srv.session_dir / sid / "manifest.json"
    assert set(body) == {"success", "sessionId", "manifestPath", "message", "launch",
                         "session"}
    assert body["success"] is True
    # The `ui` launcher starts nothing: the answer says the request went to the UI.
    assert body["message"] == "Spawn request sent to Agents UI"
    assert body["launch"] == {"launcher": "ui", "state": "requested"}
    assert body["manifestPath"] == str(manifest_path)
    assert Path(body["manifestPath"]).is_absolute()

    session = body["session"]
    assert session["id"] == sid and sid.startswith("sess_")
    assert session["status"] == "spawning"
    assert session["taskIds"] == [parent["id"], child["id"]]  # duplicates dropped, order kept
    # Named after its tasks' titles (the first one, and how many more).
    assert session["name"] == "Worker: Auth +1 more"
    assert session["completedAt"] is None
    assert session["env"] == {
        "MAESTRO_SESSION_ID": sid, "MAESTRO_PROJECT_ID": project["id"],
        "MAESTRO_TASK_IDS": f"{parent['id']},{child['id']}",
        "MAESTRO_SERVER_URL": f"http://localhost:{srv.port}",
        "MAESTRO_SKILLS": "maestro-worker", "MAESTRO_MANIFEST_PATH": str(manifest_path),
        "MAESTRO_STRATEGY": "simple"}
    # spawnSource is what the caller declared; launchedBy the launcher that acted on it.
    assert session["metadata"] == {"skills": ["maestro-worker"], "spawnSource": "ui",
                                   "spawnedBy": None, "role": "worker", "context": {},
                                   "launchedBy": "ui"}
    assert ok(api.get(f"/api/sessions/{sid}")) == session

    # The manifest: exactly the keys of §9.6.
    raw = manifest_path.read_bytes()
    manifest = json.loads(raw)
    assert raw == json.dumps(manifest, indent=2, ensure_ascii=False).encode()
    assert set(manifest) == MANIFEST_KEYS
    assert manifest["manifestVersion"] == "1.0" and manifest["role"] == "worker"
    assert manifest["session"] == {"model": "sonnet", "permissionMode": "acceptEdits",
                                   "thinkingMode": "auto",
                                   "workingDirectory": project["workingDir"]}
    assert manifest["context"] == {"custom": {"taskIds": [parent["id"], child["id"]]}}
    assert manifest["skills"] == ["maestro-worker"]
    first, second = manifest["tasks"]
    assert set(first) == TASK_ENTRY_KEYS and set(second) == TASK_ENTRY_KEYS
    assert first["id"] == parent["id"] and first["title"] == "Auth"
    assert first["description"] == "Login and logout" and first["priority"] == "high"
    assert first["acceptanceCriteria"] == ["Task completion as described"]
    assert first["projectId"] == project["id"] and first["parentId"] is None
    assert first["dependencies"] == []
    assert first["createdAt"].endswith("Z") and len(first["createdAt"]) == 24
    assert second["parentId"] == parent["id"] and second["description"] == ""

    # Events: spawn_request, created, then per task session_added + updated.
    assert event_types(events) == ["session:spawn_request", "session:created",
                                   "task:session_added", "task:updated",
                                   "task:session_added", "task:updated"]
    request = events[0]["data"]
    assert set(request) == PAYLOAD_KEYS
    assert request["session"] == session
    assert request["projectId"] == project["id"]
    assert request["taskIds"] == [parent["id"], child["id"]]
    assert request["skillIds"] == ["maestro-worker"]
    assert request["name"] == session["name"]
    assert request["command"] == "maestro worker init"
    assert request["cwd"] == project["workingDir"]
    # The session's environment plus the agent's own token, which is never stored on the
    # session (only the user's clients hear it, for the terminal the UI opens).
    env_vars = dict(request["envVars"])
    assert env_vars.pop("MAESTRO_SESSION_TOKEN").startswith(f"mst.{sid}.")
    assert env_vars == session["env"]
    assert "MAESTRO_SESSION_TOKEN" not in session["env"]
    assert request["manifestPath"] == str(manifest_path)
    assert request["manifest"] == manifest
    assert request["spawnSource"] == "ui" and request["parentSessionId"] is None
    assert events[1]["data"] == session
    assert events[2]["data"] == {"taskId": parent["id"], "sessionId": sid}
    for task_event in (events[3]["data"], events[5]["data"]):
        assert sid in task_event["sessionIds"]
        assert task_event["timeline"][-1]["type"] == "session_started"
        assert task_event["timeline"][-1]["sessionId"] == sid
    stored = ok(api.get(f"/api/tasks/{child['id']}"))
    assert stored["sessionIds"] == [sid]


def test_spawn_options_reach_session_manifest_and_event(srv, api, world):
    project, parent, _ = world
    lead = new_session(api, project["id"], [])
    with WsClient(srv.ws_url) as ws:
        body = ok(spawn(api, projectId=project["id"], taskIds=[parent["id"]],
                        role="orchestrator", skills=[], model="opus",
                        permissionMode="readOnly", sessionName="Lead", spawnSource="session",
                        sessionId=lead["id"], spawnedBy="ignored", spawnReason="split the work",
                        context={"reason": "big"}, strategy="queue",
                        agent="codex"), 201)
        request = ws.barrier()[0]["data"]
    session = body["session"]
    assert session["name"] == "Lead"
    assert session["metadata"] == {"skills": [], "spawnSource": "session",
                                   "spawnedBy": lead["id"], "spawnReason": "split the work",
                                   "role": "orchestrator", "context": {"reason": "big"},
                                   "strategy": "queue", "agent": "codex",
                                   "launchedBy": "ui"}
    assert session["env"]["MAESTRO_STRATEGY"] == "queue"
    assert session["env"]["MAESTRO_SKILLS"] == ""
    assert session["env"]["MAESTRO_AGENT"] == "codex"
    assert request["command"] == "maestro orchestrator init"
    assert request["parentSessionId"] == lead["id"]
    manifest = json.loads(Path(body["manifestPath"]).read_text())
    assert manifest["role"] == "orchestrator" and manifest["skills"] == []
    assert manifest["strategy"] == "queue"
    assert manifest["session"]["model"] == "opus"
    assert manifest["session"]["permissionMode"] == "readOnly"
    # spawnedBy alone names the parent when no sessionId is given.
    other = ok(spawn(api, projectId=project["id"], taskIds=[parent["id"]], spawnedBy="sess_x",
                     spawnSource="orchestrator"), 201)
    assert other["session"]["metadata"]["spawnedBy"] == "sess_x"


def test_spawn_without_working_dir_omits_it(api):
    project = new_project(api, name="Bare")
    task = new_task(api, project["id"])
    body = ok(spawn(api, projectId=project["id"], taskIds=[task["id"]]), 201)
    manifest = json.loads(Path(body["manifestPath"]).read_text())
    assert "workingDirectory" not in manifest["session"]


def test_openapi_lists_spawn_and_control_routes(api):
    paths = ok(api.get("/openapi.json"))["paths"]
    assert "post" in paths["/api/sessions/spawn"]
    assert "post" in paths["/api/sessions/{id}/stop"]
    assert "get" in paths["/api/sessions/{id}/log"]


# ------------------------------------------------------------------ MANIFEST_GENERATOR=cli
def test_cli_manifest_generation_matches_and_failure_stores_nothing(make_server):
    good = make_server(env={"MAESTRO_LAUNCHER": "ui", "MANIFEST_GENERATOR": "cli",
                            "MAESTRO_CLI_PATH": MAESTRO})
    bad = make_server(env={"MAESTRO_LAUNCHER": "ui", "MANIFEST_GENERATOR": "cli",
                           "MAESTRO_CLI_PATH": str(ROOT / "tests" / "agents" /
                                                   "failing_agent.py")})
    with http_client(good) as api:
        project = new_project(api, workingDir="/srv/shop")
        task = new_task(api, project["id"], title="Ship it")
        body = ok(spawn(api, projectId=project["id"], taskIds=[task["id"]], model="haiku"),
                  201)
        manifest = json.loads(Path(body["manifestPath"]).read_text())
        assert set(manifest) == MANIFEST_KEYS
        assert manifest["tasks"][0]["id"] == task["id"]
        assert manifest["session"]["model"] == "haiku"
        assert manifest["session"]["workingDirectory"] == "/srv/shop"
    with http_client(bad) as api:
        project = new_project(api)
        task = new_task(api, project["id"])
        before = Snapshot(api, bad)
        resp = spawn(api, projectId=project["id"], taskIds=[task["id"]])
        err = assert_error(resp, 500, "manifest_generation_failed")
        assert err["message"].startswith("Failed to generate manifest: ")
        assert "giving up" in err["message"]  # the generator's own output explains why
        before.assert_unchanged()


# ------------------------------------------------------------------ the agent side's reading
def _init(role: str, manifest_path: Path, tmp_path: Path, **extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env.update({"MAESTRO_MANIFEST_PATH": str(manifest_path), "MAESTRO_AGENT": "true",
                "MAESTRO_SERVER_URL": "http://127.0.0.1:9"}, **extra)
    return subprocess.run([MAESTRO, role, "init"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)


def test_worker_init_reads_manifests_strictly(api, world, tmp_path):
    project, parent, _ = world
    body = ok(spawn(api, projectId=project["id"], taskIds=[parent["id"]]), 201)
    good = json.loads(Path(body["manifestPath"]).read_text())
    path = tmp_path / "manifest.json"

    def variant(change) -> Path:
        doc = json.loads(json.dumps(good))
        change(doc)
        path.write_text(json.dumps(doc))
        return path

    # The spawned manifest is accepted (the agent, `true`, exits 0).
    assert _init("worker", variant(lambda d: None), tmp_path).returncode == 0
    refused = [
        lambda d: d.update(extra=1),
        lambda d: d["tasks"][0].update(notes="x"),
        lambda d: d["session"].update(sandbox=True),
        lambda d: d["context"].update(other={}),
        lambda d: d.update(strategy="tree"),
    ]
    for change in refused:
        result = _init("worker", variant(change), tmp_path)
        assert result.returncode == 1, result.stderr
        assert "invalid manifest" in result.stderr
    result = _init("orchestrator", variant(lambda d: None), tmp_path)
    assert result.returncode == 1 and "worker role" in result.stderr
    result = _init("worker", tmp_path / "missing.json", tmp_path)
    assert result.returncode == 1 and "cannot read manifest" in result.stderr


def test_a_ui_run_agent_settles_its_own_session(srv, api, world):
    """With the `ui` launcher a desktop UI runs the spawn request's command with its envVars;
    `worker init` then reports the end of the agent itself (nobody else follows it)."""
    project, parent, _ = world
    agents = ROOT / "tests" / "agents"
    ran = ok(spawn(api, projectId=project["id"], taskIds=[parent["id"]]), 201)["session"]
    broken = ok(spawn(api, projectId=project["id"], taskIds=[parent["id"]]), 201)["session"]
    for session, agent, code in (
            (ran, f"{sys.executable} {agents / 'worker_agent.py'} {{prompt_file}}", 0),
            (broken, "no-such-agent-cli", 5)):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
        env.update(session["env"], MAESTRO_AGENT=agent,
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        result = subprocess.run([MAESTRO, "worker", "init"], env=env, cwd=project["workingDir"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == code, result.stdout + result.stderr
    done = ok(api.get(f"/api/sessions/{ran['id']}"))
    assert done["status"] == "completed"
    assert done["events"][-1]["type"] == "process_exit"
    assert ok(api.get(f"/api/tasks/{parent['id']}"))["status"] == "completed"
    failed = ok(api.get(f"/api/sessions/{broken['id']}"))
    assert failed["status"] == "failed"
    assert failed["events"][-1]["type"] == "agent_launch_failed"
    assert "not found" in failed["events"][-1]["data"]["message"]
