"""The CLI's side of sessions that work apart: `session spawn --isolation/--base`, a project's
`--isolation/--base-ref` (`project create|update|get`), and `maestro watch` telling of merges,
overlapping changes and claims in one readable line each. Real git repositories in temp
folders, a real server whose local launcher starts real agents (tests/agents/git_agent.py,
given its file through `env` on its command line), the real `maestro` CLI as a subprocess."""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import http_client, new_project, new_task, ok, wait_until
from test_cli_helpers import Cli
from test_cli_live import Lines, start_watch, stop, ws_clients
from test_launcher import agent_cmd, launch_server  # noqa: F401
from test_workspaces import BASE_ENV, git, process_started, repo, wait_ended, wait_log  # noqa: F401


def agent(**env: str) -> str:
    """The fake agent's command line, with its own variables (AGENT_FILE, AGENT_HOLD, …)."""
    return " ".join(["env", *(f"{k}={v}" for k, v in env.items()), agent_cmd("git_agent.py")])


def with_develop(repo: Path) -> str:
    """Add a branch `develop` one commit ahead of `main` (main stays checked out)."""
    git(repo, "checkout", "-q", "-b", "develop")
    (repo / "develop.txt").write_text("only on develop\n")
    git(repo, "add", "develop.txt")
    git(repo, "commit", "-q", "-m", "Develop work")
    commit = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    return commit


def sessions_of(api, project_id: str) -> list[str]:
    return [s["id"] for s in ok(api.get("/api/sessions", params={"projectId": project_id}))]


# ------------------------------------------------------------------ project settings
def test_project_create_update_and_show_the_workspace_settings(launch_server, repo, tmp_path):
    srv = launch_server(BASE_ENV)
    cli = Cli(tmp_path / "cli", srv.url)
    with http_client(srv) as api:
        created = cli.data("project", "create", "Shop", "--dir", str(repo), "--isolation",
                           "none", "--base-ref", "develop")
        pid = created["id"]
        stored = ok(api.get(f"/api/projects/{pid}"))
        assert (stored["isolation"], stored["baseRef"]) == ("none", "develop")
        shown = cli.ok("project", "get", pid).stdout
        assert re.search(r"Isolation\s+none \(sessions work in the working dir itself\)", shown)
        assert re.search(r"Base ref\s+develop", shown)

        # Update: only what is given changes; an empty --base-ref goes back to the default.
        updated = cli.data("project", "update", pid, "--isolation", "worktree", "--base-ref", "")
        assert updated["name"] == "Shop" and updated["workingDir"] == str(repo)
        stored = ok(api.get(f"/api/projects/{pid}"))
        assert (stored["isolation"], stored["baseRef"]) == ("worktree", "")
        shown = cli.ok("project", "show", pid).stdout
        assert re.search(r"Isolation\s+worktree \(each session in a git worktree", shown)
        assert re.search(r"Base ref\s+the main worktree's current branch", shown)
        human = cli.ok("project", "update", pid, "--name", "Shop 2", "--base-ref", "main")
        assert f"Updated project {pid} (Shop 2)" in human.stdout
        assert re.search(r"Base ref\s+main", human.stdout)
        stored = ok(api.get(f"/api/projects/{pid}"))
        assert (stored["name"], stored["isolation"], stored["baseRef"]) == ("Shop 2", "worktree",
                                                                            "main")

        # A project made without the flags has neither; `get` says what applies.
        plain = cli.data("project", "create", "Plain", "--dir", str(repo))
        assert "isolation" not in plain and "baseRef" not in plain
        assert re.search(r"Isolation\s+worktree \(default\)",
                         cli.ok("project", "get", plain["id"]).stdout)

        # Refusals change nothing: a bad isolation (caught by the CLI), a bad ref (by the
        # server), nothing to change.
        bad = cli("project", "update", pid, "--isolation", "sometimes")
        assert bad.code == 1 and "Unknown isolation 'sometimes'" in bad.stderr
        assert "worktree, none" in bad.stderr
        bad_create = cli("project", "create", "Nope", "--isolation", "sometimes", "--json")
        assert bad_create.code == 1 and bad_create.json["success"] is False
        bad_ref = cli("project", "update", pid, "--base-ref=two words", "--json")
        assert bad_ref.code == 1 and bad_ref.json["details"]["code"] == "VALIDATION_ERROR"
        nothing = cli("project", "update", pid)
        assert nothing.code == 1 and "Nothing to change" in nothing.stderr
        assert ok(api.get(f"/api/projects/{pid}")) == stored
        assert sorted(p["name"] for p in ok(api.get("/api/projects"))) == ["Plain", "Shop 2"]


