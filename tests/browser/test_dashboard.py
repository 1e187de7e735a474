"""The dashboard in a real Chromium against a real server: what a person sees and does in the page
(projects, task tree, sessions, details), live updates from changes made elsewhere, reconnection
after a server restart, safe rendering of hostile task text, the token prompt, spawning an agent
and following it to the end. Every test fails on any console error it did not expect."""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from helpers import wait_until
from playwright.sync_api import Page, expect, sync_playwright
from server_fixtures import client_fixtures
from servers import ROOT, ServerProcess, free_port

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("MAESTRO_TEST_CHROMIUM") or shutil.which("chromium") \
    or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WAIT_MS = 8000  # generous bound for "appears within a second" on a loaded CI machine

# What Chromium itself prints when a request fails at the network level or gets an error status.
# Tests allow these only around the step that causes them on purpose.
HTTP_STATUS = r"Failed to load resource: the server responded with a status of {}"
SERVER_DOWN = [r"WebSocket connection to .* failed", r"net::ERR_CONNECTION_REFUSED"]

# Each test has a server of its own (`server`) and clients on it.
api, ws_conn, ws = client_fixtures("server", scope="function")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Chromium is required under CI but not found at {CHROMIUM}")
        pytest.skip(f"Chromium not installed at {CHROMIUM} (run scripts/install-test-deps.sh)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Dashboard:
    """One browser page on the dashboard, recording console errors and dialogs."""

    def __init__(self, browser, url: str, viewport=(1400, 900)):
        self.url = url
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.allowed: list[str] = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("dialog", self._on_dialog)

    def _on_console(self, message) -> None:
        if message.type != "error":
            return
        text = message.text
        if any(re.search(pattern, text) for pattern in self.allowed):
            return
        self.errors.append(f"console error: {text}")

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def allow(self, *patterns: str) -> Dashboard:
        self.allowed.extend(patterns)
        return self

    def open(self, path: str = "/", live: bool = True) -> Page:
        self.page.goto(self.url + path)
        if live:
            self.expect_live()
        # A marker that only survives as long as the page is never reloaded.
        self.page.evaluate("window.__sameDocument = true")
        return self.page

    def expect_live(self) -> None:
        expect(self.page.locator("#connection")).to_have_attribute("data-state", "live")

    def assert_not_reloaded(self) -> None:
        assert self.page.evaluate("window.__sameDocument === true"), "the page was reloaded"

    def task_row(self, task_id: str):
        return self.page.locator(f'#task-tree li[data-task-id="{task_id}"]')

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"dashboard-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()

    def check_clean(self) -> None:
        assert not self.errors, "\n".join(self.errors)
        assert not self.dialogs, f"unexpected dialogs: {self.dialogs}"


@pytest.fixture
def dashboard(browser):
    opened: list[Dashboard] = []

    def factory(server: ServerProcess, **kwargs) -> Dashboard:
        dash = Dashboard(browser, server.url, **kwargs)
        opened.append(dash)
        return dash

    yield factory
    for dash in opened:
        try:
            dash.check_clean()
        finally:
            dash.close()


def make_board(api: httpx.Client) -> dict:
    """A project with a small task hierarchy, a session and some history."""
    project = api.post("/api/projects", json={"name": "Web shop",
                                              "workingDir": "/home/dev/shop"}).json()
    pid = project["id"]

    def task(title, **fields):
        return api.post("/api/tasks", json={"projectId": pid, "title": title, **fields}).json()

    checkout = task("Checkout flow", priority="high", description=(
        "Customers pay in **three steps**:\n\n1. cart review\n2. address\n3. payment\n\n"
        "See `docs/checkout.md` and https://example.com/spec for the design."))
    cart = task("Cart review page", parentId=checkout["id"])
    payment = task("Payment form", parentId=checkout["id"], priority="high")
    task("Card validation", parentId=payment["id"], priority="low")
    task("Search index", description="Rebuild nightly.")
    done = task("Product images")
    api.patch(f"/api/tasks/{done['id']}", json={"status": "completed"})
    api.patch(f"/api/tasks/{cart['id']}", json={"status": "in_progress"})
    session = api.post("/api/sessions", json={
        "projectId": pid, "taskIds": [cart["id"]], "name": "Worker: cart review",
        "metadata": {"spawnSource": "manual", "role": "worker"}}).json()
    api.post(f"/api/tasks/{checkout['id']}/timeline",
             json={"message": "Payment provider chosen", "type": "milestone"})
    api.post(f"/api/tasks/{checkout['id']}/timeline",
             json={"message": "Waiting for API keys", "type": "blocker",
                   "sessionId": session["id"]})
    return {"project": project, "checkout": checkout, "cart": cart, "payment": payment,
            "session": session}


# ------------------------------------------------------------------------------------------------


def test_create_project_and_tasks_through_the_page(server, api, dashboard):
    dash = dashboard(server)
    page = dash.open()
    expect(page.locator("#no-project")).to_be_visible()

    create = page.locator("#project-create")
    create.get_by_label("Name").fill("Garden planner")
    create.get_by_label("Working directory").fill("/srv/garden")
    create.get_by_role("button", name="Create project").click()
    expect(page.locator("#project-name")).to_have_text("Garden planner")
    projects = wait_until(lambda: api.get("/api/projects").json(), what="project stored")
    assert [(p["name"], p["workingDir"]) for p in projects] == [("Garden planner",
                                                                 "/srv/garden")]
    pid = projects[0]["id"]
    assert f"#/p/{pid}" in page.url

    form = page.locator("#task-create")
    form.get_by_label("Title").fill("Plant beds")
    form.get_by_label("Priority").select_option("high")
    form.get_by_label("Description (Markdown)").fill("Raised beds, **cedar** wood.")
    form.get_by_role("button", name="Add task").click()
    parent = wait_until(lambda: api.get(f"/api/tasks?projectId={pid}").json(),
                        what="task stored")[0]
    assert (parent["title"], parent["priority"], parent["parentId"]) == ("Plant beds", "high",
                                                                         None)
    expect(dash.task_row(parent["id"])).to_be_visible()

    # A subtask: the row's button preselects the parent in the form.
    dash.task_row(parent["id"]).get_by_role("button", name="Add a subtask to Plant beds").click()
    expect(form.get_by_label("Parent")).to_have_value(parent["id"])
    expect(form.get_by_label("Title")).to_be_focused()
    page.keyboard.type("Buy soil")
    page.keyboard.press("Enter")
    children = wait_until(lambda: api.get(f"/api/tasks/{parent['id']}/children").json(),
                          what="child stored")
    child = children[0]
    assert child["title"] == "Buy soil"
    child_row = dash.task_row(child["id"])
    expect(child_row).to_have_attribute("style", re.compile(r"--depth:\s*1"))
    expect(page.locator("#project-list li", has_text="Garden planner")).to_contain_text(
        "2 pending")

    # Inline status and priority changes reach the server.
    child_row.get_by_label("Status of Buy soil").select_option("in_progress")
    wait_until(lambda: api.get(f"/api/tasks/{child['id']}").json()["status"] == "in_progress",
               what="status change stored")
    dash.task_row(parent["id"]).get_by_label("Priority of Plant beds").select_option("low")
    wait_until(lambda: api.get(f"/api/tasks/{parent['id']}").json()["priority"] == "low",
               what="priority change stored")
    expect(page.locator("#project-list li", has_text="Garden planner")).to_contain_text(
        "1 in progress")

    # Filter: the matching child shows with its parent as context.
    page.get_by_label("Filter tasks by status").select_option("completed")
    expect(page.locator("#task-tree li")).to_have_count(0)
    expect(page.locator("#no-tasks")).to_have_text("No task has this status.")
    page.get_by_label("Filter tasks by status").select_option("in_progress")
    expect(page.locator("#task-tree li")).to_have_count(2)
    expect(dash.task_row(parent["id"])).to_have_class(re.compile(r"\bcontext\b"))
    page.get_by_label("Filter tasks by status").select_option("")

    # Open a task: description rendered, timeline newest first.
    dash.task_row(parent["id"]).get_by_role("link", name="Plant beds").click()
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text("Plant beds")
    expect(detail.locator(".markdown strong")).to_have_text("cedar")
    detail.get_by_label("Add to timeline").fill("Beds ordered")
    detail.get_by_role("button", name="Add", exact=True).click()
    expect(detail.locator(".timeline-entry").first).to_contain_text("Beds ordered")
    expect(detail.locator(".timeline-entry").last).to_contain_text("Task created")
    dash.screenshot("task-detail")

    # Rename, then a refused delete shows the server's own message and changes nothing.
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("Project name").fill("Garden plan 2025")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#project-name")).to_have_text("Garden plan 2025")
    wait_until(lambda: api.get(f"/api/projects/{pid}").json()["name"] == "Garden plan 2025",
               what="rename stored")
    dash.allow(HTTP_STATUS.format(400))
    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("button", name="Delete project").click()
    expect(page.locator("#project-error")).to_have_text(
        re.compile(r"Cannot delete project with 2 existing task\(s\)"))
    assert api.get(f"/api/projects/{pid}").status_code == 200

    # Once empty, the delete goes through and the page follows.
    api.delete(f"/api/tasks/{child['id']}")
    api.delete(f"/api/tasks/{parent['id']}")
    expect(page.locator("#task-tree li")).to_have_count(0)
    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("button", name="Delete project").click()
    expect(page.locator("#project-list li")).to_have_count(0)
    assert api.get("/api/projects").json() == []
    dash.assert_not_reloaded()


def test_changes_made_elsewhere_appear_without_reload(server, api, dashboard):
    board = make_board(api)
    pid = board["project"]["id"]
    dash = dashboard(server)
    page = dash.open(f"/#/p/{pid}/task/{board['checkout']['id']}")
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text("Checkout flow")
    expect(detail.locator(".timeline-entry").first).to_contain_text("Waiting for API keys")
    expect(detail.locator(".timeline-entry").first.get_by_role("link")).to_have_text(
        "Worker: cart review")
    dash.screenshot("board")
    shot = os.environ.get("MAESTRO_UPDATE_SCREENSHOT")
    if shot:
        page.screenshot(path=str(ROOT / "docs" / "dashboard.png"), full_page=True)

    # A new task, a status change and a timeline entry, all made through the API.
    added = api.post("/api/tasks", json={"projectId": pid, "title": "Gift cards"}).json()
    expect(dash.task_row(added["id"])).to_contain_text("Gift cards")
    api.patch(f"/api/tasks/{board['payment']['id']}", json={"status": "blocked"})
    expect(dash.task_row(board["payment"]["id"]).get_by_label("Status of Payment form")) \
        .to_have_value("blocked")
    api.post(f"/api/tasks/{board['checkout']['id']}/timeline", json={"message": "Keys arrived"})
    expect(detail.locator(".timeline-entry").first).to_contain_text("Keys arrived")

    # A session starts on a task: it shows in the sessions list and on the task's row.
    session = api.post("/api/sessions", json={
        "projectId": pid, "taskIds": [board["payment"]["id"]], "name": "Worker: payments",
        "metadata": {"spawnSource": "orchestrator"}}).json()
    active = page.locator("#sessions-active li", has_text="Worker: payments")
    expect(active).to_contain_text("running")
    expect(active).to_contain_text("via orchestrator")
    expect(dash.task_row(board["payment"]["id"]).locator(".chip")).to_contain_text(
        "Worker: payments")
    api.patch(f"/api/sessions/{session['id']}", json={"status": "completed"})
    expect(page.locator("#sessions-recent li", has_text="Worker: payments")).to_contain_text(
        "completed")

    # Project changes and new projects, with their counts.
    api.put(f"/api/projects/{pid}", json={"name": "Web shop v2"})
    expect(page.locator("#project-name")).to_have_text("Web shop v2")
    other = api.post("/api/projects", json={"name": "Mobile app"}).json()
    api.post("/api/tasks", json={"projectId": other["id"], "title": "Login screen"})
    expect(page.locator(f'#project-list li[data-project-id="{other["id"]}"]')).to_contain_text(
        "1 pending")

    # Deletions.
    api.delete(f"/api/tasks/{added['id']}")
    expect(dash.task_row(added["id"])).to_have_count(0)
    api.delete(f"/api/sessions/{session['id']}")
    expect(page.locator("#sessions-recent li", has_text="Worker: payments")).to_have_count(0)
    dash.assert_not_reloaded()


def test_page_reconnects_after_a_restart_and_catches_up(server, api, dashboard):
    project = api.post("/api/projects", json={"name": "Restart me"}).json()
    kept = api.post("/api/tasks", json={"projectId": project["id"], "title": "Survivor"}).json()
    dash = dashboard(server).allow(*SERVER_DOWN)
    page = dash.open()
    expect(dash.task_row(kept["id"])).to_be_visible()

    server.stop()
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
    expect(page.locator("#connection")).to_contain_text("Reconnecting")

    # While the page is cut off, another server process on the same data directory changes
    # things; the page hears no event of it.
    other = ServerProcess(server.tmp, port=free_port()).start()
    try:
        with httpx.Client(base_url=other.url, timeout=10) as elsewhere:
            missed = elsewhere.post("/api/tasks", json={"projectId": project["id"],
                                                        "title": "Made while away"}).json()
            elsewhere.patch(f"/api/tasks/{kept['id']}", json={"status": "completed"})
    finally:
        other.stop()

    server.start()
    dash.expect_live()
    expect(dash.task_row(missed["id"])).to_contain_text("Made while away")
    expect(dash.task_row(kept["id"]).get_by_label("Status of Survivor")).to_have_value(
        "completed")

    # And it is live again: a change after the reconnect arrives as an event.
    api.patch(f"/api/tasks/{missed['id']}", json={"priority": "high"})
    expect(dash.task_row(missed["id"]).get_by_label("Priority of Made while away")) \
        .to_have_value("high")
    dash.assert_not_reloaded()


HOSTILE = '<script>window.__pwned = "script"</script><img src=x onerror="window.__pwned=\'img\'">'


def test_task_text_is_rendered_as_text_never_as_markup(server, api, dashboard):
    project = api.post("/api/projects", json={"name": "<b>Bold</b> " + HOSTILE}).json()
    pid = project["id"]
    description = "\n".join([
        "# Heading " + HOSTILE,
        "",
        "Para with <iframe src=javascript:alert(1)></iframe> and "
        "**bold <img src=y onerror=alert(2)>**",
        "",
        "- [click](javascript:alert(3))",
        "- [ok](https://example.com/x?a=<b>)",
        "",
        "```",
        HOSTILE,
        "```",
        "> <svg onload=alert(4)>",
    ])
    hostile = api.post("/api/tasks", json={"projectId": pid, "title": HOSTILE,
                                           "description": description}).json()
    api.post(f"/api/tasks/{hostile['id']}/timeline", json={"message": HOSTILE,
                                                          "type": "blocker"})
    session = api.post("/api/sessions", json={"projectId": pid, "taskIds": [hostile["id"]],
                                              "name": HOSTILE,
                                              "metadata": {"spawnSource": HOSTILE}}).json()
    api.post(f"/api/sessions/{session['id']}/events",
             json={"type": "log", "data": {"message": HOSTILE}})

    dash = dashboard(server)
    page = dash.open(f"/#/p/{pid}/task/{hostile['id']}")
    row = dash.task_row(hostile["id"])
    expect(row.locator(".task-title")).to_have_text(HOSTILE)
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text(HOSTILE)
    expect(detail.locator(".markdown h3")).to_have_text("Heading " + HOSTILE)
    expect(detail.locator(".markdown pre code")).to_have_text(HOSTILE)
    expect(detail.locator(".markdown strong")).to_have_text("bold <img src=y onerror=alert(2)>")
    expect(detail.locator(".markdown li").first).to_have_text("[click](javascript:alert(3))")
    expect(detail.locator(".markdown a[href='https://example.com/x?a=<b>']")).to_have_text("ok")
    expect(detail.locator(".timeline-message").first).to_have_text(HOSTILE)
    expect(page.locator("#project-name")).to_have_text("<b>Bold</b> " + HOSTILE)

    # The same text typed into the page by a person.
    page.locator("#task-create").get_by_label("Title").fill(HOSTILE + " typed")
    page.locator("#task-create").get_by_role("button", name="Add task").click()
    expect(page.locator("#task-tree li .task-title", has_text="typed")).to_have_text(
        HOSTILE + " typed")

    page.get_by_role("link", name=HOSTILE).last.click()  # the session, from the task's facts
    expect(detail.locator("h2")).to_have_text(HOSTILE)
    expect(detail.locator(".event-data")).to_contain_text(HOSTILE.replace('"', '\\"'))

    assert page.evaluate("window.__pwned") is None
    injected = page.evaluate("""() => ({
        scripts: document.scripts.length,
        images: document.querySelectorAll('img, iframe, svg').length,
        bold: document.querySelectorAll('#project-name b, #project-list b').length,
        jsLinks: document.querySelectorAll('a[href^="javascript"]').length,
        handlers: [...document.querySelectorAll('*')].filter(
            (el) => [...el.attributes].some((a) => a.name.startsWith('on'))).length,
    })""")
    assert injected == {"scripts": 1, "images": 0, "bold": 0, "jsLinks": 0, "handlers": 0}


def test_token_is_asked_for_once_and_kept_for_the_tab(make_server, dashboard):
    token = "dashboard-test-token-8c1f0e"
    server = make_server(env={"MAESTRO_TOKEN": token}, start=False)
    server.start(wait=False)
    headers = {"Authorization": f"Bearer {token}"}

    def ready():
        try:
            return httpx.get(server.url + "/health", headers=headers).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=20, what="server with token")
    api = httpx.Client(base_url=server.url, headers=headers, timeout=10)
    assert httpx.get(server.url + "/api/projects").status_code == 401
    api.post("/api/projects", json={"name": "Secret plans"})

    dash = dashboard(server).allow(HTTP_STATUS.format(401))
    page = dash.open(live=False)
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Token").fill("wrong-token")
    dialog.get_by_role("button", name="Continue").click()
    expect(dialog.locator("#token-refused")).to_be_visible()
    dialog.get_by_label("Token").fill(token)
    dialog.get_by_role("button", name="Continue").click()
    dash.expect_live()
    expect(page.locator("#project-name")).to_have_text("Secret plans")

    # REST with the header, WebSocket with the query parameter: both work.
    page.locator("#task-create").get_by_label("Title").fill("Typed with a token")
    page.locator("#task-create").get_by_role("button", name="Add task").click()
    wait_until(lambda: api.get("/api/tasks").json(), what="task created from the page")
    api.post("/api/projects", json={"name": "Pushed live"})
    expect(page.locator("#project-list li", has_text="Pushed live")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('maestro.token')") == token

    # A reload in the same tab does not ask again.
    page.reload()
    dash.expect_live()
    expect(dialog).to_be_hidden()
    expect(page.locator("#project-list li")).to_have_count(2)
    api.close()


def test_narrow_window_and_keyboard_use(server, api, dashboard):
    board = make_board(api)
    dash = dashboard(server, viewport=(390, 844))
    page = dash.open(f"/#/p/{board['project']['id']}")
    expect(dash.task_row(board["payment"]["id"])).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px in a narrow window"
    dash.screenshot("narrow")

    # Keyboard only: from a task's link, Tab reaches its status picker; arrows change it.
    row = dash.task_row(board["payment"]["id"])
    row.get_by_role("link", name="Payment form").focus()
    page.keyboard.press("Tab")
    expect(row.get_by_label("Status of Payment form")).to_be_focused()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "focused controls must show a focus ring"
    page.keyboard.press("ArrowDown")
    wait_until(lambda: api.get(f"/api/tasks/{board['payment']['id']}").json()["status"]
               == "in_progress", what="keyboard status change stored")

    # Enter on a task link opens its details; Escape closes them and returns focus.
    row.get_by_role("link", name="Payment form").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#detail h2")).to_have_text("Payment form")
    expect(page.locator("#detail h2")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    expect(row.get_by_role("link", name="Payment form")).to_be_focused()


AGENT = textwrap.dedent("""\
    import json, os, sys, time, urllib.request

    print("agent: starting on", os.environ.get("MAESTRO_TASK_IDS"), flush=True)
    url = os.environ["MAESTRO_SERVER_URL"].rstrip("/")
    task_id = os.environ["MAESTRO_TASK_IDS"].split(",")[0]
    headers = {"Content-Type": "application/json"}
    token = os.environ.get("MAESTRO_SESSION_TOKEN") or os.environ.get("MAESTRO_TOKEN")
    if token:
        headers["Authorization"] = "Bearer " + token
    body = json.dumps({"message": "agent: halfway there",
                       "sessionId": os.environ["MAESTRO_SESSION_ID"]}).encode()
    request = urllib.request.Request(f"{url}/api/tasks/{task_id}/timeline", data=body,
                                     headers=headers, method="POST")
    urllib.request.urlopen(request, timeout=10).read()
    for step in range(1, 4):
        time.sleep(0.4)
        print(f"agent: step {step} of 3", flush=True)
    print("agent: all done", flush=True)
    """)


def spawn_route_missing(api: httpx.Client) -> bool:
    answer = api.post("/api/sessions/spawn", json={})
    return answer.status_code == 404 and answer.json().get("code") == "NOT_FOUND"


def test_spawn_from_the_page_and_follow_the_agent_to_the_end(make_server, dashboard, tmp_path):
    script = tmp_path / "fake_agent.py"
    script.write_text(AGENT)
    server = make_server(env={"MAESTRO_AGENT_COMMAND": f"{sys.executable} {script}"})
    api = httpx.Client(base_url=server.url, timeout=10)
    if spawn_route_missing(api):
        api.close()
        pytest.skip("POST /api/sessions/spawn is not available in this build yet")
    project = api.post("/api/projects", json={"name": "Agents at work",
                                              "workingDir": str(tmp_path)}).json()
    task = api.post("/api/tasks", json={"projectId": project["id"],
                                        "title": "Write the changelog"}).json()

    dash = dashboard(server)
    page = dash.open()
    spawn_form = page.locator("#spawn-form")
    spawn_form.get_by_role("button", name="Spawn session").click()
    expect(spawn_form.locator(".form-error")).to_have_text(re.compile("Select one or more tasks"))
    dash.task_row(task["id"]).get_by_label("Select Write the changelog for a new session").check()
    expect(page.locator("#spawn-selection")).to_contain_text("Write the changelog")
    spawn_form.get_by_label("Role").select_option("worker")
    spawn_form.get_by_role("button", name="Spawn session").click()

    detail = page.locator("#detail")
    expect(detail.locator(".session-detail")).to_be_visible()
    session_id = detail.locator(".session-detail").get_attribute("data-session-id")
    stored = api.get(f"/api/sessions/{session_id}").json()
    assert stored["metadata"]["spawnSource"] == "manual"
    assert stored["taskIds"] == [task["id"]]
    assert stored["name"] == "Worker: Write the changelog"

    # The page follows the session to its end: status, log and the agent's own timeline entry.
    expect(detail.locator(".log")).to_contain_text("agent: starting on", timeout=20000)
    expect(detail.locator(".facts .badge").first).to_have_text("completed", timeout=20000)
    expect(detail.locator(".log")).to_contain_text("agent: all done")
    expect(detail.locator(".follow-state")).to_have_text("finished")
    expect(detail.get_by_role("button", name="Stop session")).to_be_hidden()
    expect(page.locator("#sessions-recent li", has_text="Write the changelog")).to_contain_text(
        "via manual")
    dash.screenshot("session-finished")
    dash.task_row(task["id"]).get_by_role("link", name="Write the changelog").click()
    expect(detail.locator(".timeline-entry", has_text="agent: halfway there")).to_be_visible()
    api.close()


STUBBORN_AGENT = "import time\nprint('agent: waiting forever', flush=True)\ntime.sleep(600)\n"


def test_stop_a_running_session_from_the_page(make_server, dashboard, tmp_path):
    script = tmp_path / "slow_agent.py"
    script.write_text(STUBBORN_AGENT)
    server = make_server(env={"MAESTRO_AGENT_COMMAND": f"{sys.executable} {script}",
                              "MAESTRO_STOP_GRACE": "1"})
    api = httpx.Client(base_url=server.url, timeout=10)
    if spawn_route_missing(api):
        api.close()
        pytest.skip("POST /api/sessions/spawn is not available in this build yet")
    project = api.post("/api/projects", json={"name": "Stoppable",
                                              "workingDir": str(tmp_path)}).json()
    task = api.post("/api/tasks", json={"projectId": project["id"], "title": "Long job"}).json()
    spawned = api.post("/api/sessions/spawn", json={
        "projectId": project["id"], "taskIds": [task["id"]], "spawnSource": "api"}).json()
    sid = spawned["sessionId"]

    dash = dashboard(server)
    page = dash.open(f"/#/p/{project['id']}/session/{sid}")
    detail = page.locator("#detail")
    expect(detail.locator(".log")).to_contain_text("agent: waiting forever", timeout=20000)
    expect(detail.locator(".facts .badge").first).to_have_text("running")
    expect(detail.locator(".follow-state")).to_have_text("following live")
    detail.get_by_role("button", name="Stop session").click()
    expect(detail.locator(".facts .badge").first).to_have_text("failed", timeout=20000)
    expect(detail.get_by_role("button", name="Stop session")).to_be_hidden()
    expect(detail.locator(".events")).to_contain_text("stopped")
    assert api.get(f"/api/sessions/{sid}").json()["status"] == "failed"
    api.close()
