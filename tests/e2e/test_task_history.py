"""`GET /api/tasks/:id/history`: a task's own timeline merged with what its sessions reported
about it (session timeline entries naming the task), oldest first; the same list as `maestro
task show` prints (one rule for both)."""

from __future__ import annotations

import time

from test_cli_helpers import new_task

pytest_plugins = ["test_cli_helpers"]


def post(rest, path, body):
    resp = rest.post(path, json=body)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()


def test_history_merges_task_and_session_timelines_in_time_order(cli, rest, project):
    pid = project["id"]
    task = new_task(rest, pid, title="Checkout")
    other = new_task(rest, pid, title="Elsewhere")
    first = post(rest, "/api/sessions", {"projectId": pid, "taskIds": [task["id"]],
                                         "name": "worker A"})
    time.sleep(0.005)
    post(rest, f"/api/sessions/{first['id']}/timeline",
         {"type": "progress", "message": "cart done", "taskId": task["id"]})
    post(rest, f"/api/sessions/{first['id']}/timeline",
         {"type": "progress", "message": "not about this task", "taskId": other["id"]})
    time.sleep(0.005)
    post(rest, f"/api/tasks/{task['id']}/timeline", {"message": "keys arrived",
                                                     "type": "milestone"})
    second = post(rest, "/api/sessions", {"projectId": pid, "taskIds": [task["id"]]})
    time.sleep(0.005)
    post(rest, f"/api/sessions/{second['id']}/timeline",
         {"type": "task_completed", "message": "all paid", "taskId": task["id"]})

    resp = rest.get(f"/api/tasks/{task['id']}/history")
    assert resp.status_code == 200
    history = resp.json()
    assert [(e["type"], e["source"], e.get("message"), e.get("sessionId")) for e in history] == [
        ("created", "task", "Task created", None),
        ("session_started", "task", None, first["id"]),
        ("progress", "session", "cart done", first["id"]),
        ("milestone", "task", "keys arrived", None),
        ("session_started", "task", None, second["id"]),
        ("task_completed", "session", "all paid", second["id"]),
    ]
    stamps = [e["timestamp"] for e in history]
    assert stamps == sorted(stamps)
    assert all(e["id"].startswith("evt_") for e in history)

    shown = cli.data("task", "show", task["id"])
    assert shown["timeline"] == history

    missing = rest.get("/api/tasks/task_nope/history")
    assert missing.status_code == 404 and missing.json()["code"] == "TASK_NOT_FOUND"
