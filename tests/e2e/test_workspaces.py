"""A git worktree per spawned session, and a reviewed way back: real git repositories in temp
folders, real agents started by the local launcher (tests/agents/git_agent.py writes and commits
a file in its working folder), the real server's diff, merge and clean-up, the CLI, restarts
and kill -9. Nothing lands in the main checkout before a merge; nothing that holds work is
ever removed unless asked for explicitly. (Rules that need no running agent:
test_workspace_rules.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    WsClient,
    assert_error,
    http_client,
    new_project,
    new_task,
    ok,
    wait_until,
)
from test_launcher import Stream, agent_cmd, launch_server  # noqa: F401

from maestro.workspace import naming

MAESTRO = [sys.executable, "-m", "maestro"]
BASE_ENV = {"MAESTRO_TMUX": "0", "MAESTRO_STOP_GRACE": "1",
            "MAESTRO_WORKSPACE_SCAN_SECONDS": "0.3",
            "MAESTRO_AGENT": agent_cmd("git_agent.py")}
ENDED = ("completed", "failed")


def git(repo: Path | str, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=str(repo), capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A repository with one commit on `main` (its own identity, so commits work anywhere)."""
    path = tmp_path / "shop"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "Dev")
    (path / "README").write_text("The shop\n")
    (path / "shared.txt").write_text("original\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "Start")
    return path


def main_state(repo: Path) -> dict:
    """What a refused merge must leave alone in the main checkout."""
    files = {p.relative_to(repo).as_posix(): p.read_bytes() for p in repo.rglob("*")
             if p.is_file() and ".git" not in p.relative_to(repo).parts}
    return {"head": git(repo, "rev-parse", "HEAD"), "status": git(repo, "status", "--porcelain"),
            "files": files, "branch": git(repo, "branch", "--show-current")}


def spawn(api, project_id: str, task_id: str, **extra) -> dict:
    body = ok(api.post("/api/sessions/spawn", json={"projectId": project_id,
                                                    "taskIds": [task_id], **extra}), 201)
    return body["session"]


def session(api, sid: str) -> dict:
    return ok(api.get(f"/api/sessions/{sid}"))


def wait_ended(api, sid: str, timeout: float = 90) -> dict:
    return wait_until(lambda: (s := session(api, sid))["status"] in ENDED and s, timeout,
                      what=f"session {sid} to end")


def wait_log(api, sid: str, text: str, timeout: float = 60) -> None:
    wait_until(lambda: any(text in line for line in ok(api.get(
        f"/api/sessions/{sid}/log"))["lines"]), timeout, what=f"{text!r} from {sid}")


def maestro_cli(srv, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env.update(MAESTRO_SERVER_URL=srv.url, MAESTRO_RETRIES="0", NO_COLOR="1")
    return subprocess.run([*MAESTRO, *args], capture_output=True, text=True, timeout=60,
                          env=env, check=False)


def process_started(s: dict) -> dict:
    return [e for e in s["events"] if e["type"] == "process_started"][0]["data"]


# ------------------------------------------------------------------ parallel work, merged back
def test_three_agents_work_apart_and_three_merges_land_all(launch_server, repo):
    srv = launch_server(BASE_ENV)
    start = main_state(repo)
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api, name="Shop", workingDir=str(repo))
        names = {"login.py": "Add login", "search.py": "Add search", "billing.py": "Add billing"}
        tasks = {f: new_task(api, project["id"], title=t) for f, t in names.items()}
        spawned = {f: spawn(api, project["id"], tasks[f]["id"], env={"AGENT_FILE": f})
                   for f in names}
        sids = {f: s["id"] for f, s in spawned.items()}
        for s in spawned.values():  # the worktree is there before the agent starts
            assert s["workspace"]["mode"] == "worktree" and os.path.isdir(s["workspace"]["path"])
        ended = {f: wait_ended(api, sid) for f, sid in sids.items()}

        paths, branches = set(), set()
        for name, s in ended.items():
            assert s["status"] == "completed", ok(api.get(f"/api/sessions/{s['id']}/log"))
            ws_ = s["workspace"]
            assert ws_["mode"] == "worktree" and ws_["state"] == "active"
            assert ws_["baseRef"] == "main" and ws_["baseCommit"] == start["head"]
            assert ws_["repo"] == str(repo)
            assert ws_["branch"].startswith("maestro/" + naming.slugify(names[name]) + "-")
            assert Path(ws_["path"]).parent.parent == srv.tmp / "worktrees"
            assert ws_["cwd"] == ws_["path"] and process_started(s)["cwd"] == ws_["path"]
            assert git(ws_["path"], "branch", "--show-current") == ws_["branch"]
            # The agent ran in its worktree with its own identity: its file names its session
            # and its report through the CLI reached its session.
            assert (Path(ws_["path"]) / name).read_text() == f"written by {s['id']}\n"
            assert [e["message"] for e in s.get("timeline", [])] == [f"wrote {name}"]
            assert s["env"]["MAESTRO_WORKSPACE_BRANCH"] == ws_["branch"]
            prompt = (srv.session_dir / s["id"] / "prompt.md").read_text()
            assert f"on branch `{ws_['branch']}`, made from `main`" in prompt
            paths.add(ws_["path"])
            branches.add(ws_["branch"])
        assert len(paths) == 3 and len(branches) == 3
        assert main_state(repo) == start  # the main checkout is untouched until a merge

        # Review: the diff against the base, for a person (API) and the CLI.
        diff = ok(api.get(f"/api/sessions/{sids['login.py']}/diff"))
        assert diff["files"] == [{"path": "login.py", "status": "A", "added": 1, "deleted": 0,
                                  "uncommitted": False}]
        assert diff["includesUncommitted"] is True and diff["commitCount"] == 1
        assert f"+written by {sids['login.py']}" in diff["patch"]
        shown = maestro_cli(srv, "session", "diff", sids["login.py"])
        assert shown.returncode == 0, shown.stderr
        assert "login.py" in shown.stdout and f"+written by {sids['login.py']}" in shown.stdout
        wait_until(lambda: all(session(api, sid)["workspace"].get("changedFiles") == [f]
                               for f, sid in sids.items()), 30, what="changed files scanned")
        assert all(session(api, sid)["workspace"]["overlaps"] == [] for sid in sids.values())

        # A dirty main worktree, or one on another branch, refuses the merge and keeps all.
        (repo / "README").write_text("edited by hand\n")
        dirty = main_state(repo)
        body = assert_error(api.post(f"/api/sessions/{sids['login.py']}/merge"), 409,
                            "MAIN_WORKTREE_DIRTY")
        assert body["details"]["files"] == ["README"]
        assert main_state(repo) == dirty
        git(repo, "checkout", "--", "README")
        git(repo, "checkout", "-q", "-b", "elsewhere")
        body = assert_error(api.post(f"/api/sessions/{sids['login.py']}/merge"), 409,
                            "BASE_NOT_CHECKED_OUT")
        assert body["details"]["checkedOut"] == "elsewhere"
        git(repo, "checkout", "-q", "main")
        git(repo, "branch", "-q", "-D", "elsewhere")
        assert main_state(repo) == start

        ws.barrier()
        first = ok(api.post(f"/api/sessions/{sids['login.py']}/merge"))
        assert first["fastForward"] is True and first["removed"] is True
        assert first["commit"] == first["head"] == git(repo, "rev-parse", "HEAD")
        second = ok(api.post(f"/api/sessions/{sids['search.py']}/merge"))
        merged_cli = maestro_cli(srv, "session", "merge", sids["billing.py"], "--json")
        assert merged_cli.returncode == 0, merged_cli.stdout + merged_cli.stderr
        third = json.loads(merged_cli.stdout)["data"]
        for result in (second, third):
            assert result["fastForward"] is False and result["alreadyMerged"] is False
            parents = git(repo, "rev-list", "--parents", "-n", "1", result["commit"]).split()
            assert len(parents) == 3 and result["head"] in parents  # a merge commit
        events = [e for e in ws.barrier() if e["type"] == "session:merged"]
        assert [e["data"]["sessionId"] for e in events] == [sids["login.py"],
                                                            sids["search.py"],
                                                            sids["billing.py"]]

        after = main_state(repo)
        assert after["status"] == "" and after["branch"] == "main"
        for name, sid in sids.items():
            assert after["files"][name] == f"written by {sid}\n".encode()
            s = session(api, sid)
            assert s["workspace"]["state"] == "removed"
            assert s["workspace"]["merge"]["commit"] in (first["commit"], second["commit"],
                                                         third["commit"])
            assert not os.path.exists(s["workspace"]["path"])
            timeline = ok(api.get(f"/api/tasks/{tasks[name]['id']}"))["timeline"]
            assert timeline[-1]["message"].startswith(
                f"Session {sid} merged: {s['workspace']['branch']} into main (")
            # After the clean-up the diff is still there to read, from the merged commits.
            gone = ok(api.get(f"/api/sessions/{sid}/diff"))
            assert gone["includesUncommitted"] is False
            assert [f["path"] for f in gone["files"]] == [name]
        assert git(repo, "branch", "--list", "maestro/*") == ""
        assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
        # Merging again is harmless: nothing is left to merge.
        assert_error(api.post(f"/api/sessions/{sids['login.py']}/merge"), 409,
                     "WORKSPACE_REMOVED")


def test_two_agents_on_one_file_overlap_and_the_second_merge_conflicts(launch_server, repo,
                                                                        tmp_path):
    srv = launch_server(BASE_ENV)
    release = tmp_path / "release"
    start = main_state(repo)
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        stream = Stream(ws)
        project = new_project(api, name="Shop", workingDir=str(repo))
        first_task = new_task(api, project["id"], title="Reword the file")
        second_task = new_task(api, project["id"], title="Rewrite the file")
        hold = {"AGENT_FILE": "shared.txt", "AGENT_HOLD": str(release)}
        a = spawn(api, project["id"], first_task["id"], env={**hold, "AGENT_TEXT": "A\n"})["id"]
        b = spawn(api, project["id"], second_task["id"], env={**hold, "AGENT_TEXT": "B\n"})["id"]
        for sid in (a, b):
            wait_log(api, sid, "agent: work written")

        # While both run, each shows the other and the file they share; an event says so.
        event = stream.wait_for(lambda e: e["type"] == "session:overlap", timeout=30)
        assert event["data"]["sessionIds"] == sorted([a, b])
        assert event["data"]["files"] == ["shared.txt"]
        assert event["data"]["projectId"] == project["id"]
        branch = {sid: session(api, sid)["workspace"]["branch"] for sid in (a, b)}
        for me, other in ((a, b), (b, a)):
            s = wait_until(lambda me=me: (s := session(api, me))["workspace"]["overlaps"] and s,
                           30, what="overlap recorded")
            assert s["status"] == "running"
            assert s["workspace"]["overlaps"] == [{"sessionId": other, "branch": branch[other],
                                                   "files": ["shared.txt"]}]
        info = maestro_cli(srv, "session", "info", a)
        assert "Overlap" in info.stdout and b in info.stdout, info.stdout + info.stderr

        release.write_text("go")
        for sid in (a, b):
            assert wait_ended(api, sid)["status"] == "completed"
        ok(api.post(f"/api/sessions/{a}/merge"))
        assert (repo / "shared.txt").read_text() == "A\n"
        merged = main_state(repo)
        assert merged["head"] != start["head"]

        body = assert_error(api.post(f"/api/sessions/{b}/merge"), 409, "MERGE_CONFLICT")
        assert body["details"]["files"] == ["shared.txt"]
        assert main_state(repo) == merged  # HEAD, files and status exactly as before
        assert not (repo / ".git" / "MERGE_HEAD").exists()
        refused = maestro_cli(srv, "session", "merge", b)
        assert refused.returncode == 1
        assert "Conflicting files: shared.txt" in refused.stderr
        assert main_state(repo) == merged
        kept = session(api, b)["workspace"]
        assert kept["state"] == "active" and os.path.isdir(kept["path"])
        assert (Path(kept["path"]) / "shared.txt").read_text() == "B\n"
        # With the first merged, nothing overlaps any more.
        wait_until(lambda: session(api, b)["workspace"]["overlaps"] == [], 30,
                   what="the overlap to clear")


# ------------------------------------------------------------------ never lose work
def test_stopped_failed_and_lost_sessions_keep_their_work(launch_server, repo, tmp_path):
    srv = launch_server(BASE_ENV)
    never = str(tmp_path / "never-created")
    with http_client(srv) as api:
        project = new_project(api, name="Shop", workingDir=str(repo))
        task = new_task(api, project["id"], title="Risky change")
        work = {"AGENT_FILE": "done.py", "AGENT_UNCOMMITTED": "notes.txt"}
        stopped = spawn(api, project["id"], task["id"], env={**work, "AGENT_HOLD": never})["id"]
        failed = spawn(api, project["id"], task["id"], env={**work, "AGENT_EXIT": "3"})["id"]
        lost = spawn(api, project["id"], task["id"], env={**work, "AGENT_HOLD": never})["id"]
        loose = spawn(api, project["id"], task["id"],
                      env={"AGENT_FILE": "draft.py", "AGENT_COMMIT": "0"})["id"]
        for sid in (stopped, lost):
            wait_log(api, sid, "agent: work written")
        assert_error(api.post(f"/api/sessions/{stopped}/cleanup", json={"force": True,
                                                                        "discardUnmerged": True}),
                     409, "SESSION_ACTIVE")
        ok(api.post(f"/api/sessions/{stopped}/stop"))
        assert wait_ended(api, stopped)["status"] in ENDED
        assert wait_ended(api, failed)["status"] == "failed"
        assert wait_ended(api, loose)["status"] == "completed"
    # The server dies hard while `lost` works; its agent dies while nobody watches.
    srv.kill()
    proc = json.loads((srv.session_dir / lost / "process.json").read_text())
    os.kill(proc["wrapperPid"], signal.SIGKILL)
    os.killpg(proc["agentPgid"], signal.SIGKILL)
    srv.start()
    with http_client(srv) as api:
        gone = wait_ended(api, lost)
        assert gone["status"] == "failed"
        health = ok(api.get("/health"))["workspaces"]
        assert health["strays"] == [] and health["missing"] == []
        for sid in (stopped, failed, lost):
            ws_ = session(api, sid)["workspace"]
            assert ws_["state"] == "active" and os.path.isdir(ws_["path"])
            assert (Path(ws_["path"]) / "notes.txt").read_text() == \
                f"unfinished work of {sid}\n"
            assert git(ws_["path"], "status", "--porcelain") == "?? notes.txt"
            assert git(ws_["path"], "log", "-1", "--format=%s") == f"{sid}: done.py"
            diff = ok(api.get(f"/api/sessions/{sid}/diff"))
            assert {(f["path"], f["uncommitted"]) for f in diff["files"]} == {
                ("done.py", False), ("notes.txt", True)}
            assert diff["uncommitted"] == ["notes.txt"]

        # Clean-up refuses unmerged work; forcing it away takes the explicit flags.
        path = session(api, failed)["workspace"]["path"]
        for body, needs in (({}, ["force", "discardUnmerged"]),
                            ({"force": True}, ["force", "discardUnmerged"]),
                            ({"discardUnmerged": True}, ["force", "discardUnmerged"])):
            refused = assert_error(api.post(f"/api/sessions/{failed}/cleanup", json=body), 409,
                                   "UNMERGED_WORK")
            assert refused["details"]["needs"] == needs
            assert refused["details"]["uncommitted"] == ["notes.txt"]
            assert refused["details"]["commitCount"] == 1
            assert os.path.isdir(path)
        cli = maestro_cli(srv, "session", "cleanup", failed, "--force")
        assert cli.returncode == 1 and "--force --discard-unmerged" in cli.stderr
        cli = maestro_cli(srv, "session", "cleanup", failed, "--force", "--discard-unmerged")
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert not os.path.exists(path)
        assert git(repo, "branch", "--list", session(api, failed)["workspace"]["branch"]) == ""
        assert session(api, failed)["workspace"]["state"] == "removed"
        assert session(api, failed)["workspace"]["discarded"]["commitCount"] == 1

        # Only uncommitted changes: --force alone removes them.
        loose_path = session(api, loose)["workspace"]["path"]
        refused = assert_error(api.post(f"/api/sessions/{loose}/cleanup"), 409, "UNMERGED_WORK")
        assert refused["details"]["needs"] == ["force"]
        assert refused["details"]["uncommitted"] == ["draft.py"]
        ok(api.post(f"/api/sessions/{loose}/cleanup", json={"force": True}))
        assert not os.path.exists(loose_path)

        # Uncommitted work is merged only when asked to commit it first.
        start = main_state(repo)
        refused = assert_error(api.post(f"/api/sessions/{stopped}/merge"), 409,
                               "WORKTREE_DIRTY")
        assert refused["details"]["files"] == ["notes.txt"]
        assert main_state(repo) == start
        merged = ok(api.post(f"/api/sessions/{stopped}/merge",
                             json={"commitUncommitted": True}))
        assert merged["fastForward"] is True and merged["removed"] is True
        assert (repo / "notes.txt").read_text() == f"unfinished work of {stopped}\n"
        assert (repo / "done.py").read_text() == f"written by {stopped}\n"
        # The lost session's work is still there for a person to look at.
        assert os.path.isdir(session(api, lost)["workspace"]["path"])
