"""Deleting from the dashboard in a real Chromium against a real server (SPEC §7.2.5, §7.3.6,
§7.4.5): a leaf task from its pane (keyboard only), a parent with its whole subtree after the
confirmation has said how many subtasks go, a refusal of the server shown in the pane, a session
(its tasks no longer list it; a running agent is stopped first), and a project that still has
tasks and sessions through the offer to delete everything, which a second open page follows
live. Every test fails on any console error it did not expect (fixtures of test_dashboard.py)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import httpx
import pytest
from helpers import wait_until
from playwright.sync_api import expect
from test_dashboard import (  # noqa: F401
    HOSTILE, HTTP_STATUS, api, browser, dashboard, make_board, spawn_route_missing,
)


def tasks_by_title(api: httpx.Client, pid: str) -> dict[str, dict]:
    return {t["title"]: t for t in api.get("/api/tasks", params={"projectId": pid}).json()}


def gone(api: httpx.Client, path: str) -> bool:
    return api.get(path).status_code == 404


def requests_seen(page, requests: list[str], last: str) -> list[str]:
    """The requests recorded by a page listener once `last` is among them (the listener runs only
    while Playwright is called, so this waits through the page rather than by sleeping)."""
    for _ in range(160):
        if last in requests:
            return requests
        page.wait_for_timeout(50)
    raise AssertionError(f"the page never sent {last}: {requests}")


def agent_script(folder: Path) -> Path:
    """An agent that records its process id (by session) and then waits to be stopped."""
    script = folder / "waiting_agent.py"
    script.write_text(
        "import os, pathlib, time\n"
        f"pathlib.Path({str(folder)!r}, os.environ['MAESTRO_SESSION_ID'] + '.pid')"
        ".write_text(str(os.getpid()))\n"
        "print('agent: waiting to be stopped', flush=True)\n"
        "time.sleep(600)\n")
    return script


def process_alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return not re.search(r"^State:\s+Z", status, re.M)  # a zombie has ended


def spawn_waiting_agent(api: httpx.Client, folder: Path, pid: str,
                        task_id: str) -> tuple[str, int]:
    """Spawn a session whose agent runs; returns its id and the agent's process id."""
    answer = api.post("/api/sessions/spawn", json={"projectId": pid, "taskIds": [task_id],
                                                   "spawnSource": "api"})
    assert answer.status_code == 201, answer.text
    sid = answer.json()["sessionId"]
    pid_file = folder / f"{sid}.pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=20,
               what="the agent started")
    return sid, int(pid_file.read_text())


@pytest.fixture
def agent_server(make_server, tmp_path):
    """A server whose launcher runs the waiting agent; skips when spawning is not built in."""
    server = make_server(env={"MAESTRO_AGENT_COMMAND": f"{sys.executable} "
                                                       f"{agent_script(tmp_path)}",
                              "MAESTRO_STOP_GRACE": "1"})
    with httpx.Client(base_url=server.url, timeout=10) as client:
        if spawn_route_missing(client):
            pytest.skip("POST /api/sessions/spawn is not available in this build")
        yield server, client


# ------------------------------------------------------------------------------------------------


