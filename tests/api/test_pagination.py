"""Pages of every list (`?limit=&cursor=`) through a real server: the pages of a list add up to
the unpaged list; a walk under concurrent inserts and deletes neither skips nor repeats an item
that was there all along; bad parameters are refused with the error body; without `limit` the
answer is what it always was; the next page is announced in headers a browser may read."""

from __future__ import annotations

import random
import threading
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from helpers import assert_error, new_project, new_session, new_task, ok

PRIORITIES = ("high", "medium", "low")


def walk(api: httpx.Client, path: str, params: dict, limit: int, on_page=None) -> list[dict]:
    """Every item of a list, fetched `limit` at a time by following X-Next-Cursor."""
    items: list[dict] = []
    cursor = None
    for _ in range(100_000):
        query = dict(params, limit=str(limit))
        if cursor is not None:
            query["cursor"] = cursor
        resp = api.get(path, params=query)
        page = ok(resp)
        assert isinstance(page, list) and len(page) <= limit
        items += page
        cursor = resp.headers.get("x-next-cursor")
        if on_page is not None:
            on_page()
        if cursor is None:
            assert "link" not in resp.headers
            return items
        assert len(page) == limit, "a page before the last one is full"
    raise AssertionError("the walk never ended")


@pytest.fixture(scope="module")
def board(api):
    """Two projects; one with 37 tasks in a hierarchy, dependencies (so some are blocked),
    mixed statuses and priorities, and sessions."""
    rng = random.Random(7)
    project = new_project(api, name="Paged")
    other = new_project(api, name="Other")
    new_task(api, other["id"], title="elsewhere")
    roots = [new_task(api, project["id"], title=f"root {i}",
                      priority=PRIORITIES[i % 3]) for i in range(7)]
    tasks = list(roots)
    for i in range(30):
        parent = rng.choice(roots)
        deps = [rng.choice(tasks)["id"]] if i % 4 == 0 else []
        tasks.append(new_task(api, project["id"], title=f"child {i}", parentId=parent["id"],
                              priority=rng.choice(PRIORITIES), dependencies=deps))
    for t in tasks[::5]:
        ok(api.patch(f"/api/tasks/{t['id']}", json={"status": "completed"}))
    for t in tasks[1::7]:
        ok(api.patch(f"/api/tasks/{t['id']}", json={"status": "in_progress"}))
    sessions = [new_session(api, project["id"], [tasks[i]["id"], tasks[i + 1]["id"]],
                            name=f"s{i}") for i in range(9)]
    for s in sessions[::3]:
        ok(api.patch(f"/api/sessions/{s['id']}", json={"status": "completed"}))
    return {"project": project, "roots": roots, "tasks": tasks, "sessions": sessions}


def lists(board) -> list[tuple[str, dict]]:
    pid = board["project"]["id"]
    root = board["roots"][0]["id"]
    some_task = board["tasks"][3]["id"]
    return [
        ("/api/projects", {}),
        ("/api/tasks", {}),
        ("/api/tasks", {"projectId": pid}),
        ("/api/tasks", {"projectId": pid, "status": "pending"}),
        ("/api/tasks", {"status": "completed"}),
        ("/api/tasks", {"parentId": "null"}),
        ("/api/tasks", {"parentId": root, "projectId": pid}),
        ("/api/tasks", {"projectId": pid, "parentId": root, "status": "pending"}),
        ("/api/tasks", {"ready": "true"}),
        ("/api/tasks", {"ready": "true", "projectId": pid}),
        ("/api/tasks", {"ready": "true", "projectId": pid, "parentId": root}),
        ("/api/tasks", {"blocked": "true"}),
        ("/api/tasks", {"blocked": "true", "projectId": pid}),
        (f"/api/tasks/{root}/children", {}),
        ("/api/sessions", {}),
        ("/api/sessions", {"projectId": pid, "active": "true"}),
        ("/api/sessions", {"taskId": some_task}),
        ("/api/sessions", {"projectId": pid, "taskId": some_task}),
        ("/api/sessions", {"status": "completed"}),
    ]


@pytest.mark.parametrize("limit", [1, 2, 5, 1000])
def test_the_pages_of_every_list_add_up_to_the_whole_list(api, board, limit):
    assert any(ok(api.get("/api/tasks", params={"blocked": "true"}))), "the board has blocked"
    for path, params in lists(board):
        whole = ok(api.get(path, params=params))
        assert whole, f"{path} {params} is empty: the board does not exercise it"
        assert walk(api, path, params, limit) == whole, (path, params, limit)


def test_without_limit_the_answer_is_unchanged(api, board):
    for path, params in lists(board):
        plain = api.get(path, params=params)
        assert "x-next-cursor" not in plain.headers and "link" not in plain.headers
        assert plain.content == api.get(path, params=dict(params, limit="")).content
        paged = walk(api, path, params, 1000)
        assert plain.json() == paged
    # The body of a page is a plain array, never an envelope.
    page = api.get("/api/tasks", params={"limit": "3"})
    assert page.content.startswith(b"[") and len(page.json()) == 3


