"""The API reference: /openapi.json lists every route of the router with its parameters, its
request body where it takes one, its answer and its errors, and the answers of a real server
match those schemas; /docs is Swagger UI served by Maestro itself, working offline in Chromium
(no request leaves the server's origin), and "Try it out" works."""

from __future__ import annotations

import re

import httpx
import jsonschema
import pytest
from helpers import assert_documented, new_project, new_session, new_task, ok
from playwright.sync_api import expect
from test_dashboard import browser, dashboard  # noqa: F401  (fixtures)

from maestro.config import Settings
from maestro.server.app import create_app


@pytest.fixture(scope="module")
def document(api):
    return ok(api.get("/openapi.json"))


def router_table(tmp_path) -> list:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data"),
                                  "SESSION_DIR": str(tmp_path / "s")})
    app = create_app(settings)
    return app.inner.state.router.table


def test_every_route_of_the_router_is_documented(document, tmp_path):
    table = router_table(tmp_path)
    routed = {(method.lower(), path) for method, path, _ in table}
    listed = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert routed == listed
    assert len(routed) >= 39
    for method, path, doc in table:
        assert doc is not None, f"{method} {path} has no declaration"
        op = document["paths"][path][method.lower()]
        assert op["summary"] and op["summary"] != "(undocumented)"
        assert ("requestBody" in op) == (doc.body is not None), (method, path)
        assert str(doc.status) in op["responses"]
        assert {"400", "401", "500"} <= set(op["responses"])
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert names == set(re.findall(r"\{(\w+)\}", path)), (method, path)
    tasks = document["paths"]["/api/tasks"]
    query = {p["name"] for p in tasks["get"]["parameters"]}
    assert {"projectId", "status", "parentId", "ready", "blocked", "limit", "cursor"} <= query
    assert tasks["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateTask"}
    for path in ("/api/projects", "/api/sessions", "/api/tasks/{id}/children"):
        get = document["paths"][path]["get"]
        assert {"limit", "cursor"} <= {p["name"] for p in get["parameters"]}
        assert {"X-Next-Cursor", "Link"} <= set(get["responses"]["200"]["headers"])
    create = document["components"]["schemas"]["CreateTask"]
    assert set(create["required"]) == {"projectId", "title"}
    assert create["properties"]["priority"]["enum"] == ["low", "medium", "high"]
    error = document["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "code", "message"}
    for name, schema in document["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_declared_bodies_are_what_the_routes_read(api, document, tmp_path):
    """A route declared with a body reads it (an empty body misses a required field); a route
    declared without one answers a body full of fields exactly as it answers no body."""
    project = new_project(api, name="Bodies")
    task = new_task(api, project["id"])
    session = new_session(api, project["id"], [task["id"]])
    ids = {"id": None, "taskId": task["id"], "dependsOnId": task["id"], "role": "worker"}
    for method, path, doc in router_table(tmp_path):
        if method not in ("POST", "PUT", "PATCH"):
            continue
        first = path.split("/")[2] if path.startswith("/api/") else ""
        ids["id"] = {"projects": project["id"], "tasks": task["id"],
                     "sessions": session["id"], "skills": "missing-skill"}.get(first)
        url = path.format(**ids)
        schema = document["paths"][path][method.lower()].get("requestBody")
        if schema is not None:
            model = document["components"]["schemas"][
                schema["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
            if model.get("required"):
                answer = api.request(method, url, json={})
                assert answer.status_code == 400, (method, path, answer.text)
                assert any(name in answer.json()["message"] for name in model["required"]), \
                    (method, path, answer.text)
        elif method == "POST" and not path.endswith(("/stop", "/reload")):
            # Idempotent routes: the same request twice, with and without a body.
            plain = api.request(method, url)
            stuffed = api.request(method, url, json={"title": "x", "status": "completed",
                                                     "taskIds": [], "sessionId": "s"})
            assert (plain.status_code, _without_times(plain.json())) == \
                (stuffed.status_code, _without_times(stuffed.json())), (method, path)


def _without_times(body):
    if isinstance(body, dict):
        return {k: v for k, v in body.items() if k not in ("updatedAt", "lastActivity")}
    return body


def check(document: dict, resp: httpx.Response, method: str, path: str) -> None:
    """The answer matches the schema the document gives for its status."""
    assert_documented(document, resp, method, path)


def test_answers_match_the_documented_schemas(api, document):
    project = ok(api.post("/api/projects", json={"name": "Schemas"}), 201)
    pid = project["id"]
    calls = [("get", "/health", "/health"), ("get", "/ws-status", "/ws-status"),
             ("get", "/api/projects", "/api/projects"),
             ("get", "/api/projects/{id}", f"/api/projects/{pid}"),
             ("get", "/api/projects/{id}", "/api/projects/proj_missing")]
    for method, path, url in calls:
        check(document, api.request(method, url), method, path)
    created = api.post("/api/tasks", json={"projectId": pid, "title": "Root"})
    check(document, created, "post", "/api/tasks")
    root = created.json()
    child = ok(api.post("/api/tasks", json={"projectId": pid, "title": "Child",
                                            "parentId": root["id"]}), 201)
    made = api.post("/api/sessions", json={"projectId": pid, "taskIds": [child["id"]]})
    check(document, made, "post", "/api/sessions")
    sid = made.json()["id"]
    other = ok(api.post("/api/sessions", json={"projectId": pid, "taskIds": []}), 201)["id"]
    rid, cid = root["id"], child["id"]
    more = [
        ("patch", "/api/tasks/{id}", f"/api/tasks/{cid}", {"status": "in_progress"}),
        ("patch", "/api/tasks/{id}", f"/api/tasks/{cid}", {"status": "nope"}),
        ("post", "/api/tasks/{id}/timeline", f"/api/tasks/{rid}/timeline", {"message": "hi"}),
        ("post", "/api/sessions/{id}/timeline", f"/api/sessions/{sid}/timeline",
         {"message": "half", "taskId": cid}),
        ("post", "/api/sessions/{id}/events", f"/api/sessions/{sid}/events",
         {"type": "file_modified", "data": {"file": "a.py"}}),
        ("get", "/api/tasks/{id}/history", f"/api/tasks/{cid}/history", None),
        ("get", "/api/tasks/{id}/readiness", f"/api/tasks/{rid}/readiness", None),
        ("get", "/api/tasks/{id}/children", f"/api/tasks/{rid}/children?limit=1", None),
        ("get", "/api/tasks", f"/api/tasks?projectId={pid}&limit=1", None),
        ("get", "/api/tasks", "/api/tasks?limit=0", None),
        ("get", "/api/tasks", f"/api/tasks?ready=true&projectId={pid}", None),
        ("get", "/api/sessions", f"/api/sessions?projectId={pid}", None),
        ("post", "/api/tasks/{id}/claim", f"/api/tasks/{rid}/claim", {"sessionId": sid}),
        ("post", "/api/tasks/{id}/claim", f"/api/tasks/{rid}/claim", {"sessionId": other}),
        ("post", "/api/sessions/{id}/heartbeat", f"/api/sessions/{sid}/heartbeat", {}),
        ("post", "/api/projects/{id}/claim-next", f"/api/projects/{pid}/claim-next",
         {"sessionId": sid}),
        ("post", "/api/tasks/{id}/dependencies/{dependsOnId}",
         f"/api/tasks/{cid}/dependencies/{cid}", None),
        ("delete", "/api/sessions/{id}/tasks/{taskId}", f"/api/sessions/{sid}/tasks/{cid}",
         None),
        ("get", "/api/sessions/{id}/log", f"/api/sessions/{sid}/log?offset=0", None),
        ("get", "/api/sessions/{id}/log", f"/api/sessions/{sid}/log?tail=0", None),
        ("post", "/api/projects/{id}/plan", f"/api/projects/{pid}/plan",
         {"tasks": [{"ref": "api", "title": "API"},
                    {"ref": "ui", "title": "UI", "parent": rid, "dependsOn": ["api"]}],
          "dependencies": [{"task": cid, "dependsOn": "api"}]}),
        ("post", "/api/projects/{id}/plan", f"/api/projects/{pid}/plan", {}),
        ("post", "/api/projects/{id}/plan", "/api/projects/proj_missing/plan",
         {"tasks": [{"ref": "a", "title": "A"}]}),
        ("delete", "/api/tasks/{id}", f"/api/tasks/{rid}", None),
        ("delete", "/api/tasks/{id}", f"/api/tasks/{rid}?cascade=true", None),
        ("delete", "/api/sessions/{id}", f"/api/sessions/{sid}", None),
        ("delete", "/api/sessions/{id}", f"/api/sessions/{other}", None),
        ("delete", "/api/projects/{id}", f"/api/projects/{pid}", None),
        ("delete", "/api/projects/{id}", f"/api/projects/{pid}?cascade=true", None),
        ("get", "/api/skills", "/api/skills", None),
        ("get", "/api/skills/{id}", "/api/skills/none", None),
        ("post", "/api/sessions/spawn", "/api/sessions/spawn", {"projectId": pid}),
    ]
    statuses = set()
    for method, path, url, body in more:
        resp = api.request(method, url, json=body) if body is not None \
            else api.request(method, url)
        statuses.add(resp.status_code)
        check(document, resp, method, path)
    assert {200, 201, 400, 404, 409} <= statuses


def test_docs_page_works_offline_and_tries_requests(srv, api, dashboard):  # noqa: F811
    new_project(api, name="Seen through the docs")
    dash = dashboard(srv)
    page = dash.page
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(srv.url + "/docs")
    tasks = page.locator("#operations-tasks-postTasks")
    expect(tasks).to_be_visible()
    tasks.locator(".opblock-summary").click()
    body = tasks.locator(".opblock-section-request-body")
    expect(body).to_be_visible()
    expect(body).to_contain_text("projectId")
    expect(body).to_contain_text("title")
    expect(page.locator("#operations-tasks-getTasks")).to_contain_text("/api/tasks")
    expect(page.locator("#operations-tasks-getTasksIdHistory")).to_be_visible()

    listing = page.locator("#operations-projects-getProjects")
    listing.locator(".opblock-summary").click()
    listing.get_by_role("button", name="Try it out").click()
    listing.get_by_role("button", name="Execute").click()
    answer = listing.locator(".responses-wrapper .live-responses-table")
    expect(answer).to_contain_text("Seen through the docs")
    expect(answer.locator("tbody .response-col_status").first).to_contain_text("200")
    dash.screenshot("api-docs")

    assert requests, "the page made no request"
    foreign = [url for url in requests
               if not (url.startswith(srv.url + "/") or url.startswith("data:"))]
    assert not foreign, f"requests left the server's origin: {foreign}"
    assert any(url.endswith("/docs/static/swagger-ui-bundle.js") for url in requests)
    assert any(url.endswith("/openapi.json") for url in requests)


def test_the_reference_needs_no_token_but_the_api_does(make_server):
    server = make_server(env={"MAESTRO_TOKEN": "docs-test-token-5e1"})
    for path in ("/docs", "/openapi.json", "/docs/static/swagger-ui-bundle.js", "/ui/docs.js"):
        assert httpx.get(server.url + path).status_code == 200, path
    assert httpx.get(server.url + "/api/projects").status_code == 401
    assert httpx.get(server.url + "/docs/static/../../api/projects").status_code in (401, 404)