def test_delete_a_leaf_task_from_its_pane_with_the_keyboard(server, api, dashboard):
    board = make_board(api)
    pid = board["project"]["id"]
    tasks = tasks_by_title(api, pid)
    card, payment = tasks["Card validation"], board["payment"]
    dash = dashboard(server)
    page = dash.open(f"/#/p/{pid}/task/{card['id']}")
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text("Card validation")
    trigger = detail.get_by_role("button", name="Delete task", exact=True).first
    box = detail.locator(".confirm")

    # Enter opens the confirmation with Cancel focused; Escape closes it, not the pane.
    trigger.focus()
    page.keyboard.press("Enter")
    expect(box).to_be_visible()
    expect(box.locator(".confirm-question")).to_have_text("Delete the task “Card validation”?")
    expect(box.get_by_role("button", name="Cancel")).to_be_focused()
    expect(trigger).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")
    expect(box).to_be_hidden()
    expect(trigger).to_be_focused()
    expect(detail.locator("h2")).to_have_text("Card validation")
    assert api.get(f"/api/tasks/{card['id']}").status_code == 200

    # Enter, Shift+Tab to the confirm button, Enter: deleted, and its parent opens.
    page.keyboard.press("Enter")
    page.keyboard.press("Shift+Tab")
    expect(box.get_by_role("button", name="Delete task")).to_be_focused()
    page.keyboard.press("Enter")
    wait_until(lambda: gone(api, f"/api/tasks/{card['id']}"), what="task deleted")
    expect(detail.locator("h2")).to_have_text("Payment form")
    expect(detail.locator("h2")).to_be_focused()
    assert f"/task/{payment['id']}" in page.url
    expect(detail.locator(".facts")).not_to_contain_text("Subtasks")
    expect(dash.task_row(card["id"])).to_have_count(0)
    assert api.get(f"/api/tasks/{payment['id']}").status_code == 200

    # A top-level task: the pane closes and the focus goes to the next task in the tree.
    search = tasks["Search index"]
    dash.task_row(search["id"]).get_by_role("link", name="Search index").click()
    expect(detail.locator("h2")).to_have_text("Search index")
    trigger.click()
    box.get_by_role("button", name="Delete task").click()
    expect(detail).to_be_hidden()
    expect(dash.task_row(search["id"])).to_have_count(0)
    expect(dash.task_row(tasks["Product images"]["id"]).locator(".task-title")).to_be_focused()
    assert gone(api, f"/api/tasks/{search['id']}")
    assert len(tasks_by_title(api, pid)) == 4
    dash.assert_not_reloaded()


def test_delete_a_parent_deletes_its_subtree_after_saying_how_many(server, api, dashboard):
    board = make_board(api)
    pid = board["project"]["id"]
    tasks = tasks_by_title(api, pid)
    checkout, session = board["checkout"], board["session"]
    subtree = [tasks[t]["id"] for t in ("Checkout flow", "Cart review page", "Payment form",
                                        "Card validation")]
    dash = dashboard(server)
    page = dash.open(f"/#/p/{pid}/task/{checkout['id']}")
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text("Checkout flow")
    detail.get_by_role("button", name="Delete task", exact=True).click()
    box = detail.locator(".confirm")
    question = box.locator(".confirm-question")
    expect(question).to_have_text(
        "Delete the task “Checkout flow” and its 3 subtasks (all levels below it)?")
    expect(box.locator(".confirm-yes")).to_have_text("Delete task and 3 subtasks")

    # A subtask added elsewhere while the question is open: the count follows.
    added = api.post("/api/tasks", json={"projectId": pid, "title": "3-D Secure",
                                         "parentId": board["payment"]["id"]}).json()
    expect(question).to_contain_text("its 4 subtasks")
    dash.screenshot("delete-task-confirm")
    box.get_by_role("button", name="Delete task and 4 subtasks").click()

    for task_id in subtree + [added["id"]]:
        wait_until(lambda task_id=task_id: gone(api, f"/api/tasks/{task_id}"),
                   what=f"{task_id} deleted")
        expect(dash.task_row(task_id)).to_have_count(0)
    assert sorted(tasks_by_title(api, pid)) == ["Product images", "Search index"]
    # The session that worked on the cart no longer lists it.
    assert api.get(f"/api/sessions/{session['id']}").json()["taskIds"] == []
    expect(page.locator("#sessions-active li", has_text="Worker: cart review")).to_contain_text(
        "0 tasks")
    expect(detail).to_be_hidden()
    expect(dash.task_row(tasks["Search index"]["id"]).locator(".task-title")).to_be_focused()
    dash.assert_not_reloaded()


