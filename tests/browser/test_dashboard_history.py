"""The dashboard's task history, session events and list loading in a real Chromium against a
real server: an open task shows what its sessions reported about it, live, merged with its own
timeline exactly as the server's history; a session's events read as sentences with the raw
JSON one click away; a stopped session says so; a board of more than one page of tasks loads
page by page. Every test fails on any console error it did not expect (fixtures of
test_dashboard.py)."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect
from test_dashboard import HOSTILE, api, browser, dashboard  # noqa: F401


def post(api: httpx.Client, path: str, body: dict) -> dict:
    resp = api.post(path, json=body)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


def test_open_task_shows_its_sessions_reports_live(server, api, dashboard):
    project = post(api, "/api/projects", {"name": "Reports"})
    pid = project["id"]
    task = post(api, "/api/tasks", {"projectId": pid, "title": "Payment form"})
    other = post(api, "/api/tasks", {"projectId": pid, "title": "Other work"})
    session = post(api, "/api/sessions", {"projectId": pid, "taskIds": [task["id"], other["id"]],
                                          "name": "Worker: payments"})
    post(api, f"/api/sessions/{session['id']}/timeline",
         {"type": "progress", "message": "form laid out", "taskId": task["id"]})

    dash = dashboard(server)
    page = dash.open(f"/#/p/{pid}/task/{task['id']}")
    detail = page.locator("#detail")
    entries = detail.locator(".timeline-entry")
    expect(entries.first).to_contain_text("form laid out")
    expect(entries.first).to_have_attribute("data-source", "session")
    expect(entries.first.get_by_role("link", name="Worker: payments")).to_be_visible()
    expect(entries.last).to_contain_text("Task created")

    # A report posted through the API while the pane is open appears at once, newest first.
    post(api, f"/api/sessions/{session['id']}/timeline",
         {"type": "task_completed", "message": "payment form done", "taskId": task["id"]})
    expect(entries.first).to_contain_text("payment form done")
    expect(entries.first).to_contain_text("task completed")
    expect(entries.first).to_contain_text("agent report")
    # A report about another task of the same session never shows here.
    post(api, f"/api/sessions/{session['id']}/timeline",
         {"type": "progress", "message": "about the other task", "taskId": other["id"]})
    post(api, f"/api/tasks/{task['id']}/timeline", {"message": "reviewed", "type": "milestone"})
    expect(entries.first).to_contain_text("reviewed")
    expect(detail).not_to_contain_text("about the other task")
    # A hostile report is text.
    post(api, f"/api/sessions/{session['id']}/timeline",
         {"type": "progress", "message": HOSTILE, "taskId": task["id"]})
    expect(entries.first.locator(".timeline-message")).to_have_text(HOSTILE)
    assert page.evaluate("window.__pwned") is None

    # What the pane shows is the server's history, newest first (the rule of `task show`).
    history = api.get(f"/api/tasks/{task['id']}/history").json()
    shown = entries.evaluate_all("els => els.map(e => [e.dataset.source, "
                                 "e.querySelector('.timeline-message')?.textContent ?? null])")
    assert shown == [[e["source"], e.get("message")] for e in reversed(history)]
    dash.screenshot("task-history")
    dash.assert_not_reloaded()


def test_session_events_read_as_sentences_with_raw_json_on_demand(server, api, dashboard):
    project = post(api, "/api/projects", {"name": "Events"})
    pid = project["id"]
    task = post(api, "/api/tasks", {"projectId": pid, "title": "Login"})
    session = post(api, "/api/sessions", {"projectId": pid, "taskIds": [task["id"]],
                                          "name": "Worker: login"})
    sid = session["id"]
    for event in [
        {"type": "process_started", "data": {"pid": 4242, "mode": "pty", "cwd": "/srv/shop",
                                             "command": "maestro worker init"}},
        {"type": "file_modified", "data": {"file": "src/login.py",
                                           "timestamp": "2026-01-01T00:00:00.000Z"}},
        {"type": "log", "data": {"level": "warn", "message": HOSTILE}},
    ]:
        post(api, f"/api/sessions/{sid}/events", event)

    dash = dashboard(server)
    page = dash.open(f"/#/p/{pid}/session/{sid}")
    events = page.locator("#detail .events .event-entry")
    expect(events).to_have_count(3)
    expect(events.nth(0)).to_contain_text(f"[warn] {HOSTILE}")
    expect(events.nth(1).locator(".event-text")).to_have_text("File changed: src/login.py")
    expect(events.nth(1)).to_contain_text("file modified")
    expect(events.nth(2).locator(".event-text")).to_have_text(
        "Agent started: maestro worker init (pid 4242, in pty, in /srv/shop)")

    # The raw JSON is folded away until asked for.
    raw = events.nth(1).locator(".event-data")
    expect(raw).to_be_hidden()
    events.nth(1).get_by_text("Raw JSON").click()
    expect(raw).to_be_visible()
    expect(raw).to_contain_text('"file": "src/login.py"')
    assert '"type": "file_modified"' in raw.text_content()

    # The agent is stopped: the exit reads as such, live, and so does the session's status.
    api.patch(f"/api/sessions/{sid}", json={"status": "failed", "events": [
        {"type": "process_exit", "data": {"exitCode": None, "signal": "SIGTERM",
                                          "reason": "stopped"}}]})
    expect(events.first.locator(".event-text")).to_have_text(
        "Exited with signal SIGTERM (stopped by the user)")
    expect(page.locator("#detail .session-facts")).to_contain_text("failed stopped by the user")
    assert page.evaluate("window.__pwned") is None
    dash.screenshot("session-events")


def test_a_stop_reason_in_metadata_reads_as_stopped_by_the_user(server, api, dashboard):
    project = post(api, "/api/projects", {"name": "Stopped"})
    session = post(api, "/api/sessions", {"projectId": project["id"], "taskIds": [],
                                          "name": "Halted", "status": "failed",
                                          "metadata": {"stopReason": "user"}})
    plain = post(api, "/api/sessions", {"projectId": project["id"], "taskIds": [],
                                        "name": "Crashed", "status": "failed"})
    dash = dashboard(server)
    page = dash.open(f"/#/p/{project['id']}/session/{session['id']}")
    expect(page.locator("#detail .session-facts")).to_contain_text("stopped by the user")
    page.goto(f"{server.url}/#/p/{project['id']}/session/{plain['id']}")
    expect(page.locator("#detail h2")).to_have_text("Crashed")
    expect(page.locator("#detail .session-facts")).not_to_contain_text("stopped by the user")


def test_a_board_bigger_than_a_page_loads_page_by_page(server, api, dashboard):
    project = post(api, "/api/projects", {"name": "Big board"})
    pid = project["id"]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(1205):
            assert client.post("/api/tasks", json={"projectId": pid,
                                                   "title": f"t{i}"}).status_code == 201
    dash = dashboard(server)
    asked: list[str] = []
    dash.page.on("request", lambda r: asked.append(r.url) if "/api/tasks" in r.url else None)
    page = dash.open(f"/#/p/{pid}")
    expect(page.locator(f'#project-list li[data-project-id="{pid}"]')).to_contain_text(
        "1205 pending")
    assert any("limit=1000" in url and "cursor=" not in url for url in asked), asked
    assert any("limit=1000" in url and "cursor=" in url for url in asked), asked
    # And it stays live after loading: a task made now arrives as an event.
    post(api, "/api/tasks", {"projectId": pid, "title": "one more"})
    expect(page.locator(f'#project-list li[data-project-id="{pid}"]')).to_contain_text(
        "1206 pending")
