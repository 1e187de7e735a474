"""A git worktree per spawned session, and a reviewed way back: real git repositories in temp
folders, real agents started by the local launcher (tests/agents/git_agent.py writes and commits
a file in its working folder), the real server's diff, merge and clean-up, the CLI, restarts
and kill -9. Nothing lands in the main checkout before a merge; nothing that holds work is
ever removed unless asked for explicitly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import (
    Snapshot,
    WsClient,
    assert_error,
    http_client,
    new_project,
    new_session,
    new_task,
    ok,
    wait_until,
)
from test_launcher import Stream, agent_cmd, launch_server  # noqa: F401

from maestro.workspace import git as gitcli
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


# ------------------------------------------------------------------ shared, options, errors
@pytest.fixture
def ui_server(make_server):
    return make_server(env={"MAESTRO_LAUNCHER": "ui", "MAESTRO_WORKSPACE_SCAN_SECONDS": "0.3"})


def test_sessions_run_shared_when_there_is_no_repository_or_no_isolation(ui_server, repo,
                                                                         tmp_path):
    srv = ui_server
    plain = tmp_path / "plain"
    plain.mkdir()
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        loose = new_project(api, name="Loose", workingDir=str(plain))
        task = new_task(api, loose["id"])
        ws.barrier()
        s = spawn(api, loose["id"], task["id"])
        assert s["workspace"] == {"mode": "shared", "path": str(plain), "reason":
                                  "the project's workingDir is not in a git repository"}
        request = ws.barrier()[0]["data"]
        assert request["cwd"] == str(plain) and request["session"]["workspace"] == s["workspace"]
        assert "MAESTRO_WORKSPACE_BRANCH" not in s["env"]

        bare = new_project(api, name="Bare")
        assert spawn(api, bare["id"], new_task(api, bare["id"])["id"])["workspace"] == {
            "mode": "shared", "path": "", "reason": "the project has no workingDir"}
        relative = new_project(api, name="Relative", workingDir=".")
        assert spawn(api, relative["id"], new_task(api, relative["id"])["id"])["workspace"] == {
            "mode": "shared", "path": ".",
            "reason": "the project's workingDir is not an absolute path"}
        shop = new_project(api, name="Shop", workingDir=str(repo))
        shop_task = new_task(api, shop["id"])
        assert spawn(api, shop["id"], shop_task["id"], isolation="none")["workspace"] == {
            "mode": "shared", "path": str(repo), "reason": "isolation is none (spawn request)"}
        calm = new_project(api, name="Calm", workingDir=str(repo), isolation="none")
        assert calm["isolation"] == "none"
        shared = spawn(api, calm["id"], new_task(api, calm["id"])["id"])
        assert shared["workspace"]["reason"] == "isolation is none (project setting)"
        # The request's own choice wins over the project's.
        isolated = spawn(api, calm["id"], new_task(api, calm["id"])["id"], isolation="worktree")
        assert isolated["workspace"]["mode"] == "worktree"

        for sid in (s["id"], shared["id"]):
            for method, path in (("GET", "diff"), ("POST", "merge"), ("POST", "cleanup")):
                body = assert_error(api.request(method, f"/api/sessions/{sid}/{path}"), 409,
                                    "NOT_A_WORKSPACE_SESSION")
                assert body["details"]["mode"] == "shared"
        manual = new_session(api, shop["id"], [shop_task["id"]])
        assert_error(api.get(f"/api/sessions/{manual['id']}/diff"), 409,
                     "NOT_A_WORKSPACE_SESSION")
        for method, path in (("GET", "diff"), ("POST", "merge"), ("POST", "cleanup")):
            assert_error(api.request(method, f"/api/sessions/sess_nope/{path}"), 404,
                         "SESSION_NOT_FOUND")


def test_base_ref_bad_options_and_worktrees_in_a_subfolder(ui_server, repo):
    srv = ui_server
    (repo / "app").mkdir()
    (repo / "app" / "__init__.py").write_text("")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "App")
    git(repo, "checkout", "-q", "-b", "develop")
    (repo / "app" / "main.py").write_text("print('dev')\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Develop")
    develop = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    with http_client(srv) as api:
        shop = new_project(api, name="Shop", workingDir=str(repo))
        task = new_task(api, shop["id"], title="Ünïcode: fix **everything** now!")
        for bad, field in (({"isolation": "sometimes"}, "isolation"),
                           ({"baseRef": "-x"}, "baseRef"), ({"baseRef": 7}, "baseRef"),
                           ({"baseRef": "no-such-branch"}, "baseRef"),
                           ({"baseRef": "has space"}, "baseRef")):
            before = Snapshot(api, srv)
            refused = assert_error(api.post("/api/sessions/spawn", json={
                "projectId": shop["id"], "taskIds": [task["id"]], **bad}), 400,
                "VALIDATION_ERROR")
            assert refused["details"]["field"] == field
            before.assert_unchanged()
            assert git(repo, "branch", "--list", "maestro/*") == ""
        assert_error(api.put(f"/api/projects/{shop['id']}", json={"isolation": "x"}), 400,
                     "VALIDATION_ERROR")

        from_develop = spawn(api, shop["id"], task["id"], baseRef="develop")["workspace"]
        assert from_develop["baseRef"] == "develop" and from_develop["baseCommit"] == develop
        assert from_develop["branch"].startswith("maestro/unicode-fix-everything-now-")
        assert (Path(from_develop["path"]) / "app" / "main.py").exists()
        # A project's baseRef is the default; the request's wins.
        ok(api.put(f"/api/projects/{shop['id']}", json={"baseRef": "develop"}))
        assert spawn(api, shop["id"], task["id"])["workspace"]["baseCommit"] == develop
        main_head = git(repo, "rev-parse", "main")
        assert spawn(api, shop["id"], task["id"], baseRef="main")["workspace"][
            "baseCommit"] == main_head

        # A project in a subfolder of the repository: the agent starts in that subfolder of
        # its worktree.
        sub = new_project(api, name="App", workingDir=str(repo / "app"), baseRef="develop")
        ws_ = spawn(api, sub["id"], new_task(api, sub["id"])["id"])["workspace"]
        assert ws_["repo"] == str(repo) and ws_["cwd"] == os.path.join(ws_["path"], "app")
        manifest = json.loads(Path(spawn_manifest(srv, api, sub)).read_text())
        assert manifest["session"]["workingDirectory"].endswith("/app")
        assert manifest["session"]["workingDirectory"] != str(repo / "app")


def spawn_manifest(srv, api, project: dict) -> str:
    body = ok(api.post("/api/sessions/spawn", json={
        "projectId": project["id"], "taskIds": [new_task(api, project["id"])["id"]]}), 201)
    return body["manifestPath"]


def test_names_are_never_reused_while_a_branch_or_folder_has_them(repo, tmp_path):
    parent = tmp_path / "worktrees" / naming.repo_folder(str(repo))
    git(repo, "branch", "maestro/add-login-aaaa")
    (parent / "maestro-add-login-bbbb").mkdir(parents=True)
    suffixes = iter(["aaaa", "bbbb", "cccc"])

    def taken(branch: str, path: str) -> bool:
        return os.path.lexists(path) or gitcli.branch_exists(str(repo), branch)

    branch, path = naming.choose("Add login", str(parent), taken, lambda: next(suffixes))
    assert branch == "maestro/add-login-cccc"
    assert path == str(parent / "maestro-add-login-cccc")
    assert naming.slugify("") == "task"
    assert naming.slugify("A" * 100).count("a") <= naming.SLUG_LENGTH


def test_many_spawns_of_one_task_get_distinct_worktrees(ui_server, repo):
    with http_client(ui_server) as api:
        project = new_project(api, name="Shop", workingDir=str(repo))
        task = new_task(api, project["id"], title="Same title")
        made = [spawn(api, project["id"], task["id"])["workspace"] for _ in range(8)]
    assert len({w["branch"] for w in made}) == 8 and len({w["path"] for w in made}) == 8
    listed = gitcli.worktrees(str(repo))
    assert {w["path"] for w in made} <= {w["path"] for w in listed}
    assert all(w.get("locked") for w in listed if w["path"] != str(repo))


def test_start_up_reports_strays_and_missing_worktrees_and_deletes_nothing(make_server, repo):
    srv = make_server(env={"MAESTRO_LAUNCHER": "ui"})
    with http_client(srv) as api:
        project = new_project(api, name="Shop", workingDir=str(repo))
        kept = spawn(api, project["id"], new_task(api, project["id"])["id"])["workspace"]
        vanished = spawn(api, project["id"], new_task(api, project["id"])["id"])
    srv.stop()
    # A worktree nobody owns (a spawn that crashed half-way, or a session deleted since).
    stray = Path(kept["path"]).parent / "maestro-left-behind-0000"
    git(repo, "worktree", "add", "-q", "-b", "maestro/left-behind-0000", str(stray))
    (stray / "precious.txt").write_text("keep me\n")
    shutil.rmtree(vanished["workspace"]["path"])
    srv.start()
    with http_client(srv) as api:
        report = ok(api.get("/health"))["workspaces"]
        assert report["strays"] == [{"path": str(stray), "branch": "maestro/left-behind-0000",
                                     "uncommitted": ["precious.txt"]}]
        assert report["missing"] == [{"sessionId": vanished["id"],
                                      "path": vanished["workspace"]["path"],
                                      "branch": vanished["workspace"]["branch"]}]
        listing = ok(api.get("/api/workspaces", params={"projectId": project["id"]}))
        assert listing["strays"] == report["strays"] and len(listing["workspaces"]) == 2
    assert (stray / "precious.txt").read_text() == "keep me\n"
    assert os.path.isdir(kept["path"])
    assert "stray worktree" in srv.log()


def test_agents_read_their_own_diff_but_never_merge_or_clean_up(make_server, repo):
    srv = make_server(env={"MAESTRO_LAUNCHER": "ui"})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = new_project(api, name="Shop", workingDir=str(repo))
        task = new_task(api, project["id"])
        ws.barrier()
        mine = spawn(api, project["id"], task["id"])["id"]
        token = ws.barrier()[0]["data"]["envVars"]["MAESTRO_SESSION_TOKEN"]
        other = spawn(api, project["id"], task["id"])["id"]
    agent = httpx.Client(base_url=srv.url, timeout=30, trust_env=False,
                         headers={"Authorization": f"Bearer {token}"})
    with agent:
        assert ok(agent.get(f"/api/sessions/{mine}/diff"))["files"] == []
        assert_error(agent.get(f"/api/sessions/{other}/diff"), 403, "FORBIDDEN")
        for sid in (mine, other):
            for path in ("merge", "cleanup"):
                assert_error(agent.post(f"/api/sessions/{sid}/{path}"), 403, "FORBIDDEN")
        assert_error(agent.get("/api/workspaces"), 403, "FORBIDDEN")


def test_openapi_documents_the_workspace_routes_and_codes(ui_server):
    with http_client(ui_server) as api:
        doc = ok(api.get("/openapi.json"))
    paths = doc["paths"]
    merge = paths["/api/sessions/{id}/merge"]["post"]
    assert "MERGE_CONFLICT" in merge["responses"]["4XX"]["description"]
    assert "MAIN_WORKTREE_DIRTY" in merge["responses"]["4XX"]["description"]
    assert "UNMERGED_WORK" in paths["/api/sessions/{id}/cleanup"]["post"]["responses"][
        "4XX"]["description"]
    assert "get" in paths["/api/sessions/{id}/diff"] and "get" in paths["/api/workspaces"]
    schemas = doc["components"]["schemas"]
    assert schemas["Session"]["properties"]["workspace"] == {
        "$ref": "#/components/schemas/Workspace"}
    assert "isolation" in schemas["SpawnRequest"]["properties"]
    assert "baseRef" in schemas["CreateProject"]["properties"]


def test_a_manifest_written_by_the_cli_points_the_agent_at_its_worktree(make_server, repo):
    maestro_bin = str(Path(sys.executable).parent / "maestro")
    srv = make_server(env={"MAESTRO_LAUNCHER": "ui", "MANIFEST_GENERATOR": "cli",
                           "MAESTRO_CLI_PATH": maestro_bin})
    with http_client(srv) as api:
        project = new_project(api, name="Shop", workingDir=str(repo))
        body = ok(api.post("/api/sessions/spawn", json={
            "projectId": project["id"], "taskIds": [new_task(api, project["id"])["id"]]}), 201)
    manifest = json.loads(Path(body["manifestPath"]).read_text())
    assert manifest["session"]["workingDirectory"] == body["session"]["workspace"]["cwd"]
    assert body["session"]["workspace"]["mode"] == "worktree"


def test_a_spawn_that_fails_after_its_worktree_was_made_leaves_nothing(make_server, repo):
    srv = make_server(env={"MAESTRO_LAUNCHER": "ui", "MANIFEST_GENERATOR": "cli",
                           "MAESTRO_CLI_PATH": "false"})
    with http_client(srv) as api:
        project = new_project(api, name="Shop", workingDir=str(repo))
        task = new_task(api, project["id"])
        assert_error(api.post("/api/sessions/spawn", json={
            "projectId": project["id"], "taskIds": [task["id"]]}), 500,
            "manifest_generation_failed")
        assert ok(api.get("/api/sessions")) == []
    assert git(repo, "branch", "--list", "maestro/*") == ""
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert [p for p in (srv.tmp / "worktrees").rglob("*")
            if p.parent != srv.tmp / "worktrees"] == []


def test_an_ignored_env_file_of_the_checkout_reaches_the_worktree(ui_server, repo):
    (repo / ".gitignore").write_text(".env\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "Ignore .env")
    (repo / ".env").write_text("MAESTRO_RETRIES=0\nAPP_MODE=dev\n")
    os.chmod(repo / ".env", 0o600)
    with http_client(ui_server) as api:
        project = new_project(api, name="Shop", workingDir=str(repo))
        task = new_task(api, project["id"])
        ws_ = spawn(api, project["id"], task["id"])["workspace"]
        copy = Path(ws_["cwd"]) / ".env"
        assert ws_["copied"] == [".env"] and copy.read_text() == (repo / ".env").read_text()
        assert copy.stat().st_mode & 0o777 == 0o600
        assert git(ws_["path"], "status", "--porcelain") == ""  # not a change of the agent's
        sid = ok(api.get("/api/sessions"))[0]["id"]
        assert ok(api.get(f"/api/sessions/{sid}/diff"))["files"] == []
        ok(api.patch(f"/api/sessions/{sid}", json={"status": "completed"}))
        assert ok(api.post(f"/api/sessions/{sid}/cleanup"))["removed"] is True
        assert not os.path.exists(ws_["path"])
        # A .env that git does not ignore would show as the agent's change: it stays behind.
        (repo / ".gitignore").write_text("")
        git(repo, "commit", "-q", "-am", "Track everything")
        assert "copied" not in spawn(api, project["id"], task["id"])["workspace"]


def test_overlaps_pair_sessions_by_the_files_they_share():
    from maestro.workspace.overlap import new_pairs, overlaps

    found = overlaps({"a": ["x.py", "y.py"], "b": ["y.py", "x.py", "z.py"], "c": ["z.py"],
                      "d": ["w.py"]})
    assert found == {"a": {"b": ["x.py", "y.py"]},
                     "b": {"a": ["x.py", "y.py"], "c": ["z.py"]},
                     "c": {"b": ["z.py"]}}
    # Only pairs whose shared files grew since what each session recorded are news.
    before = {"a": [{"sessionId": "b", "files": ["x.py", "y.py"]}],
              "b": [{"sessionId": "a", "files": ["x.py", "y.py"]}]}
    assert new_pairs(before, found) == [("b", "c", ["z.py"])]
    assert new_pairs({}, found) == [("a", "b", ["x.py", "y.py"]), ("b", "c", ["z.py"])]