def test_link_header_names_the_next_page(api, board):
    pid = board["project"]["id"]
    first = api.get("/api/tasks", params={"projectId": pid, "status": "pending", "limit": "4"})
    cursor = first.headers["x-next-cursor"]
    link = first.headers["link"]
    assert link.startswith("<") and link.endswith('>; rel="next"')
    target = urlsplit(link[1:link.index(">")])
    assert target.path == "/api/tasks"
    assert parse_qs(target.query) == {"projectId": [pid], "status": ["pending"], "limit": ["4"],
                                      "cursor": [cursor]}
    by_link = api.get(link[1:link.index(">")])
    by_cursor = api.get("/api/tasks", params={"projectId": pid, "status": "pending",
                                              "limit": "4", "cursor": cursor})
    assert by_link.content == by_cursor.content
    assert {t["id"] for t in first.json()}.isdisjoint(t["id"] for t in by_link.json())
    # HEAD announces the same next page.
    head = api.head("/api/tasks", params={"projectId": pid, "status": "pending", "limit": "4"})
    assert head.headers["x-next-cursor"] == cursor and head.content == b""


def test_a_browser_may_read_the_paging_headers(api, board):
    resp = api.get("/api/tasks", params={"limit": "1"},
                   headers={"Origin": "http://localhost:5173"})
    assert resp.headers["access-control-allow-origin"] == "http://localhost:5173"
    exposed = {h.strip().lower() for h in resp.headers["access-control-expose-headers"].split(",")}
    assert {"x-next-cursor", "link"} <= exposed


BAD_LIMITS = ["0", "1001", "-1", "abc", "1.5", "1e3", " 5", "٣"]


@pytest.mark.parametrize("limit", BAD_LIMITS)
def test_a_bad_limit_is_refused(api, board, limit):
    for path, params in [("/api/projects", {}), ("/api/tasks", {"ready": "true"}),
                         ("/api/sessions", {}), (f"/api/tasks/{board['roots'][0]['id']}/children",
                                                 {})]:
        body = assert_error(api.get(path, params=dict(params, limit=limit)), 400,
                            "VALIDATION_ERROR")
        assert "limit" in body["message"]


def test_a_bad_cursor_is_refused(api, board):
    creation = api.get("/api/tasks", params={"limit": "1"}).headers["x-next-cursor"]
    priority = api.get("/api/tasks", params={"ready": "true", "limit": "1"}) \
        .headers["x-next-cursor"]
    bad = ["garbage!", "e30", "W10", creation[:-3], "x" * 2000,
           "WyJjIiwgIm5vdCBhIG51bWJlciIsICJpZCJd"]  # ["c", "not a number", "id"]
    for cursor in bad:
        assert_error(api.get("/api/tasks", params={"limit": "2", "cursor": cursor}), 400,
                     "VALIDATION_ERROR")
    # A cursor is a position in one order: the ready list's is refused by creation order and
    # the other way round.
    assert_error(api.get("/api/tasks", params={"limit": "2", "cursor": priority}), 400,
                 "VALIDATION_ERROR")
    assert_error(api.get("/api/tasks", params={"ready": "true", "limit": "2",
                                               "cursor": creation}), 400, "VALIDATION_ERROR")
    body = assert_error(api.get("/api/tasks", params={"cursor": creation}), 400,
                        "VALIDATION_ERROR")
    assert body["message"] == "limit is required with cursor"
    # A good cursor works on another list of the same order (it is only a position).
    ok(api.get("/api/sessions", params={"limit": "2", "cursor": creation}))


def test_unknown_task_children_page_is_404(api):
    assert_error(api.get("/api/tasks/task_missing/children", params={"limit": "5"}), 404,
                 "TASK_NOT_FOUND")


