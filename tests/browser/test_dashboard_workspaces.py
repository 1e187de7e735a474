"""The dashboard shows where agents work, in a real Chromium against a real server running real
agents in their own git worktrees: each running session's branch and changed files, the files
two of them both change (on both sessions and in a banner), the diff rendered as text (a
`<script>` in a changed file stays text), and merging from the page, conflicts included."""

from __future__ import annotations

import re
import subprocess

from helpers import http_client, new_project, new_task, ok, wait_until
from playwright.sync_api import expect
from test_dashboard import HTTP_STATUS, browser, dashboard  # noqa: F401
from test_launcher import agent_cmd, launch_server  # noqa: F401

HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">\n"


def git(repo, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=str(repo), capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()


def test_running_agents_branches_changes_overlap_and_diff(launch_server, dashboard, tmp_path):
    repo = tmp_path / "shop"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "dev@example.com")
    git(repo, "config", "user.name", "Dev")
    (repo / "page.html").write_text("<p>hello</p>\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Start")
    release = tmp_path / "release"
    srv = launch_server({"MAESTRO_TMUX": "0", "MAESTRO_WORKSPACE_SCAN_SECONDS": "0.3",
                         "MAESTRO_AGENT": agent_cmd("git_agent.py")})
    with http_client(srv) as api:
        project = new_project(api, name="Shop", workingDir=str(repo))
        hold = {"AGENT_FILE": "page.html", "AGENT_HOLD": str(release)}
        first = ok(api.post("/api/sessions/spawn", json={
            "projectId": project["id"], "taskIds": [new_task(api, project["id"],
                                                             title="Greet")["id"]],
            "sessionName": "Greeter", "env": {**hold, "AGENT_TEXT": HOSTILE}}), 201)["session"]
        second = ok(api.post("/api/sessions/spawn", json={
            "projectId": project["id"], "taskIds": [new_task(api, project["id"],
                                                             title="Style")["id"]],
            "sessionName": "Stylist", "env": {**hold, "AGENT_TEXT": "<p>styled</p>\n"}}),
            201)["session"]
        a, b = first["id"], second["id"]
        branch_a, branch_b = first["workspace"]["branch"], second["workspace"]["branch"]
        wait_until(lambda: all(ok(api.get(f"/api/sessions/{sid}"))["workspace"]["overlaps"]
                               for sid in (a, b)), 60, what="the overlap to be found")

        dash = dashboard(srv)
        page = dash.open(f"/#/p/{project['id']}/session/{a}")
        row = page.locator(f'#sessions-active li[data-session-id="{a}"]')
        expect(row.locator("code.branch")).to_have_text(branch_a)
        expect(row.locator(".changed-count")).to_have_text("1 file changed")
        expect(row.locator(".overlap-flag")).to_have_text("overlaps with Stylist")
        other_row = page.locator(f'#sessions-active li[data-session-id="{b}"]')
        expect(other_row.locator(".overlap-flag")).to_have_text("overlaps with Greeter")
        banner = page.locator("#overlap-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("Overlapping changes")
        expect(banner).to_contain_text("page.html")

        detail = page.locator("#detail")
        facts = detail.locator(".workspace-facts")
        expect(facts.locator("code.branch")).to_have_text(branch_a)
        expect(facts.locator(".changed-files")).to_have_text("page.html")
        expect(facts.locator(".overlaps")).to_contain_text("Stylist")
        expect(facts.locator(".overlaps")).to_contain_text("page.html")
        expect(detail.locator(".facts .badge").first).to_have_text("running")
        dash.screenshot("workspace-overlap")

        # The diff: the changed file's markup is shown as text, never run or rendered.
        detail.get_by_role("button", name="Show diff").click()
        patch = detail.locator("pre.diff")
        expect(patch).to_contain_text("+<script>window.__pwned = 1</script>")
        expect(patch).to_contain_text("-<p>hello</p>")
        expect(detail.locator(".diff-files")).to_contain_text("page.html")
        assert page.locator("#detail script, #detail img").count() == 0
        assert page.evaluate("window.__pwned") is None
        expect(patch.locator(".diff-add").first).to_contain_text("<script>")
        dash.screenshot("workspace-diff")

        # Done: merge the first from the page; the second then conflicts, and says where.
        release.write_text("go")
        expect(detail.locator(".facts .badge").first).to_have_text("completed", timeout=60000)
        detail.get_by_role("button", name="Merge").click()
        expect(detail.locator(".workspace-status")).to_contain_text(
            re.compile(rf"Merged {re.escape(branch_a)} into main \(fast-forward"))
        expect(banner).to_be_hidden()
        assert (repo / "page.html").read_text() == HOSTILE
        head = git(repo, "rev-parse", "HEAD")

        dash.allow(HTTP_STATUS.format(409))
        page.goto(f"{srv.url}/#/p/{project['id']}/session/{b}")
        expect(detail.locator(".workspace-facts code.branch")).to_have_text(branch_b)
        expect(detail.locator(".facts .badge").first).to_have_text("completed", timeout=60000)
        detail.get_by_role("button", name="Merge").click()
        problem = detail.locator(".workspace-error")
        expect(problem).to_contain_text("MERGE_CONFLICT")
        expect(problem.locator(".problem-files")).to_have_text("page.html")
        assert git(repo, "rev-parse", "HEAD") == head
        assert git(repo, "status", "--porcelain") == ""
        dash.screenshot("workspace-conflict")
