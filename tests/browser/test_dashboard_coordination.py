"""The dashboard's coordination views in a real Chromium against a real server (SPEC §15): a
task's dependencies shown, added and removed through the page, ready/blocked badges and the
ready filter in the tree, the claim holder with its lease end (and releasing it), and the
dependency graph following changes made through the API without a reload. Every test fails on
any console error it did not expect (fixtures of test_dashboard.py)."""

from __future__ import annotations

import httpx
from helpers import wait_until
from playwright.sync_api import expect
from test_dashboard import HOSTILE, HTTP_STATUS, api, browser, dashboard  # noqa: F401


def make_plan(api: httpx.Client) -> dict:
    """A project where Build waits for Design, Deploy stands alone and Build has a subtask."""
    project = api.post("/api/projects", json={"name": "Release plan"}).json()
    pid = project["id"]

    def task(title, **fields):
        resp = api.post("/api/tasks", json={"projectId": pid, "title": title, **fields})
        assert resp.status_code == 201, resp.text
        return resp.json()

    design = task("Design", priority="high")
    build = task("Build", dependencies=[design["id"]])
    step = task("Build step", parentId=build["id"])
    deploy = task("Deploy")
    return {"pid": pid, "design": design, "build": build, "step": step, "deploy": deploy}


def new_session(api: httpx.Client, pid: str, name: str) -> dict:
    resp = api.post("/api/sessions", json={"projectId": pid, "taskIds": [], "name": name})
    assert resp.status_code == 201, resp.text
    return resp.json()


def deps_of(api: httpx.Client, task_id: str) -> list[str]:
    return api.get(f"/api/tasks/{task_id}").json()["dependencies"]


def test_dependencies_are_shown_added_and_removed_through_the_page(server, api, dashboard):
    plan = make_plan(api)
    pid, design, build, deploy = plan["pid"], plan["design"], plan["build"], plan["deploy"]
    dash = dashboard(server).allow(HTTP_STATUS.format(400))
    page = dash.open(f"/#/p/{pid}/task/{build['id']}")
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text("Build")
    expect(detail.locator(".deps-list li")).to_have_count(1)
    expect(detail.locator(".deps-list li")).to_contain_text("Design")
    expect(detail.locator(".deps-list li")).to_contain_text("pending")
    expect(detail.locator(".readiness-fact")).to_contain_text("blocked")
    expect(detail.locator(".readiness-fact")).to_contain_text("waits for Design")
    expect(dash.task_row(build["id"]).locator(".deps-chip")).to_contain_text("after Design")

    # Deploy waits for Build, chosen in the page.
    page.goto(f"{server.url}/#/p/{pid}/task/{deploy['id']}")
    expect(detail.locator("h2")).to_have_text("Deploy")
    expect(detail.locator(".deps-list")).to_contain_text("nothing")
    detail.get_by_label("Task to depend on").select_option(build["id"])
    detail.get_by_role("button", name="Add dependency").click()
    expect(detail.locator(".deps-list li")).to_contain_text("Build")
    wait_until(lambda: deps_of(api, deploy["id"]) == [build["id"]], what="dependency stored")
    expect(dash.task_row(deploy["id"]).locator(".readiness-blocked")).to_be_visible()

    # A cycle is refused with the server's words, and nothing changes.
    page.goto(f"{server.url}/#/p/{pid}/task/{design['id']}")
    expect(detail.locator("h2")).to_have_text("Design")
    expect(detail.locator(".dependents-list")).to_contain_text("Build")
    detail.get_by_label("Task to depend on").select_option(deploy["id"])
    detail.get_by_role("button", name="Add dependency").click()
    expect(detail.locator(".dep-form .form-error")).to_contain_text("DEPENDENCY_CYCLE")
    assert deps_of(api, design["id"]) == []

    # Removing it again, from the waiting task.
    page.goto(f"{server.url}/#/p/{pid}/task/{deploy['id']}")
    detail.get_by_role("button", name="Remove dependency on Build").click()
    expect(detail.locator(".deps-list")).to_contain_text("nothing")
    wait_until(lambda: deps_of(api, deploy["id"]) == [], what="dependency removed")
    expect(dash.task_row(deploy["id"]).locator(".readiness-ready")).to_be_visible()