def test_a_refusal_of_the_server_is_shown_in_the_pane_and_text_stays_text(server, api,
                                                                          dashboard):
    """The page has not heard of a subtask yet (its event is held back on the way), so it asks
    to delete a leaf; the server refuses with its own words, shown in the pane."""
    project = api.post("/api/projects", json={"name": "Held back"}).json()
    pid = project["id"]
    hostile = api.post("/api/tasks", json={"projectId": pid, "title": HOSTILE}).json()
    dash = dashboard(server).allow(HTTP_STATUS.format(400))
    page = dash.page
    holding = {"on": False}
    held: list[dict] = []

    def relay(ws):
        upstream = ws.connect_to_server()

        def from_server(message):
            event = json.loads(message) if isinstance(message, str) else {}
            if holding["on"] and event.get("type") == "task:created":
                held.append(event)
                return
            ws.send(message)
        upstream.on_message(from_server)

    page.route_web_socket(re.compile(r"^ws://"), relay)
    dash.open(f"/#/p/{pid}/task/{hostile['id']}")
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text(HOSTILE)

    holding["on"] = True
    child = api.post("/api/tasks", json={"projectId": pid, "title": "Unheard of",
                                         "parentId": hostile["id"]}).json()
    while not held:
        page.wait_for_timeout(50)
    trigger = detail.get_by_role("button", name="Delete task", exact=True).first
    trigger.click()
    box = detail.locator(".confirm")
    expect(box.locator(".confirm-question")).to_have_text(f"Delete the task “{HOSTILE}”?")
    box.get_by_role("button", name="Delete task").click()
    error = detail.locator(".form-error", has_text="TASK_HAS_CHILDREN")
    expect(error).to_have_text("Cannot delete task with 1 child task(s) (TASK_HAS_CHILDREN)")
    expect(box).to_be_hidden()
    expect(trigger).to_be_focused()
    assert api.get(f"/api/tasks/{hostile['id']}").status_code == 200
    assert api.get(f"/api/tasks/{child['id']}").status_code == 200
    expect(dash.task_row(hostile["id"])).to_be_visible()
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('#detail img, #detail script').length") == 0
    dash.assert_not_reloaded()


def test_delete_a_session_from_its_pane_unlinks_its_tasks(server, api, dashboard):
    board = make_board(api)
    pid, cart, session = board["project"]["id"], board["cart"], board["session"]
    reviewer = api.post("/api/sessions", json={"projectId": pid, "taskIds": [],
                                               "name": "Reviewer", "status": "completed"}).json()
    dash = dashboard(server)
    page = dash.open(f"/#/p/{pid}/session/{session['id']}")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text("Worker: cart review")
    expect(dash.task_row(cart["id"]).locator(".chip")).to_contain_text("Worker: cart review")

    detail.get_by_role("button", name="Delete session", exact=True).first.click()
    box = detail.locator(".confirm")
    expect(box.locator(".confirm-question")).to_have_text(
        "Delete the session “Worker: cart review”? Its 1 task stays but no longer lists it.")
    expect(box.get_by_role("button", name="Cancel")).to_be_focused()
    box.get_by_role("button", name="Delete session").click()

    wait_until(lambda: gone(api, f"/api/sessions/{session['id']}"), what="session deleted")
    assert api.get(f"/api/tasks/{cart['id']}").json()["sessionIds"] == []
    expect(dash.task_row(cart["id"]).locator(".chip")).to_have_count(0)
    expect(page.locator("#sessions-active li")).to_have_count(0)
    expect(detail).to_be_hidden()
    expect(page.locator(f'#sessions-recent li[data-session-id="{reviewer["id"]}"] .session-name')) \
        .to_be_focused()
    # Not launched by Maestro: nothing to stop, only the delete.
    delete = f"DELETE {server.url}/api/sessions/{session['id']}"
    requests_seen(page, requests, delete)
    assert not [r for r in requests if "/stop" in r]
    assert [r for r in requests if r.startswith("DELETE ")] == [delete]

    # The task's own pane no longer lists it either.
    dash.task_row(cart["id"]).get_by_role("link", name="Cart review page").click()
    expect(detail.locator("h2")).to_have_text("Cart review page")
    expect(detail.locator(".facts")).not_to_contain_text("Worker: cart review")
    dash.assert_not_reloaded()


def test_delete_a_running_session_stops_its_agent_first(agent_server, dashboard, tmp_path):
    server, api = agent_server
    project = api.post("/api/projects", json={"name": "Agents",
                                              "workingDir": str(tmp_path)}).json()
    task = api.post("/api/tasks", json={"projectId": project["id"], "title": "Long job"}).json()
    sid, agent_pid = spawn_waiting_agent(api, tmp_path, project["id"], task["id"])

    dash = dashboard(server)
    page = dash.open(f"/#/p/{project['id']}/session/{sid}")
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    detail = page.locator("#detail")
    expect(detail.locator(".log")).to_contain_text("agent: waiting to be stopped", timeout=20000)
    detail.get_by_role("button", name="Delete session", exact=True).click()
    box = detail.locator(".confirm")
    expect(box.locator(".confirm-question")).to_contain_text("Its agent is stopped first.")
    dash.screenshot("delete-session-confirm")
    box.get_by_role("button", name="Stop and delete").click()

    wait_until(lambda: gone(api, f"/api/sessions/{sid}"), what="session deleted")
    wait_until(lambda: not process_alive(agent_pid), timeout=20, what="the agent stopped")
    delete = f"DELETE {server.url}/api/sessions/{sid}"
    calls = [r for r in requests_seen(page, requests, delete)
             if "/stop" in r or r.startswith("DELETE ")]
    assert calls == [f"POST {server.url}/api/sessions/{sid}/stop", delete]
    assert api.get(f"/api/tasks/{task['id']}").json()["sessionIds"] == []
    expect(detail).to_be_hidden()
    expect(page.locator("#sessions-heading")).to_be_focused()
    expect(page.locator("#sessions-active li")).to_have_count(0)


