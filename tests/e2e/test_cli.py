"""The `maestro` CLI against a real server: projects and tasks (every command's happy path and
main error, `--json` output compared with the API), exit codes, usage errors, help and colours."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from test_cli_helpers import ROOT as REPO_ROOT
from test_cli_helpers import Cli, new_task

pytest_plugins = ["test_cli_helpers"]


# ------------------------------------------------------------------ projects
def test_project_commands_match_the_api(cli, rest):
    created = cli.data("project", "create", "Shop", "--dir", "/srv/shop", "--desc", "Web shop")
    assert created["name"] == "Shop"
    assert created["workingDir"] == "/srv/shop"
    assert created["description"] == "Web shop"
    assert rest.get(f"/api/projects/{created['id']}").json() == created

    new_task(rest, created["id"])
    listed, got, human, refused = cli.many(
        ("project", "list", "--json"), ("project", "get", created["id"], "--json"),
        ("project", "list"), ("project", "delete", created["id"]))
    assert listed.data == rest.get("/api/projects").json()
    assert got.data == created
    assert created["id"] in human.stdout and "Shop" in human.stdout

    # A project with tasks cannot be deleted: the server's message and code, exit 1.
    assert refused.code == 1
    assert "Cannot delete project with 1 existing task(s)" in refused.stderr
    assert "PROJECT_HAS_DEPENDENCIES" in refused.stderr
    assert refused.stdout == ""
    assert rest.get(f"/api/projects/{created['id']}").status_code == 200

    empty = cli.data("project", "create", "Empty")
    assert empty["workingDir"] == str(cli.cwd)  # defaults to the current directory
    assert cli.data("project", "delete", empty["id"]) == {"success": True, "id": empty["id"]}
    assert rest.get(f"/api/projects/{empty['id']}").status_code == 404


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


def test_blank_project_name_is_exit_1_with_validation_error(cli, rest):
    before = rest.get("/api/projects").json()
    result = cli("project", "create", "   ")
    assert result.code == 1
    assert "name is required" in result.stderr and "VALIDATION_ERROR" in result.stderr
    assert rest.get("/api/projects").json() == before


# ------------------------------------------------------------------ tasks
def test_task_create_list_get_match_the_api(cli, rest, project):
    env = {"MAESTRO_PROJECT_ID": project["id"]}
    parent = cli.data("task", "create", "Add login", "--priority", "high", "--desc", "Email",
                      env=env)
    assert parent["status"] == "pending"
    assert parent["priority"] == "high"
    assert parent["description"] == "Email"
    assert rest.get(f"/api/tasks/{parent['id']}").json() == parent

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
    assert listed.data == rest.get("/api/tasks", params={"projectId": project["id"]}).json()
    assert high.data == [rest.get(f"/api/tasks/{parent['id']}").json()]
    assert completed.data == []
    assert flagged.data == listed.data
    assert with_children.data["task"]["id"] == parent["id"]
    assert [t["id"] for t in with_children.data["children"]] == [child["id"]]
    assert got.data == rest.get(f"/api/tasks/{child['id']}").json()
    assert several.code == 1 and "several tasks" in several.stderr
    assert "Add login" in human.stdout and "Login form" in human.stdout
    assert "pending" in human.stdout


def test_task_create_without_project_or_title_explains(cli):
    no_project, no_title = cli.many(("task", "create", "Orphan"),
                                    (("task", "create"), {"env": {"MAESTRO_PROJECT_ID": "p"}}))
    assert no_project.code == 1
    assert "No project" in no_project.stderr and "MAESTRO_PROJECT_ID" in no_project.stderr
    assert no_title.code == 1 and "title" in no_title.stderr


def test_task_update_complete_block_speak_documented_statuses(cli, rest, project):
    task = new_task(rest, project["id"], title="Write docs")
    updated = cli.data("task", "update", task["id"], "--status", "in_progress", "--priority",
                       "low", "--title", "Write the docs")
    assert updated["status"] == "in_progress"
    assert updated["priority"] == "low"
    assert updated["title"] == "Write the docs"
    assert isinstance(updated["startedAt"], int)
    assert rest.get(f"/api/tasks/{task['id']}").json() == updated

    # The original CLI's `todo` is read as `pending`; unknown words change nothing.
    back = cli.ok("task", "update", task["id"], "--status", "todo", "--json")
    assert back.data["status"] == "pending"
    assert "pending" in back.stderr
    bad, nothing, missing_reason, unknown = cli.many(
        ("task", "update", task["id"], "--status", "cancelled"), ("task", "update", task["id"]),
        ("task", "block", task["id"]), ("task", "complete", "task_missing"))
    assert bad.code == 1
    assert "pending, in_progress, completed, blocked" in bad.stderr
    assert rest.get(f"/api/tasks/{task['id']}").json()["status"] == "pending"
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


def test_task_status_change_inside_a_session_is_noted_in_the_session_timeline(cli, rest,
                                                                              project):
    task = new_task(rest, project["id"])
    session = rest.post("/api/sessions", json={"projectId": project["id"],
                                              "taskIds": [task["id"]]}).json()
    cli.ok("task", "update", task["id"], "--status", "in_progress",
           env={"MAESTRO_SESSION_ID": session["id"]})
    timeline = rest.get(f"/api/sessions/{session['id']}").json()["timeline"]
    assert [(e["type"], e["taskId"]) for e in timeline] == [("task_status_changed", task["id"])]
    assert "in_progress" in timeline[0]["message"]


def test_children_tree_and_show(cli, rest, project):
    root = new_task(rest, project["id"], title="Epic", priority="high")
    a = new_task(rest, project["id"], title="Part A", parentId=root["id"])
    a1 = new_task(rest, project["id"], title="Part A.1", parentId=a["id"])
    b = new_task(rest, project["id"], title="Part B", parentId=root["id"])
    rest.patch(f"/api/tasks/{a1['id']}", json={"status": "blocked"})
    session = rest.post("/api/sessions", json={"projectId": project["id"],
                                              "taskIds": [root["id"]]}).json()
    rest.post(f"/api/sessions/{session['id']}/timeline",
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
    assert shown["task"] == rest.get(f"/api/tasks/{root['id']}").json()
    assert [s["id"] for s in shown["sessions"]] == [session["id"]]
    assert [c["id"] for c in shown["children"]] == [a["id"], b["id"]]
    assert [(e["type"], e["source"]) for e in shown["timeline"]] == [
        ("created", "task"), ("session_started", "task"), ("progress", "session")]
    assert "Timeline" in human.stdout and "halfway" in human.stdout
    assert session["id"] in human.stdout
    assert missing.code == 2 and "Task not found" in missing.stderr


def test_ids_are_url_encoded(cli, rest, project):
    # Unencoded, `../projects` would be normalised to /api/projects and "succeed".
    result, sneaky = cli.many(("task", "get", "../projects", "--json"),
                              ("session", "list", "--task", f"x&projectId={project['id']}",
                               "--json"))
    assert result.code == 2
    assert result.json["success"] is False
    assert sneaky.data == []


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
        if getattr(cmd, "hidden", False):
            continue
        if hasattr(cmd, "commands"):
            paths += [[name, sub] for sub in cmd.commands]
        else:
            paths.append([name])
    assert len(paths) >= 25
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"NO_COLOR": "1"})
        assert result.exit_code == 0, path
        assert "Example" in result.output, path
        if path[0] not in ("serve", "worker", "orchestrator"):
            # The server and the agent launchers print no data, so they have no --json.
            assert "--json" in result.output, path


def test_human_output_colours_only_on_a_terminal(cli, rest, project):
    new_task(rest, project["id"], title="Coloured")

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


def test_readme_tour_runs(cli, rest, tmp_path):
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
    tasks = rest.get("/api/tasks", params={"projectId": project_id}).json()
    assert [(t["title"], t["parentId"] is None) for t in tasks] == [("Add login", True),
                                                                   ("Login form", False)]
    assert "Add login" in run.stdout and "Login form" in run.stdout  # the tree