def test_ready_and_blocked_badges_and_the_ready_filter_follow_changes(server, api, dashboard):
    plan = make_plan(api)
    pid, design, build, step, deploy = (plan[k] for k in ("pid", "design", "build", "step",
                                                          "deploy"))
    dash = dashboard(server)
    page = dash.open(f"/#/p/{pid}")
    expect(dash.task_row(design["id"]).locator(".readiness-ready")).to_have_text("ready")
    expect(dash.task_row(deploy["id"]).locator(".readiness-ready")).to_be_visible()
    expect(dash.task_row(build["id"]).locator(".readiness-blocked")).to_have_text("blocked")
    expect(dash.task_row(build["id"]).locator(".readiness-blocked")).to_have_attribute(
        "title", "Blocked: waits for Design")
    expect(dash.task_row(step["id"]).locator(".readiness-blocked")).to_be_visible()

    page.get_by_label("Filter tasks by status").select_option("ready")
    expect(page.locator("#task-tree li:not(.context)")).to_have_count(2)
    expect(dash.task_row(build["id"])).to_have_count(0)
    expect(page.locator("#task-count")).to_have_text("2 of 4")

    # Design completed elsewhere: Build and its subtask become ready in the filtered tree.
    api.patch(f"/api/tasks/{design['id']}", json={"status": "completed"})
    expect(dash.task_row(build["id"]).locator(".readiness-ready")).to_be_visible()
    expect(dash.task_row(step["id"]).locator(".readiness-ready")).to_be_visible()
    expect(dash.task_row(design["id"])).to_have_count(0)
    expect(page.locator("#task-count")).to_have_text("3 of 4")

    page.get_by_label("Filter tasks by status").select_option("waiting")
    expect(page.locator("#no-tasks")).to_have_text("No task waits for dependencies.")
    api.post(f"/api/tasks/{deploy['id']}/dependencies/{build['id']}")
    expect(dash.task_row(deploy["id"]).locator(".readiness-blocked")).to_be_visible()
    expect(page.locator("#task-tree li:not(.context)")).to_have_count(1)
    dash.assert_not_reloaded()


def test_claim_holder_and_lease_end_are_shown_and_a_person_can_release(server, api,
                                                                       dashboard):
    plan = make_plan(api)
    pid, design = plan["pid"], plan["design"]
    session = new_session(api, pid, "Worker: schema")
    dash = dashboard(server)
    page = dash.open(f"/#/p/{pid}/task/{design['id']}")
    row = dash.task_row(design["id"])
    expect(row.locator(".readiness-ready")).to_be_visible()

    granted = api.post(f"/api/tasks/{design['id']}/claim",
                       json={"sessionId": session["id"], "ttlSeconds": 900}).json()
    until = granted["claim"]["leaseExpiresAt"]
    clock = page.evaluate("(ms) => new Date(ms).toLocaleTimeString([], "
                          "{hour: '2-digit', minute: '2-digit'})", until)
    chip = row.locator(".claim-chip")
    expect(chip).to_contain_text("claimed by Worker: schema · until")
    expect(chip).to_contain_text(clock)
    expect(row.locator(".readiness-ready")).to_have_count(0)
    expect(row.get_by_label("Status of Design")).to_have_value("in_progress")
    detail = page.locator("#detail")
    claimed = detail.locator(".claim-fact")
    expect(claimed.get_by_role("link", name="Worker: schema")).to_be_visible()
    expect(claimed.locator("time")).to_have_attribute(
        "datetime", page.evaluate("(ms) => new Date(ms).toISOString()", until))

    claimed.get_by_role("button", name="Release the claim").click()
    expect(chip).to_have_count(0)
    expect(detail.locator(".claim-fact")).to_have_count(0)
    wait_until(lambda: api.get(f"/api/tasks/{design['id']}").json().get("claim") is None,
               what="claim released")
    assert api.get(f"/api/tasks/{design['id']}").json()["status"] == "pending"
    expect(row.locator(".readiness-ready")).to_be_visible()