# ------------------------------------------------------------------ spawn flags
def test_spawn_isolation_none_and_base_choose_where_the_agent_works(launch_server, repo,
                                                                    tmp_path):
    develop = with_develop(repo)
    srv = launch_server(BASE_ENV)
    cli = Cli(tmp_path / "cli", srv.url)
    with http_client(srv) as api:
        project = new_project(api, name="Shop", workingDir=str(repo))
        pid = project["id"]
        task = new_task(api, pid, title="Add login")

        # --isolation none: the agent works (and commits) in the project's folder itself.
        shared = cli.data("session", "spawn", "--task", task["id"], "--isolation", "none",
                          "--agent", agent(AGENT_FILE="shared.py"))
        sid = shared["sessionId"]
        assert shared["session"]["workspace"] == {
            "mode": "shared", "path": str(repo), "reason": "isolation is none (spawn request)"}
        ended = wait_ended(api, sid)
        assert ended["status"] == "completed", ok(api.get(f"/api/sessions/{sid}/log"))
        assert process_started(ended)["cwd"] == str(repo)
        assert (repo / "shared.py").read_text() == f"written by {sid}\n"
        assert git(repo, "log", "-1", "--format=%s") == f"{sid}: shared.py"
        assert git(repo, "branch", "--show-current") == "main"
        assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
        info = cli.ok("session", "info", sid).stdout
        assert "shared (isolation is none (spawn request))" in info

        # --base develop: a worktree whose branch starts at develop, while main is checked out.
        human = cli.ok("session", "spawn", "--task", task["id"], "--base", "develop",
                       "--agent", agent(AGENT_FILE="login.py"))
        sid = re.search(r"Spawned session (\S+)", human.stdout).group(1)
        ws = ok(api.get(f"/api/sessions/{sid}"))["workspace"]
        assert ws["mode"] == "worktree" and ws["state"] == "active"
        assert (ws["baseRef"], ws["baseCommit"]) == ("develop", develop)
        assert f"Works on branch {ws['branch']} from develop ({develop[:10]}" in human.stdout
        ended = wait_ended(api, sid)
        assert ended["status"] == "completed", ok(api.get(f"/api/sessions/{sid}/log"))
        assert process_started(ended)["cwd"] == ws["path"] != str(repo)
        assert (Path(ws["path"]) / "develop.txt").read_text() == "only on develop\n"
        assert git(ws["path"], "rev-parse", "HEAD~1") == develop  # its commit sits on develop
        assert (Path(ws["path"]) / "login.py").read_text() == f"written by {sid}\n"
        assert not (repo / "login.py").exists() and not (repo / "develop.txt").exists()

        # Refused spawns create nothing: a bad --isolation (CLI) and a ref naming no commit.
        before = sessions_of(api, pid)
        bad = cli("session", "spawn", "--task", task["id"], "--isolation", "sometimes")
        assert bad.code == 1 and "Unknown isolation 'sometimes'" in bad.stderr
        missing = cli("session", "spawn", "--task", task["id"], "--base", "no-such-branch",
                      "--json")
        assert missing.code == 1, missing.stdout + missing.stderr
        assert missing.json["details"]["code"] == "VALIDATION_ERROR"
        assert "no-such-branch" in missing.json["message"]
        assert sessions_of(api, pid) == before
        assert git(repo, "branch", "--list", "maestro/*").count("maestro/") == 1

        # The request's --isolation wins over the project's setting.
        ok(api.put(f"/api/projects/{pid}", json={"isolation": "none"}))
        isolated = cli.data("session", "spawn", "--task", task["id"], "--isolation", "worktree",
                            "--agent", agent(AGENT_FILE="search.py"))
        assert isolated["session"]["workspace"]["mode"] == "worktree"
        assert isolated["session"]["workspace"]["baseRef"] == "main"
        wait_ended(api, isolated["sessionId"])
        assert git(repo, "branch", "--list", "maestro/*").count("maestro/") == 2


