"""The `maestro` CLI against a real server: every command's happy path and main error, `--json`
output compared with the API, exit codes, context from flags, environment and config files."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import httpx
import pytest
from conftest import ServerProcess
from test_cli_helpers import ROOT as REPO_ROOT
from test_cli_helpers import Cli

from maestro.spawn.manifest import validate_manifest


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("cli-srv"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(srv):
    with httpx.Client(base_url=srv.url, timeout=10, trust_env=False) as client:
        yield client


@pytest.fixture
def cli(srv, tmp_path):
    return Cli(tmp_path, srv.url)


@pytest.fixture
def project(api):
    resp = api.post("/api/projects", json={"name": "CLI project", "workingDir": "/tmp/shop"})
    assert resp.status_code == 201
    return resp.json()


def new_task(api, project_id, **fields):
    resp = api.post("/api/tasks", json={"projectId": project_id, "title": "Task", **fields})
    assert resp.status_code == 201, resp.text
    return resp.json()


# ------------------------------------------------------------------ projects
def test_project_commands_match_the_api(cli, api):
    created = cli.data("project", "create", "Shop", "--dir", "/srv/shop", "--desc", "Web shop")
    assert created["name"] == "Shop"
    assert created["workingDir"] == "/srv/shop"
    assert created["description"] == "Web shop"
    assert api.get(f"/api/projects/{created['id']}").json() == created

    new_task(api, created["id"])
    listed, got, human, refused = cli.many(
        ("project", "list", "--json"), ("project", "get", created["id"], "--json"),
        ("project", "list"), ("project", "delete", created["id"]))
    assert listed.data == api.get("/api/projects").json()
    assert got.data == created
    assert created["id"] in human.stdout and "Shop" in human.stdout

    # A project with tasks cannot be deleted: the server's message and code, exit 1.
    assert refused.code == 1
    assert "Cannot delete project with 1 existing task(s)" in refused.stderr
    assert "PROJECT_HAS_DEPENDENCIES" in refused.stderr
    assert refused.stdout == ""
    assert api.get(f"/api/projects/{created['id']}").status_code == 200

    empty = cli.data("project", "create", "Empty")
    assert empty["workingDir"] == str(cli.cwd)  # defaults to the current directory
    assert cli.data("project", "delete", empty["id"]) == {"success": True, "id": empty["id"]}
    assert api.get(f"/api/projects/{empty['id']}").status_code == 404


def test_project_get_unknown_is_exit_2_with_message_and_code(cli):
    result, as_json = cli.many(("project", "get", "proj_missing"),
                               ("project", "get", "proj_missing", "--json"))
    assert result.code == 2
    assert "Project not found" in result.stderr and "PROJECT_NOT_FOUND" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""

    assert as_json.code == 2
    body = as_json.json
    assert body["success"] is False
    assert body["error"] == "resource_not_found"
    assert body["message"] == "Project not found"
    assert body["details"]["code"] == "PROJECT_NOT_FOUND"
    assert body["details"]["status"] == 404


def test_blank_project_name_is_exit_1_with_validation_error(cli, api):
    before = api.get("/api/projects").json()
    result = cli("project", "create", "   ")
    assert result.code == 1
    assert "name is required" in result.stderr and "VALIDATION_ERROR" in result.stderr
    assert api.get("/api/projects").json() == before


# ------------------------------------------------------------------ tasks
def test_task_create_list_get_match_the_api(cli, api, project):
    env = {"MAESTRO_PROJECT_ID": project["id"]}
    parent = cli.data("task", "create", "Add login", "--priority", "high", "--desc", "Email",
                      env=env)
    assert parent["status"] == "pending"
    assert parent["priority"] == "high"
    assert parent["description"] == "Email"
    assert api.get(f"/api/tasks/{parent['id']}").json() == parent

    # --parent alone is enough: the child goes to the parent's project.
    child = cli.data("task", "create", "-t", "Login form", "--parent", parent["id"])
    assert child["projectId"] == project["id"]
    assert child["parentId"] == parent["id"]

    listed, high, completed, flagged, with_children, got, several, human = cli.many(
        (("task", "list", "--json"), {"env": env}),
        (("task", "list", "--priority", "high", "--json"), {"env": env}),
        (("task", "list", "--status", "completed", "--json"), {"env": env}),
        ("task", "list", "--project", project["id"], "--status", "pending", "--json"),
        ("task", "list", parent["id"], "--json"),
        # `task get` defaults to the session's only task.
        (("task", "get", "--json"), {"env": {"MAESTRO_TASK_IDS": child["id"]}}),
        (("task", "get"), {"env": {"MAESTRO_TASK_IDS": f"{parent['id']},{child['id']}"}}),
        (("task", "list"), {"env": env}))
    assert listed.data == api.get("/api/tasks", params={"projectId": project["id"]}).json()
    assert high.data == [api.get(f"/api/tasks/{parent['id']}").json()]
    assert completed.data == []
    assert flagged.data == listed.data
    assert with_children.data["task"]["id"] == parent["id"]
    assert [t["id"] for t in with_children.data["children"]] == [child["id"]]
    assert got.data == api.get(f"/api/tasks/{child['id']}").json()
    assert several.code == 1 and "several tasks" in several.stderr
    assert "Add login" in human.stdout and "Login form" in human.stdout
    assert "pending" in human.stdout


def test_task_create_without_project_or_title_explains(cli):
    no_project, no_title = cli.many(("task", "create", "Orphan"),
                                    (("task", "create"), {"env": {"MAESTRO_PROJECT_ID": "p"}}))
    assert no_project.code == 1
    assert "No project" in no_project.stderr and "MAESTRO_PROJECT_ID" in no_project.stderr
    assert no_title.code == 1 and "title" in no_title.stderr


def test_task_update_complete_block_speak_documented_statuses(cli, api, project):
    task = new_task(api, project["id"], title="Write docs")
    updated = cli.data("task", "update", task["id"], "--status", "in_progress", "--priority",
                       "low", "--title", "Write the docs")
    assert updated["status"] == "in_progress"
    assert updated["priority"] == "low"
    assert updated["title"] == "Write the docs"
    assert isinstance(updated["startedAt"], int)
    assert api.get(f"/api/tasks/{task['id']}").json() == updated

    # The original CLI's `todo` is read as `pending`; unknown words change nothing.
    back = cli.ok("task", "update", task["id"], "--status", "todo", "--json")
    assert back.data["status"] == "pending"
    assert "pending" in back.stderr
    bad, nothing, missing_reason, unknown = cli.many(
        ("task", "update", task["id"], "--status", "cancelled"), ("task", "update", task["id"]),
        ("task", "block", task["id"]), ("task", "complete", "task_missing"))
    assert bad.code == 1
    assert "pending, in_progress, completed, blocked" in bad.stderr
    assert api.get(f"/api/tasks/{task['id']}").json()["status"] == "pending"
    assert nothing.code == 1 and "Nothing to change" in nothing.stderr
    assert missing_reason.code == 1 and "--reason" in missing_reason.stderr
    assert unknown.code == 2
    assert "Task not found" in unknown.stderr and "TASK_NOT_FOUND" in unknown.stderr

    blocked = cli.data("task", "block", task["id"], "--reason", "waiting for keys")
    assert blocked["status"] == "blocked"
    assert blocked["timeline"][-1]["type"] == "blocker"
    assert blocked["timeline"][-1]["message"] == "waiting for keys"

    done = cli.data("task", "complete", task["id"])
    assert done["status"] == "completed"
    assert isinstance(done["completedAt"], int)


def test_task_status_change_inside_a_session_is_noted_in_the_session_timeline(cli, api,
                                                                              project):
    task = new_task(api, project["id"])
    session = api.post("/api/sessions", json={"projectId": project["id"],
                                              "taskIds": [task["id"]]}).json()
    cli.ok("task", "update", task["id"], "--status", "in_progress",
           env={"MAESTRO_SESSION_ID": session["id"]})
    timeline = api.get(f"/api/sessions/{session['id']}").json()["timeline"]
    assert [(e["type"], e["taskId"]) for e in timeline] == [("task_status_changed", task["id"])]
    assert "in_progress" in timeline[0]["message"]


def test_children_tree_and_show(cli, api, project):
    root = new_task(api, project["id"], title="Epic", priority="high")
    a = new_task(api, project["id"], title="Part A", parentId=root["id"])
    a1 = new_task(api, project["id"], title="Part A.1", parentId=a["id"])
    b = new_task(api, project["id"], title="Part B", parentId=root["id"])
    api.patch(f"/api/tasks/{a1['id']}", json={"status": "blocked"})
    session = api.post("/api/sessions", json={"projectId": project["id"],
                                              "taskIds": [root["id"]]}).json()
    api.post(f"/api/sessions/{session['id']}/timeline",
             json={"type": "progress", "message": "halfway", "taskId": root["id"]})

    direct, nested, tree, blocked, shallow, drawn, shown, human, missing = cli.many(
        ("task", "children", root["id"], "--json"),
        ("task", "children", root["id"], "--recursive", "--json"),
        ("task", "tree", root["id"], "--json"),
        ("task", "tree", "--root", root["id"], "--status", "blocked", "--json"),
        ("task", "tree", root["id"], "--depth", "1", "--json"),
        ("task", "tree", "--project", project["id"]),
        ("task", "show", root["id"], "--json"), ("task", "show", root["id"]),
        ("task", "tree", "task_missing"))
    assert [t["id"] for t in direct.data] == [a["id"], b["id"]]
    assert [(n["id"], [c["id"] for c in n["children"]]) for n in nested.data] == [
        (a["id"], [a1["id"]]), (b["id"], [])]

    tree = tree.data
    assert len(tree) == 1 and tree[0]["id"] == root["id"]
    assert [c["title"] for c in tree[0]["children"]] == ["Part A", "Part B"]
    assert tree[0]["children"][0]["children"][0]["id"] == a1["id"]
    # --status keeps only branches with such tasks; --depth cuts levels.
    blocked = blocked.data
    assert blocked[0]["children"][0]["children"][0]["id"] == a1["id"]
    assert len(blocked[0]["children"]) == 1
    assert shallow.data[0]["children"] == []

    drawn = drawn.stdout
    for title in ("Epic", "Part A", "Part A.1", "Part B"):
        assert title in drawn
    assert "blocked" in drawn and "high" in drawn
    lines = drawn.splitlines()
    epic = next(i for i, line in enumerate(lines) if "Epic" in line)
    part = next(i for i, line in enumerate(lines) if "Part A.1" in line)
    assert lines[part].index("Part A.1") > lines[epic].index("Epic")  # indented under it

    shown = shown.data
    assert shown["task"] == api.get(f"/api/tasks/{root['id']}").json()
    assert [s["id"] for s in shown["sessions"]] == [session["id"]]
    assert [c["id"] for c in shown["children"]] == [a["id"], b["id"]]
    assert [(e["type"], e["source"]) for e in shown["timeline"]] == [
        ("created", "task"), ("session_started", "task"), ("progress", "session")]
    assert "Timeline" in human.stdout and "halfway" in human.stdout
    assert session["id"] in human.stdout
    assert missing.code == 2 and "Task not found" in missing.stderr


def test_ids_are_url_encoded(cli, api, project):
    # Unencoded, `../projects` would be normalised to /api/projects and "succeed".
    result, sneaky = cli.many(("task", "get", "../projects", "--json"),
                              ("session", "list", "--task", f"x&projectId={project['id']}",
                               "--json"))
    assert result.code == 2
    assert result.json["success"] is False
    assert sneaky.data == []


# ------------------------------------------------------------------ sessions and reports
def test_session_register_info_list_complete(cli, api, project):
    task = new_task(api, project["id"])
    env = {"MAESTRO_SESSION_ID": "sess_cli_hook_1", "MAESTRO_PROJECT_ID": project["id"],
           "MAESTRO_TASK_IDS": task["id"], "MAESTRO_ROLE": "worker"}
    registered = cli.data("session", "register", env=env)
    assert registered["id"] == "sess_cli_hook_1"
    assert registered["status"] == "running"
    assert registered["taskIds"] == [task["id"]]
    assert registered["metadata"] == {"role": "worker"}
    assert api.get(f"/api/tasks/{task['id']}").json()["sessionIds"] == ["sess_cli_hook_1"]

    info, listed, unknown, no_session = cli.many(
        (("session", "info", "--json"), {"env": env}),
        (("session", "list", "--task", task["id"], "--json"), {"env": env}),
        ("session", "info", "sess_missing"), ("session", "info"))
    assert info.data == api.get("/api/sessions/sess_cli_hook_1").json()
    assert [s["id"] for s in listed.data] == ["sess_cli_hook_1"]
    assert listed.data == api.get("/api/sessions", params={"taskId": task["id"]}).json()
    assert unknown.code == 2 and "SESSION_NOT_FOUND" in unknown.stderr
    assert no_session.code == 1 and "MAESTRO_SESSION_ID" in no_session.stderr

    completed = cli.data("session", "complete", env=env)
    assert completed["status"] == "completed"
    assert isinstance(completed["completedAt"], int)
    assert cli.data("session", "list", "--active", env=env) == []
    # Registering again (a resumed agent) marks the existing session running again.
    again = cli.data("session", "register", env=env)
    assert again["status"] == "running"
    assert api.get("/api/sessions/sess_cli_hook_1").json()["startedAt"] == \
        registered["startedAt"]


def test_hooks_exit_0_even_when_they_fail(cli, tmp_path):
    down = Cli(tmp_path / "down", "http://127.0.0.1:9")
    in_session = {"env": {"MAESTRO_SESSION_ID": "sess_x", "MAESTRO_PROJECT_ID": "p"}}
    results = down.many((("session", "register"), in_session),
                        (("session", "complete"), in_session),
                        (("track-file", "a.py"), in_session))
    for result in results:
        assert result.code == 0, result
        assert "Traceback" not in result.stderr
        assert "127.0.0.1:9" in result.stderr  # the failure is still said, on stderr
    # Outside a session they do nothing, and invent no session id.
    register, silent = cli.many(("session", "register"), ("track-file", "a.py"))
    assert register.code == 0
    assert silent.code == 0 and silent.stdout == "" and silent.stderr == ""


def test_report_mapping(cli, api, project):
    expected = [("progress", "working", "progress"), ("blocked", "blocked", "task_blocked"),
                ("needs-input", "needs_input", "needs_input"), ("error", "failed", "error"),
                ("complete", "completed", "task_completed")]
    cases = []
    for kind, _, _ in expected:
        tasks = [new_task(api, project["id"], title=f"{kind} {i}") for i in range(2)]
        session = api.post("/api/sessions", json={"projectId": project["id"],
                                                  "taskIds": [t["id"] for t in tasks]}).json()
        cases.append((tasks, session))
    results = cli.many(*[
        (("report", kind, f"{kind} message", "--task", ",".join(t["id"] for t in tasks),
          "--json"), {"env": {"MAESTRO_SESSION_ID": session["id"]}})
        for (kind, _, _), (tasks, session) in zip(expected, cases)])
    for (kind, session_status, timeline_type), (tasks, session), result in zip(expected, cases,
                                                                               results):
        assert result.data["sessionStatus"] == session_status
        for task in tasks:
            after = api.get(f"/api/tasks/{task['id']}").json()
            assert after["sessionStatus"] == session_status
            # The task's own status is the orchestrator's business, not the report's (E3).
            assert after["status"] == "pending"
        stored = api.get(f"/api/sessions/{session['id']}").json()
        assert [(e["type"], e["message"], e["taskId"]) for e in stored["timeline"]] == [
            (timeline_type, f"{kind} message", t["id"]) for t in tasks]
        assert stored["status"] == "running"

    # Without --task: a timeline entry only; `complete` also completes the session.
    env = {"MAESTRO_SESSION_ID": cases[0][1]["id"]}
    done, no_session, wrong_task = cli.many(
        (("report", "complete", "all done"), {"env": env}), ("report", "progress", "hello"),
        (("report", "progress", "x", "--task", "task_missing"), {"env": env}))
    assert done.code == 0
    after = api.get(f"/api/sessions/{cases[0][1]['id']}").json()
    assert after["timeline"][-1]["type"] == "task_completed"
    assert "taskId" not in after["timeline"][-1]
    assert after["status"] == "completed"
    assert no_session.code == 1 and "MAESTRO_SESSION_ID" in no_session.stderr
    assert wrong_task.code == 2


def test_deprecated_update_aliases(cli, api, project):
    session = api.post("/api/sessions", json={"projectId": project["id"], "taskIds": []}).json()
    env = {"MAESTRO_SESSION_ID": session["id"]}
    alias = cli.ok("update:blocked", "stuck on CI", env=env)
    assert "deprecated" in alias.stderr
    cli.ok("update", "still going", env=env)
    timeline = api.get(f"/api/sessions/{session['id']}").json()["timeline"]
    assert [(e["type"], e["message"]) for e in timeline] == [
        ("task_blocked", "stuck on CI"), ("progress", "still going")]


def test_agent_script_uses_only_env_and_reports(cli, api, project, tmp_path):
    """What a spawned agent does: its hooks and its report commands, nothing but env vars."""
    task = new_task(api, project["id"], title="Agent task")
    script = tmp_path / "agent.sh"
    script.write_text(f"""set -e