def test_delete_a_project_with_everything_through_the_offer(agent_server, dashboard, tmp_path):
    server, api = agent_server
    board = make_board(api)
    pid = board["project"]["id"]
    api.put(f"/api/projects/{pid}", json={"workingDir": str(tmp_path)})
    search = tasks_by_title(api, pid)["Search index"]
    sid, agent_pid = spawn_waiting_agent(api, tmp_path, pid, search["id"])
    other = api.post("/api/projects", json={"name": "Garden"}).json()
    kept = api.post("/api/tasks", json={"projectId": other["id"], "title": "Keep me"}).json()

    watcher = dashboard(server)
    watching = watcher.open(f"/#/p/{pid}")
    expect(watcher.task_row(search["id"])).to_be_visible()
    dash = dashboard(server).allow(HTTP_STATUS.format(400))
    page = dash.open(f"/#/p/{pid}")
    expect(dash.task_row(search["id"])).to_be_visible()

    page.get_by_role("button", name="Delete", exact=True).click()
    page.get_by_role("button", name="Delete project").click()
    expect(page.locator("#project-error")).to_have_text(
        "Cannot delete project with 6 existing task(s) (PROJECT_HAS_DEPENDENCIES)")
    offer = page.locator("#project-delete-all")
    expect(offer).to_have_text(
        "Delete everything (6 tasks, 2 sessions, running agents are stopped)")
    expect(page.locator("#project-delete-question")).to_have_text(
        "“Web shop” still has 6 tasks, 2 sessions.")
    expect(page.get_by_role("button", name="Delete project")).to_be_hidden()
    expect(page.locator("#project-delete-no")).to_be_focused()
    assert api.get(f"/api/projects/{pid}").status_code == 200

    # Another task arrives meanwhile: the offer counts it.
    api.post("/api/tasks", json={"projectId": pid, "title": "Late arrival"})
    expect(offer).to_contain_text("7 tasks")
    dash.screenshot("delete-project-offer")
    offer.click()

    wait_until(lambda: gone(api, f"/api/projects/{pid}"), what="project deleted")
    assert api.get("/api/tasks", params={"projectId": pid}).json() == []
    assert api.get("/api/sessions", params={"projectId": pid}).json() == []
    wait_until(lambda: not process_alive(agent_pid), timeout=20, what="the agent stopped")
    assert gone(api, f"/api/sessions/{sid}")
    assert api.get(f"/api/tasks/{kept['id']}").status_code == 200

    # This page moves on to the remaining project, focused in the list.
    expect(page.locator("#project-name")).to_have_text("Garden")
    expect(page.locator(f'#project-list li[data-project-id="{other["id"]}"] a')).to_be_focused()
    expect(page.locator("#project-list li")).to_have_count(1)
    expect(page.locator("#project-error")).to_be_hidden()

    # The other page sees it all disappear, live.
    expect(watching.locator("#project-list li")).to_have_count(1)
    expect(watching.locator("#project-list li")).to_contain_text("Garden")
    expect(watching.locator("#project-view")).to_be_hidden()
    expect(watching.locator("#project-gone")).to_have_text(
        "The project in this link does not exist (any more).")
    expect(watching.locator("#sessions-view")).to_be_hidden()
    expect(watching.get_by_text("Search index").filter(visible=True)).to_have_count(0)
    watching.get_by_role("link", name="Garden").click()
    expect(watcher.task_row(kept["id"])).to_be_visible()
    watcher.assert_not_reloaded()
    dash.assert_not_reloaded()