# ------------------------------------------------------------------ watch
def test_watch_tells_of_overlaps_merges_and_claims(launch_server, repo, tmp_path):
    srv = launch_server(BASE_ENV)
    cli = Cli(tmp_path / "cli", srv.url)
    release = tmp_path / "release"
    with http_client(srv) as api:
        project = new_project(api, name="Shop", workingDir=str(repo))
        pid = project["id"]
        elsewhere = new_project(api, name="Elsewhere")
        first = new_task(api, pid, title="Reword the file")
        second = new_task(api, pid, title="Rewrite the file")
        by_project = start_watch(cli, "--project", pid)
        by_task = start_watch(cli, "--task", first["id"])
        as_json = start_watch(cli, "--project", pid, "--json")
        try:
            lines, task_lines, json_lines = (Lines(by_project.stdout), Lines(by_task.stdout),
                                             Lines(as_json.stdout))
            wait_until(lambda: ws_clients(srv.url) == 3, 20, what="three watchers connected")
            a = cli.data("session", "spawn", "--task", first["id"], "--agent", agent(
                AGENT_FILE="shared.txt", AGENT_TEXT="A", AGENT_HOLD=str(release)))["sessionId"]
            b = cli.data("session", "spawn", "--task", second["id"], "--agent", agent(
                AGENT_FILE="shared.txt", AGENT_TEXT="B", AGENT_HOLD=str(release)))["sessionId"]
            for sid in (a, b):
                wait_log(api, sid, "agent: work written")
            branch = {sid: ok(api.get(f"/api/sessions/{sid}"))["workspace"]["branch"]
                      for sid in (a, b)}
            first_id, second_id = sorted([a, b])

            # Both change shared.txt: which sessions, on which branches, which files.
            said = f"sessions {first_id} ({branch[first_id]}) and {second_id} " \
                   f"({branch[second_id]}) both change shared.txt"
            overlap = lines.wait_for(lambda text: "session:overlap" in text, 60)
            assert overlap.endswith(said), overlap
            assert task_lines.wait_for(lambda text: "session:overlap" in text).endswith(said)
            event = json.loads(json_lines.wait_for(lambda text: "session:overlap" in text))
            assert event["data"]["data"]["sessionIds"] == [first_id, second_id]

            release.write_text("go")
            for sid in (a, b):
                assert wait_ended(api, sid)["status"] == "completed"
            merged = cli.data("session", "merge", a)
            commit = merged["commit"]
            said = f"session {a} merged {branch[a]} into main (fast-forward, {commit[:10]}) · " \
                   "1 file(s): shared.txt · worktree removed"
            line = lines.wait_for(lambda text: "session:merged" in text)
            assert line.endswith(said), line
            assert task_lines.wait_for(lambda text: "session:merged" in text).endswith(said)
            event = json.loads(json_lines.wait_for(lambda text: "session:merged" in text))
            assert event["data"]["data"]["sessionId"] == a
            assert event["data"]["data"]["commit"] == commit == git(repo, "rev-parse", "HEAD")
            refused = cli("session", "merge", b)
            assert refused.code == 1 and "Conflicting files: shared.txt" in refused.stderr

            # Claims, in words; what happens in another project is not shown.
            new_task(api, elsewhere["id"], title="Not watched")
            holder = ok(api.post("/api/sessions", json={"projectId": pid, "name": "Holder",
                                                          "taskIds": []}), 201)["id"]
            me = {"MAESTRO_SESSION_ID": holder}
            cli.ok("task", "claim", second["id"], env=me)
            cli.ok("task", "release", second["id"], env=me)
            claimed = lines.wait_for(lambda text: "task:claimed" in text)
            assert re.search(rf"task {second['id']} claimed by session {holder} \(token \d+\)$",
                             claimed), claimed
            released = lines.wait_for(lambda text: "task:claim_released" in text)
            assert re.search(rf"task {second['id']} released by session {holder} "
                             r"\(token \d+\)$", released), released
            assert not any("Not watched" in text or "None" in text for text in lines.seen)
            # The task watcher saw its own task's session, never the other task's claim.
            cli.ok("task", "claim", first["id"], env=me)
            claimed = task_lines.wait_for(lambda text: "task:claimed" in text)
            assert re.search(rf"task {first['id']} claimed by session {holder} \(token \d+\)$",
                             claimed), claimed
            assert not any(second["id"] in text for text in task_lines.seen)
        finally:
            for proc in (by_project, by_task, as_json):
                stop(proc)