maestro() {{ "{sys.executable}" -m maestro "$@"; }}
maestro session register
maestro report progress "Read the code" --task "$MAESTRO_TASK_IDS"
echo "$(maestro task get --json)" > "{tmp_path}/seen.json"
maestro track-file src/login.py
maestro report complete "Login works, tests pass" --task "$MAESTRO_TASK_IDS"
maestro session complete
""")
    env = cli.env(MAESTRO_SESSION_ID="sess_agent_script", MAESTRO_PROJECT_ID=project["id"],
                  MAESTRO_TASK_IDS=task["id"])
    run = subprocess.run(["bash", str(script)], env=env, cwd=str(cli.cwd), capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr

    seen = json.loads((tmp_path / "seen.json").read_text())["data"]
    assert seen["id"] == task["id"] and seen["sessionStatus"] == "working"
    final = api.get(f"/api/tasks/{task['id']}").json()
    assert final["sessionStatus"] == "completed"
    assert final["sessionIds"] == ["sess_agent_script"]
    session = api.get("/api/sessions/sess_agent_script").json()
    assert session["status"] == "completed"
    assert [(e["type"], e["message"], e["taskId"]) for e in session["timeline"]] == [
        ("progress", "Read the code", task["id"]),
        ("task_completed", "Login works, tests pass", task["id"])]
    assert [(e["type"], e["data"]["file"]) for e in session["events"]] == [
        ("file_modified", "src/login.py")]
    assert session["events"][0]["data"]["timestamp"].endswith("Z")


def test_track_file_reads_hook_json_from_stdin(cli, api, project):
    session = api.post("/api/sessions", json={"projectId": project["id"], "taskIds": []}).json()
    hook_input = json.dumps({"tool_name": "Edit", "tool_input": {"file_path": "/w/app.py"}})
    cli.ok("track-file", env={"MAESTRO_SESSION_ID": session["id"]}, stdin=hook_input)
    events = api.get(f"/api/sessions/{session['id']}").json()["events"]
    assert [e["data"]["file"] for e in events] == ["/w/app.py"]


# ------------------------------------------------------------------ context and overview
def test_whoami_shows_context_and_where_it_comes_from(cli, srv):
    env = {"MAESTRO_PROJECT_ID": "proj_env", "MAESTRO_SESSION_ID": "sess_env",
           "MAESTRO_TASK_IDS": "task_a, task_b", "MAESTRO_TOKEN": "s3cret-user-token",
           "MAESTRO_STRATEGY": "queue"}
    data, flagged, api_url, human, as_json = cli.many(
        (("whoami", "--json"), {"env": env}),
        (("--server", "http://127.0.0.1:4999/", "whoami", "--project", "proj_flag", "--json"),
         {"env": {**env, "MAESTRO_API_URL": "http://127.0.0.1:4888"}}),
        (("whoami", "--json"), {"env": {"MAESTRO_API_URL": "http://127.0.0.1:4888"}}),
        (("whoami",), {"env": {**env, "MAESTRO_SESSION_TOKEN": "s3cret-agent-token"}}),
        (("whoami", "--json"), {"env": env}))
    data = data.data
    assert data["server"] == srv.url
    assert data["projectId"] == "proj_env" and data["sessionId"] == "sess_env"
    assert data["taskIds"] == ["task_a", "task_b"]
    assert data["strategy"] == "queue"
    assert data["tokenSet"] is True
    assert data["sources"]["server"] == "MAESTRO_SERVER_URL"
    assert data["sources"]["token"] == "MAESTRO_TOKEN"

    flagged = flagged.data
    assert flagged["server"] == "http://127.0.0.1:4999"
    assert flagged["sources"]["server"] == "--server"
    assert flagged["projectId"] == "proj_flag"
    # MAESTRO_API_URL wins over MAESTRO_SERVER_URL.
    assert api_url.data["server"] == "http://127.0.0.1:4888"

    assert "proj_env" in human.stdout and "MAESTRO_SESSION_TOKEN" in human.stdout
    assert "s3cret" not in human.stdout + human.stderr
    assert "s3cret" not in as_json.stdout


def test_dotenv_then_config_file_then_nothing(cli):
    (cli.home / ".maestro").mkdir()
    (cli.home / ".maestro" / "config").write_text(
        "MAESTRO_PROJECT_ID=proj_from_config\nMAESTRO_SESSION_ID=sess_from_config\n")
    (cli.cwd / ".env").write_text("# local\nexport MAESTRO_PROJECT_ID='proj_from_dotenv'\n")
    files, env_set = cli.many(("whoami", "--json"),
                              (("whoami", "--json"), {"env": {"MAESTRO_PROJECT_ID": "proj_env"}}))
    assert files.data["projectId"] == "proj_from_dotenv"
    assert files.data["sources"]["projectId"] == "MAESTRO_PROJECT_ID (.env)"
    assert files.data["sessionId"] == "sess_from_config"
    # Variables already set win over both files.
    assert env_set.data["projectId"] == "proj_env"


def test_status_counts_tasks_and_active_sessions(cli, api):
    proj = api.post("/api/projects", json={"name": "Status"}).json()
    t1 = new_task(api, proj["id"], priority="high")
    new_task(api, proj["id"])
    api.patch(f"/api/tasks/{t1['id']}", json={"status": "in_progress"})
    api.post("/api/sessions", json={"projectId": proj["id"], "taskIds": []})
    done = api.post("/api/sessions", json={"projectId": proj["id"], "taskIds": []}).json()
    api.patch(f"/api/sessions/{done['id']}", json={"status": "completed"})

    summary, human, no_project = cli.many(
        ("status", "--project", proj["id"], "--json"),
        (("status",), {"env": {"MAESTRO_PROJECT_ID": proj["id"]}}), ("status",))
    assert summary.data == {"project": proj["id"],
                       "tasks": {"total": 2, "byStatus": {"in_progress": 1, "pending": 1},
                                 "byPriority": {"high": 1, "medium": 1}},
                       "sessions": {"total": 2, "active": 1,
                                    "byStatus": {"running": 1, "completed": 1}}}
    assert "in_progress" in human.stdout and "1 active of 2" in human.stdout
    assert no_project.code == 1 and "No project" in no_project.stderr


def test_commands_follow_the_manifest_role(cli, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"manifestVersion": "1.0", "role": "worker", "tasks": [],
                                    "session": {"model": "sonnet",
                                                "permissionMode": "acceptEdits"}}))
    env = {"MAESTRO_MANIFEST_PATH": str(manifest)}
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps({"role": "orchestrator", "tasks": [],
                                  "session": {"allowedCommands": ["task:list"]}}))
    worker, allowed, denied, custom, plain = cli.many(
        (("commands", "--json"), {"env": env}),
        (("commands", "--check", "report:progress", "--json"), {"env": env}),
        (("commands", "--check", "project:delete", "--json"), {"env": env}),
        (("commands", "--json"), {"env": {"MAESTRO_MANIFEST_PATH": str(custom)}}),
        (("commands",), {"env": env}))
    assert worker.data["role"] == "worker"
    assert "report:*" in worker.data["allowedCommands"]
    assert "task:update" not in worker.data["allowedCommands"]
    assert allowed.data["allowed"] is True
    assert denied.data["allowed"] is False
    assert custom.data["allowedCommands"] == ["whoami", "status", "commands", "task:list"]
    assert "maestro report progress" in plain.stdout


# ------------------------------------------------------------------ manifest generate
def test_manifest_generate_reads_through_the_api(cli, api, project, tmp_path):
    first = new_task(api, project["id"], title="First", priority="high")
    second = new_task(api, project["id"], title="Second", parentId=first["id"])
    out = tmp_path / "m" / "manifest.json"
    # DATA_DIR points nowhere useful: the data can only come from the API.
    result = cli.ok("manifest", "generate", "--role", "worker", "--project-id", project["id"],
                    "--task-ids", f"{second['id']},{first['id']}", "--skills", "",
                    "--output", str(out), env={"DATA_DIR": str(tmp_path / "nothing")})
    assert result.stdout.strip() and "manifest written" in result.stderr
    manifest = validate_manifest(json.loads(out.read_text()), "worker")
    assert [t["id"] for t in manifest["tasks"]] == [second["id"], first["id"]]
    assert manifest["tasks"][0]["parentId"] == first["id"]
    assert manifest["tasks"][1]["priority"] == "high"
    assert manifest["skills"] == []
    assert manifest["session"]["workingDirectory"] == "/tmp/shop"
    assert manifest["context"] == {"custom": {"taskIds": [second["id"], first["id"]]}}

    missing = tmp_path / "missing.json"
    failed, bad_role = cli.many(
        ("manifest", "generate", "--role", "worker", "--project-id", project["id"],
         "--task-ids", "task_missing", "--output", str(missing)),
        ("manifest", "generate", "--role", "boss", "--project-id", project["id"],
         "--task-ids", first["id"], "--output", str(missing)))
    assert failed.code == 2 and "Task not found" in failed.stderr
    assert bad_role.code == 1 and "role" in bad_role.stderr
    assert not missing.exists()


# ------------------------------------------------------------------ errors and output
def test_server_down_is_one_line_and_exit_3(tmp_path):
    down = Cli(tmp_path, "http://127.0.0.1:9")
    result, as_json = down.many(("task", "list"), ("project", "list", "--json"))
    assert result.code == 3
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "http://127.0.0.1:9" in lines[0] and "maestro serve" in lines[0]
    assert result.stdout == ""
    assert as_json.code == 3
    assert as_json.json["error"] == "connection_refused"
    assert as_json.json["details"]["server"] == "http://127.0.0.1:9"


def test_bad_flags_print_usage(cli):
    result, missing_arg, as_json = cli.many(("task", "list", "--no-such-flag"),
                                            ("project", "get"),
                                            ("task", "list", "--no-such-flag", "--json"))
    assert result.code == 1
    assert "Usage: maestro task list" in result.stderr
    assert "No such option: --no-such-flag" in result.stderr
    assert result.stdout == ""
    assert missing_arg.code == 1 and "Missing argument" in missing_arg.stderr
    assert as_json.json["success"] is False and as_json.json["error"] == "invalid_usage"


def test_every_command_has_help_with_an_example():
    from typer.main import get_command
    from typer.testing import CliRunner

    from maestro.cli.main import app

    runner = CliRunner()
    root = get_command(app)
    paths = []
    for name, cmd in root.commands.items():
        if getattr(cmd, "hidden", False) or name in ("serve", "worker", "orchestrator"):
            continue  # server and agent launchers are documented with their own features
        if hasattr(cmd, "commands"):
            paths += [[name, sub] for sub in cmd.commands]
        else:
            paths.append([name])
    assert len(paths) >= 25
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"NO_COLOR": "1"})
        assert result.exit_code == 0, path
        assert "Example" in result.output, path
        assert "--json" in result.output, path


def test_human_output_colours_only_on_a_terminal(cli, api, project):
    new_task(api, project["id"], title="Coloured")

    def on_terminal(extra_env):
        leader, follower = pty.openpty()
        env = cli.env(MAESTRO_PROJECT_ID=project["id"], TERM="xterm-256color", **extra_env)
        if "NO_COLOR" not in extra_env:
            env.pop("NO_COLOR", None)
        proc = subprocess.Popen([sys.executable, "-m", "maestro", "task", "list"], env=env,
                                stdout=follower, stderr=subprocess.PIPE, cwd=str(cli.cwd))
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(30)
        os.close(leader)
        return b"".join(chunks).decode(errors="replace")

    colour = re.compile(r"\x1b\[[0-9;]*(3[0-79]|9[0-7]|38;)")  # foreground colour codes
    coloured = on_terminal({})
    assert "Coloured" in coloured and colour.search(coloured)
    plain = on_terminal({"NO_COLOR": "1"})
    assert "Coloured" in plain and not colour.search(plain)
    piped = cli.ok("task", "list", env={"MAESTRO_PROJECT_ID": project["id"], "NO_COLOR": ""})
    assert "Coloured" in piped.stdout and "\x1b[" not in piped.stdout


def test_readme_tour_runs(cli, api, tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## CLI"):]
    block = section[section.index("```bash") + len("```bash"):]
    lines = [line for line in block[:block.index("```")].strip().splitlines()
             if not line.startswith("maestro watch")]  # the live stream never ends by itself
    script = tmp_path / "tour.sh"
    script.write_text("set -e\n" + f'maestro() {{ "{sys.executable}" -m maestro "$@"; }}\n'
                      + "\n".join(lines) + '\necho "$MAESTRO_PROJECT_ID"\n')
    run = subprocess.run(["bash", str(script)], env=cli.env(), cwd=str(cli.cwd),
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    project_id = run.stdout.strip().splitlines()[-1]
    tasks = api.get("/api/tasks", params={"projectId": project_id}).json()
    assert [(t["title"], t["parentId"] is None) for t in tasks] == [("Add login", True),
                                                                   ("Login form", False)]
    assert "Add login" in run.stdout and "Login form" in run.stdout  # the tree
