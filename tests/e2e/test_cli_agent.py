"""The `maestro` CLI as agents and their hooks use it, against a real server: sessions, reports
(SPEC §12.4), track-file, an agent-style script driven only by env vars, whoami and config files,
status, commands, manifest generate."""

from __future__ import annotations

import json
import subprocess
import sys

from test_cli_helpers import Cli, new_task

from maestro.spawn.manifest import validate_manifest

pytest_plugins = ["test_cli_helpers"]


# ------------------------------------------------------------------ sessions and reports
def test_session_register_info_list_complete(cli, rest, project):
    task = new_task(rest, project["id"])
    env = {"MAESTRO_SESSION_ID": "sess_cli_hook_1", "MAESTRO_PROJECT_ID": project["id"],
           "MAESTRO_TASK_IDS": task["id"], "MAESTRO_ROLE": "worker"}
    registered = cli.data("session", "register", env=env)
    assert registered["id"] == "sess_cli_hook_1"
    assert registered["status"] == "running"
    assert registered["taskIds"] == [task["id"]]
    assert registered["metadata"] == {"role": "worker"}
    assert rest.get(f"/api/tasks/{task['id']}").json()["sessionIds"] == ["sess_cli_hook_1"]

    info, listed, unknown, no_session = cli.many(
        (("session", "info", "--json"), {"env": env}),
        (("session", "list", "--task", task["id"], "--json"), {"env": env}),
        ("session", "info", "sess_missing"), ("session", "info"))
    assert info.data == rest.get("/api/sessions/sess_cli_hook_1").json()
    assert [s["id"] for s in listed.data] == ["sess_cli_hook_1"]
    assert listed.data == rest.get("/api/sessions", params={"taskId": task["id"]}).json()
    assert unknown.code == 2 and "SESSION_NOT_FOUND" in unknown.stderr
    assert no_session.code == 1 and "MAESTRO_SESSION_ID" in no_session.stderr

    completed = cli.data("session", "complete", env=env)
    assert completed["status"] == "completed"
    assert isinstance(completed["completedAt"], int)
    assert cli.data("session", "list", "--active", env=env) == []
    # Registering again (a resumed agent) marks the existing session running again.
    again = cli.data("session", "register", env=env)
    assert again["status"] == "running"
    assert rest.get("/api/sessions/sess_cli_hook_1").json()["startedAt"] == \
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


def test_report_mapping(cli, rest, project):
    expected = [("progress", "working", "progress"), ("blocked", "blocked", "task_blocked"),
                ("needs-input", "needs_input", "needs_input"), ("error", "failed", "error"),
                ("complete", "completed", "task_completed")]
    cases = []
    for kind, _, _ in expected:
        tasks = [new_task(rest, project["id"], title=f"{kind} {i}") for i in range(2)]
        session = rest.post("/api/sessions", json={"projectId": project["id"],
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
            after = rest.get(f"/api/tasks/{task['id']}").json()
            assert after["sessionStatus"] == session_status
            # The task's own status is the orchestrator's business, not the report's (E3).
            assert after["status"] == "pending"
        stored = rest.get(f"/api/sessions/{session['id']}").json()
        assert [(e["type"], e["message"], e["taskId"]) for e in stored["timeline"]] == [
            (timeline_type, f"{kind} message", t["id"]) for t in tasks]
        assert stored["status"] == "running"

    # Without --task: a timeline entry only; `complete` also completes the session.
    env = {"MAESTRO_SESSION_ID": cases[0][1]["id"]}
    done, no_session, wrong_task = cli.many(
        (("report", "complete", "all done"), {"env": env}), ("report", "progress", "hello"),
        (("report", "progress", "x", "--task", "task_missing"), {"env": env}))
    assert done.code == 0
    after = rest.get(f"/api/sessions/{cases[0][1]['id']}").json()
    assert after["timeline"][-1]["type"] == "task_completed"
    assert "taskId" not in after["timeline"][-1]
    assert after["status"] == "completed"
    assert no_session.code == 1 and "MAESTRO_SESSION_ID" in no_session.stderr
    assert wrong_task.code == 2


def test_deprecated_update_aliases(cli, rest, project):
    session = rest.post("/api/sessions", json={"projectId": project["id"], "taskIds": []}).json()
    env = {"MAESTRO_SESSION_ID": session["id"]}
    alias = cli.ok("update:blocked", "stuck on CI", env=env)
    assert "deprecated" in alias.stderr
    cli.ok("update", "still going", env=env)
    timeline = rest.get(f"/api/sessions/{session['id']}").json()["timeline"]
    assert [(e["type"], e["message"]) for e in timeline] == [
        ("task_blocked", "stuck on CI"), ("progress", "still going")]


def test_agent_script_uses_only_env_and_reports(cli, rest, project, tmp_path):
    """What a spawned agent does: its hooks and its report commands, nothing but env vars."""
    task = new_task(rest, project["id"], title="Agent task")
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
    final = rest.get(f"/api/tasks/{task['id']}").json()
    assert final["sessionStatus"] == "completed"
    assert final["sessionIds"] == ["sess_agent_script"]
    session = rest.get("/api/sessions/sess_agent_script").json()
    assert session["status"] == "completed"
    assert [(e["type"], e["message"], e["taskId"]) for e in session["timeline"]] == [
        ("progress", "Read the code", task["id"]),
        ("task_completed", "Login works, tests pass", task["id"])]
    assert [(e["type"], e["data"]["file"]) for e in session["events"]] == [
        ("file_modified", "src/login.py")]
    assert session["events"][0]["data"]["timestamp"].endswith("Z")


def test_track_file_reads_hook_json_from_stdin(cli, rest, project):
    session = rest.post("/api/sessions", json={"projectId": project["id"], "taskIds": []}).json()
    hook_input = json.dumps({"tool_name": "Edit", "tool_input": {"file_path": "/w/app.py"}})
    cli.ok("track-file", env={"MAESTRO_SESSION_ID": session["id"]}, stdin=hook_input)
    events = rest.get(f"/api/sessions/{session['id']}").json()["events"]
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


def test_status_counts_tasks_and_active_sessions(cli, rest):
    proj = rest.post("/api/projects", json={"name": "Status"}).json()
    t1 = new_task(rest, proj["id"], priority="high")
    new_task(rest, proj["id"])
    rest.patch(f"/api/tasks/{t1['id']}", json={"status": "in_progress"})
    rest.post("/api/sessions", json={"projectId": proj["id"], "taskIds": []})
    done = rest.post("/api/sessions", json={"projectId": proj["id"], "taskIds": []}).json()
    rest.patch(f"/api/sessions/{done['id']}", json={"status": "completed"})

    summary, human, no_project = cli.many(
        ("status", "--project", proj["id"], "--json"),
        (("status",), {"env": {"MAESTRO_PROJECT_ID": proj["id"]}}), ("status",))
    assert summary.data == {"project": proj["id"], "projectName": "Status",
                       "tasks": {"total": 2, "byStatus": {"in_progress": 1, "pending": 1},
                                 "byPriority": {"high": 1, "medium": 1}},
                       "sessions": {"total": 2, "active": 1,
                                    "byStatus": {"running": 1, "completed": 1}}}
    assert "in_progress" in human.stdout and "1 active of 2" in human.stdout
    # Headed by the project's name, then its id.
    assert human.stdout.splitlines()[0].split() == ["Status", proj["id"]]
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
def test_manifest_generate_reads_through_the_api(cli, rest, project, tmp_path):
    first = new_task(rest, project["id"], title="First", priority="high")
    second = new_task(rest, project["id"], title="Second", parentId=first["id"])
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
