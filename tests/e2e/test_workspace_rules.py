"""Workspaces without running agents (the `ui` launcher): who runs shared and why, spawn and
project options, bad input that creates nothing, names never reused, strays found at start-up,
what agents may do, the OpenAPI entries, and the pure overlap pairing. Real git repositories in
temp folders, the real server."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import httpx
from helpers import (
    Snapshot,
    WsClient,
    assert_documented,
    assert_error,
    http_client,
    new_project,
    new_session,
    new_task,
    ok,
)
from server_fixtures import server_fixture
from test_workspaces import git, repo, spawn  # noqa: F401

from maestro.workspace import git as gitcli
from maestro.workspace import naming


ui_server = server_fixture("function", env={"MAESTRO_LAUNCHER": "ui",
                                            "MAESTRO_WORKSPACE_SCAN_SECONDS": "0.3"})


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

    def codes(op: dict, status: str) -> list[str]:
        return op["responses"][status]["content"]["application/json"]["schema"]["allOf"][1][
            "properties"]["code"]["enum"]

    merge = paths["/api/sessions/{id}/merge"]["post"]
    assert {"MERGE_CONFLICT", "MAIN_WORKTREE_DIRTY", "WORKTREE_DIRTY", "BASE_NOT_CHECKED_OUT",
            "NOT_A_WORKSPACE_SESSION", "WORKSPACE_REMOVED"} <= set(codes(merge, "409"))
    assert "session:merged" in merge["description"]
    cleanup = paths["/api/sessions/{id}/cleanup"]["post"]
    assert {"UNMERGED_WORK", "SESSION_ACTIVE"} <= set(codes(cleanup, "409"))
    assert "get" in paths["/api/sessions/{id}/diff"] and "get" in paths["/api/workspaces"]
    assert {"projectId"} <= {p["name"] for p in paths["/api/workspaces"]["get"]["parameters"]}
    schemas = doc["components"]["schemas"]
    assert schemas["Session"]["properties"]["workspace"] == {
        "$ref": "#/components/schemas/Workspace"}
    assert "isolation" in schemas["SpawnRequest"]["properties"]
    assert "baseRef" in schemas["CreateProject"]["properties"]


def test_answers_of_the_workspace_routes_match_the_document(ui_server, repo):
    """Spawn into a worktree, review, refuse, merge and clean up: every answer, success or
    error, has a status the document gives and the body it describes."""
    with http_client(ui_server) as api:
        doc = ok(api.get("/openapi.json"))

        def call(method: str, path: str, url: str, **kwargs) -> dict:
            return assert_documented(doc, api.request(method, url, **kwargs), method, path)

        project = call("POST", "/api/projects", "/api/projects", json={
            "name": "Shop", "workingDir": str(repo), "isolation": "worktree",
            "baseRef": "main"})
        task = new_task(api, project["id"])
        spawned = call("POST", "/api/sessions/spawn", "/api/sessions/spawn", json={
            "projectId": project["id"], "taskIds": [task["id"]], "baseRef": "main"})
        assert spawned["launch"]["launcher"] == "ui" and spawned["message"]
        sid, ws_ = spawned["sessionId"], spawned["session"]["workspace"]
        Path(ws_["cwd"], "cart.py").write_text("cart = []\n")
        git(ws_["path"], "add", ".")
        git(ws_["path"], "-c", "user.email=a@example.com", "-c", "user.name=A", "commit",
            "-q", "-m", "Cart")
        Path(ws_["cwd"], "notes.txt").write_text("to do\n")
        one = f"/api/sessions/{sid}"
        diff = call("GET", "/api/sessions/{id}/diff", f"{one}/diff")
        assert diff["commitCount"] == 1 and diff["stat"]["files"] == 2
        listing = call("GET", "/api/workspaces", "/api/workspaces",
                       params={"projectId": project["id"]})
        assert [w["sessionId"] for w in listing["workspaces"]] == [sid]
        refused = call("POST", "/api/sessions/{id}/merge", f"{one}/merge")
        assert refused["code"] == "WORKTREE_DIRTY"
        assert call("POST", "/api/sessions/{id}/merge", f"{one}/merge",
                    json={"cleanup": "yes"})["code"] == "VALIDATION_ERROR"
        assert call("POST", "/api/sessions/{id}/cleanup", f"{one}/cleanup")["code"] == \
            "SESSION_ACTIVE"
        merged = call("POST", "/api/sessions/{id}/merge", f"{one}/merge",
                      json={"commitUncommitted": True, "message": "Merge the cart"})
        assert merged["fastForward"] is True and merged["removed"] is False
        call("PATCH", "/api/sessions/{id}", one, json={"status": "completed"})
        cleaned = call("POST", "/api/sessions/{id}/cleanup", f"{one}/cleanup")
        assert cleaned["removed"] is True
        stored = call("GET", "/api/sessions/{id}", one)["workspace"]
        assert stored["state"] == "removed" and stored["merge"]["commit"] == merged["commit"]
        assert call("GET", "/api/sessions/{id}/diff", f"{one}/diff")["includesUncommitted"] \
            is False
        manual = new_session(api, project["id"], [task["id"]])
        assert call("GET", "/api/sessions/{id}/diff", f"/api/sessions/{manual['id']}/diff")[
            "code"] == "NOT_A_WORKSPACE_SESSION"
        assert call("POST", "/api/sessions/{id}/cleanup", "/api/sessions/sess_none/cleanup")[
            "code"] == "SESSION_NOT_FOUND"
        gone = call("DELETE", "/api/projects/{id}", f"/api/projects/{project['id']}",
                    params={"cascade": "true"})
        assert set(gone["deleted"]["sessions"]) == {sid, manual["id"]}


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