def test_graph_view_updates_live_when_a_dependency_is_added_through_the_api(server, api,
                                                                            dashboard):
    plan = make_plan(api)
    pid, design, build, deploy = plan["pid"], plan["design"], plan["build"], plan["deploy"]
    hostile = api.post("/api/tasks", json={"projectId": pid, "title": HOSTILE}).json()
    dash = dashboard(server)
    page = dash.open(f"/#/p/{pid}")
    page.get_by_role("button", name="Dependency graph").click()
    expect(page.get_by_role("button", name="Dependency graph")).to_have_attribute(
        "aria-pressed", "true")
    graph = page.locator("#dep-graph")
    expect(page.locator("#task-tree")).to_be_hidden()
    edge = graph.locator(f'path.graph-edge[data-from="{design["id"]}"][data-to="{build["id"]}"]')
    expect(edge).to_have_count(1)
    expect(edge).to_have_class("graph-edge unmet")
    expect(graph.locator(".graph-node")).to_have_count(2)
    expect(graph.locator(f'.graph-node[data-task-id="{deploy["id"]}"]')).to_have_count(0)

    # Deploy now waits for Build, and the hostile task for Deploy: both appear, in later layers.
    api.post(f"/api/tasks/{deploy['id']}/dependencies/{build['id']}")
    api.post(f"/api/tasks/{hostile['id']}/dependencies/{deploy['id']}")
    added = graph.locator(f'path.graph-edge[data-from="{build["id"]}"][data-to="{deploy["id"]}"]')
    expect(added).to_have_count(1)
    expect(graph.locator(".graph-node")).to_have_count(4)
    lefts = page.evaluate("""(ids) => ids.map((id) => parseFloat(document.querySelector(
        `#dep-graph .graph-node[data-task-id="${id}"]`).style.left))""",
                          [design["id"], build["id"], deploy["id"], hostile["id"]])
    assert lefts == sorted(lefts) and len(set(lefts)) == 4
    expect(graph.locator(f'.graph-node[data-task-id="{hostile["id"]}"] .graph-title')) \
        .to_have_text(HOSTILE)
    expect(graph.locator("li", has_text="Deploy waits for Build")).to_have_count(1)

    # Completion and a claim, made elsewhere, show on the edges and nodes.
    api.patch(f"/api/tasks/{design['id']}", json={"status": "completed"})
    expect(edge).to_have_class("graph-edge met")
    build_node = graph.locator(f'.graph-node[data-task-id="{build["id"]}"]')
    expect(build_node.locator(".readiness-ready")).to_be_visible()
    session = new_session(api, pid, "Worker: build")
    api.post(f"/api/tasks/{build['id']}/claim", json={"sessionId": session["id"]})
    expect(build_node.locator(".graph-claim")).to_contain_text("Worker: build")
    expect(build_node.locator(".badge").first).to_have_text("in progress")

    # Removing an edge through the API takes it off the graph; a node opens the task.
    api.delete(f"/api/tasks/{hostile['id']}/dependencies/{deploy['id']}")
    expect(graph.locator(f'.graph-node[data-task-id="{hostile["id"]}"]')).to_have_count(0)
    graph.locator(f'.graph-node[data-task-id="{deploy["id"]}"]').click()
    expect(page.locator("#detail h2")).to_have_text("Deploy")
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('#dep-graph img, #dep-graph script')"
                         ".length") == 0
    dash.screenshot("dependency-graph")
    dash.assert_not_reloaded()