def concurrent_walk(api, srv, path: str, params: dict, make, limit: int, own, rounds: int = 3):
    """Walk `path` while another client creates items (`make(client, n)` -> item) and deletes
    some of them and some of the items of this test (`own(item)`) there at the start. Between
    two pages the other client always changes something. Checks that every item present
    throughout is walked exactly once, in its order."""
    for _ in range(rounds):
        start = ok(api.get(path, params=params))
        doomed = [item["id"] for item in start[1::4] if own(item)]
        stop = threading.Event()
        progress = threading.Condition()
        changes = [0]
        errors: list[BaseException] = []

        def churn():
            try:
                with httpx.Client(base_url=srv.url, timeout=30) as other:
                    made: list[str] = []
                    n = 0
                    while not stop.is_set() and n < 2000:
                        made.append(make(other, n)["id"])
                        n += 1
                        if n % 2 == 0:
                            victim = made.pop(random.randrange(len(made)))
                            assert other.delete(_delete_path(path, victim)).status_code == 200
                        if n % 3 == 0 and doomed:
                            assert other.delete(_delete_path(path, doomed.pop())) \
                                .status_code == 200
                        with progress:
                            changes[0] += 1
                            progress.notify_all()
            except BaseException as exc:  # reported by the walking thread
                errors.append(exc)
                with progress:
                    progress.notify_all()

        def wait_for_changes():
            with progress:
                seen = changes[0]
                progress.wait_for(lambda: changes[0] >= seen + 2 or errors, timeout=30)

        worker = threading.Thread(target=churn)
        worker.start()
        try:
            wait_for_changes()
            walked = [item["id"] for item in walk(api, path, params, limit, wait_for_changes)]
        finally:
            stop.set()
            worker.join(60)
        assert not errors, errors
        assert changes[0] >= 10, "the list hardly changed during the walk"
        gone = set(doomed_all(start, own)) - set(doomed)
        present = [item["id"] for item in start if item["id"] not in gone]
        assert len(walked) == len(set(walked)), "an item was given twice"
        missing = set(present) - set(walked)
        assert not missing, f"{len(missing)} items there all along were skipped"
        kept = set(present)
        assert [i for i in walked if i in kept] == present, "items there all along moved"


def doomed_all(start: list[dict], own) -> list[str]:
    return [item["id"] for item in start[1::4] if own(item)]


def _delete_path(path: str, eid: str) -> str:
    kind = path.split("/")[2]
    return f"/api/{'tasks' if kind == 'tasks' else kind}/{eid}"


def test_walk_projects_under_concurrent_inserts_and_deletes(api, srv):
    for i in range(50):
        new_project(api, name=f"churned {i}")

    def make(client, n):
        return ok(client.post("/api/projects", json={"name": f"churned new {n}"}), 201)

    def own(project):  # projects of other tests hold tasks: only this test's are deleted
        return project["name"].startswith("churned")

    concurrent_walk(api, srv, "/api/projects", {}, make, 4, own)


def test_walk_tasks_under_concurrent_inserts_and_deletes(api, srv):
    project = new_project(api, name="Churn")
    pid = project["id"]
    for i in range(120):
        new_task(api, pid, title=f"t{i}")

    def make(client, n):
        return ok(client.post("/api/tasks", json={"projectId": pid, "title": f"new {n}"}), 201)

    def own(task):
        return task["projectId"] == pid

    concurrent_walk(api, srv, "/api/tasks", {"projectId": pid}, make, 7, own)
    concurrent_walk(api, srv, "/api/tasks", {}, make, 11, own)


def test_walk_ready_and_blocked_work_under_concurrent_inserts_and_deletes(api, srv):
    project = new_project(api, name="Ready churn")
    pid = project["id"]
    gate = new_task(api, pid, title="gate")
    for i in range(90):
        new_task(api, pid, title=f"r{i}", priority=PRIORITIES[i % 3])
        new_task(api, pid, title=f"b{i}", priority=PRIORITIES[i % 3],
                 dependencies=[gate["id"]])

    def make_ready(client, n):
        return ok(client.post("/api/tasks", json={"projectId": pid, "title": f"nr {n}",
                                                  "priority": PRIORITIES[n % 3]}), 201)

    def make_blocked(client, n):
        return ok(client.post("/api/tasks", json={"projectId": pid, "title": f"nb {n}",
                                                  "priority": PRIORITIES[n % 3],
                                                  "dependencies": [gate["id"]]}), 201)

    def own(task):
        return task["id"] != gate["id"]

    concurrent_walk(api, srv, "/api/tasks", {"projectId": pid, "ready": "true"}, make_ready,
                    6, own)
    concurrent_walk(api, srv, "/api/tasks", {"projectId": pid, "blocked": "true"},
                    make_blocked, 9, own)


def test_walk_sessions_and_children_under_concurrent_inserts_and_deletes(api, srv):
    project = new_project(api, name="Session churn")
    pid = project["id"]
    parent = new_task(api, pid, title="parent")
    for i in range(60):
        new_task(api, pid, title=f"c{i}", parentId=parent["id"])
        new_session(api, pid, [parent["id"]], name=f"s{i}")

    def make_session(client, n):
        return ok(client.post("/api/sessions", json={"projectId": pid,
                                                     "taskIds": [parent["id"]]}), 201)

    def make_child(client, n):
        return ok(client.post("/api/tasks", json={"projectId": pid, "title": f"nc {n}",
                                                  "parentId": parent["id"]}), 201)

    def own(item):
        return True

    concurrent_walk(api, srv, "/api/sessions", {"taskId": parent["id"]}, make_session, 5, own)
    concurrent_walk(api, srv, f"/api/tasks/{parent['id']}/children", {}, make_child, 8, own)
