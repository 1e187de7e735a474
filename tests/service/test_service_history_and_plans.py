"""What sessions and tasks record (session events, reports, task timelines, the merged history)
and whole plans made in one change, through the service on the in-memory store."""

from __future__ import annotations

import pytest
from service_harness import clock, service  # noqa: F401  (fixtures)


def test_session_events_and_reports_are_appended_and_announced(service):
    project = service.project()
    task = service.task(project["id"])
    session = service.session(project["id"], [task["id"]])
    service.take_events()
    after = service.add_session_event(session["id"], {"type": "log", "data": {"line": 1}})
    assert [(e["type"], e["data"]) for e in after["events"]] == [("log", {"line": 1})]
    assert after["lastActivity"] > session["lastActivity"]
    assert service.store.entity("session", session["id"])["events"] == after["events"]
    assert "session:updated" in service.event_types()
    assert service.refused("add_session_event", session["id"], {}).message == \
        "type is required"
    assert service.refused("add_session_timeline", session["id"], {"type": "progress"}).message \
        == "message is required"


def test_a_task_history_merges_its_timeline_with_its_sessions_reports(service):
    project = service.project()
    task = service.task(project["id"])
    session = service.session(project["id"], [task["id"]])
    service.add_session_timeline(session["id"], {"message": "half way", "taskId": task["id"]})
    service.add_session_timeline(session["id"], {"message": "other work"})
    service.add_timeline_event(task["id"], {"message": "note", "type": "milestone"})
    history = service.task_history(task["id"])
    # Oldest first (entries of one millisecond: the task's before the sessions').
    assert [e["timestamp"] for e in history] == sorted(e["timestamp"] for e in history)
    assert sorted((e["type"], e["source"]) for e in history) == [
        ("created", "task"), ("milestone", "task"), ("progress", "session"),
        ("session_started", "task")]
    report = next(e for e in history if e["source"] == "session")
    assert (report["message"], report["sessionId"]) == ("half way", session["id"])
    service.take_events()
    assert service.refused("add_timeline_event", task["id"], {"message": ""}).message == \
        "message is required"
    assert service.refused("add_timeline_event", task["id"], {"message": "x",
                                                              "type": "chat"}).status == 400


def test_a_session_that_ends_is_stamped_and_stored(service):
    session = service.session(service.project()["id"])
    ended = service.update_session(session["id"], {"status": "completed"})
    assert ended["status"] == "completed" and ended["completedAt"] is not None
    assert service.store.entity("session", session["id"])["status"] == "completed"
    service.take_events()
    assert service.refused("update_session", session["id"], {"status": "sleeping"}).code == \
        "VALIDATION_ERROR"


# ------------------------------------------------------------------ plans
def test_a_plan_is_made_in_one_change_with_parents_and_dependencies(service):
    project = service.project()
    existing = service.task(project["id"], title="Ship")
    batches = service.store.batches
    service.take_events()
    made = service.create_plan(project["id"], {
        "tasks": [{"ref": "epic", "title": "Login", "priority": "high"},
                  {"ref": "schema", "title": "Schema", "parent": "epic"},
                  {"ref": "api", "title": "API", "parent": "epic", "dependsOn": ["schema"]}],
        "dependencies": [{"task": existing["id"], "dependsOn": "api"}]})
    refs = made["refs"]
    assert service.store.batches == batches + 1
    assert service.get_task(refs["api"])["dependencies"] == [refs["schema"]]
    assert service.get_task(refs["schema"])["parentId"] == refs["epic"]
    assert service.get_task(existing["id"])["dependencies"] == [refs["api"]]
    assert [t["id"] for t in service.list_ready(project["id"])] == [refs["epic"], refs["schema"]]
    assert service.event_types().count("task:created") == 3


@pytest.mark.parametrize("tasks,code,message", [
    ([{"ref": "a", "title": "A", "dependsOn": ["b"]},
      {"ref": "b", "title": "B", "dependsOn": ["a"]}], "DEPENDENCY_CYCLE",
     "Dependency cycle: a -> b -> a"),
    ([{"ref": "a", "title": "A", "parent": "b"}, {"ref": "b", "title": "B", "dependsOn": ["a"]}],
     "DEPENDENCY_CYCLE", None),
    ([{"ref": "a", "title": "A", "dependsOn": ["nope"]}], "TASK_NOT_FOUND", None),
    ([{"ref": "a", "title": "A"}, {"ref": "a", "title": "B"}], "VALIDATION_ERROR",
     None),
])
def test_a_plan_refused_leaves_nothing(service, tasks, code, message):
    project = service.project()
    service.take_events()
    error = service.refused("create_plan", project["id"], {"tasks": tasks})
    assert error.code == code
    if message is not None:
        assert error.message == message
    assert service.list_tasks(project_id=project["id"]) == []
