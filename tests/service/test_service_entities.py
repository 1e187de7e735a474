"""The service's rules for projects, tasks and sessions, in-process on the in-memory store:
creation and changes, the two-sided task/session links (SPEC §8), the hierarchy and its cycles,
deletes with and without cascade, the events of each change, and refusals that leave nothing
behind (not in memory, not in the store, no event)."""

from __future__ import annotations

from service_harness import clock, service  # noqa: F401  (fixtures)


# ------------------------------------------------------------------ projects
def test_a_project_is_created_stored_changed_and_deleted(service):
    project = service.create_project({"name": "  Shop  ", "workingDir": "/w"})
    assert (project["name"], project["workingDir"], project["description"]) == ("Shop", "/w", "")
    assert project["id"].startswith("proj_")
    assert service.store.entity("project", project["id"]) == project
    assert service.take_events() == [("project:created", project)]

    changed = service.update_project(project["id"], {"description": "Online"})
    assert changed["description"] == "Online" and changed["updatedAt"] > project["updatedAt"]
    assert service.get_project(project["id"]) == changed
    assert service.event_types() == ["project:updated"]

    assert service.delete_project(project["id"]) == {"success": True, "id": project["id"]}
    assert service.list_projects() == [] and service.store.ids("project") == []
    assert service.take_events() == [("project:deleted", {"id": project["id"]})]


def test_project_refusals_change_nothing(service):
    project = service.project()
    service.task(project["id"])
    service.take_events()
    error = service.refused("create_project", {"name": "   "})
    assert (error.status, error.code, error.message) == (400, "VALIDATION_ERROR",
                                                         "name is required")
    assert service.refused("update_project", project["id"], {"name": ""}).message == \
        "name cannot be empty"
    error = service.refused("delete_project", project["id"])
    assert (error.code, error.message) == ("PROJECT_HAS_DEPENDENCIES",
                                           "Cannot delete project with 1 existing task(s)")
    assert service.refused("get_project", "proj_missing").code == "PROJECT_NOT_FOUND"


# ------------------------------------------------------------------ tasks
def test_a_task_starts_pending_with_its_created_entry(service):
    project = service.project()
    service.take_events()
    task = service.task(project["id"], title=" Build ", priority="high")
    assert (task["title"], task["status"], task["priority"]) == ("Build", "pending", "high")
    assert task["parentId"] is None and task["sessionIds"] == [] and task["dependencies"] == []
    assert [(e["type"], e["message"]) for e in task["timeline"]] == [("created", "Task created")]
    assert service.store.entity("task", task["id"]) == task
    assert service.take_events() == [("task:created", task)]


def test_status_changes_stamp_start_and_completion_once(service):
    task = service.task(service.project()["id"])
    started = service.update_task(task["id"], {"status": "in_progress"})
    assert started["startedAt"] is not None and started["completedAt"] is None
    done = service.update_task(task["id"], {"status": "completed"})
    again = service.update_task(task["id"], {"status": "in_progress"})
    assert done["completedAt"] is not None and again["startedAt"] == started["startedAt"]
    assert again["completedAt"] == done["completedAt"]


def test_task_refusals_change_nothing(service):
    project = service.project()
    task = service.task(project["id"])
    service.take_events()
    assert service.refused("create_task", {"projectId": "proj_x", "title": "T"}).code == \
        "PROJECT_NOT_FOUND"
    assert service.refused("create_task", {"projectId": project["id"]}).message == \
        "title is required"
    error = service.refused("create_task", {"projectId": project["id"], "title": "T",
                                            "parentId": "task_gone"})
    assert (error.code, error.message) == ("TASK_NOT_FOUND", "Parent task not found")
    assert service.refused("update_task", task["id"], {"status": "done"}).code == \
        "VALIDATION_ERROR"
    assert service.refused("update_task", task["id"], {"title": " "}).message == \
        "title cannot be empty"
    assert service.refused("update_task", "task_gone", {"title": "x"}).code == "TASK_NOT_FOUND"


# ------------------------------------------------------------------ hierarchy
def test_children_are_listed_under_their_parent(service):
    project = service.project()
    parent = service.task(project["id"], title="Epic")
    kids = [service.task(project["id"], title=f"Part {i}", parentId=parent["id"])
            for i in range(3)]
    assert [t["id"] for t in service.task_children(parent["id"])] == [k["id"] for k in kids]
    assert [t["id"] for t in service.list_tasks(parent_id=parent["id"])] == \
        [k["id"] for k in kids]


def test_a_task_is_never_moved_under_itself_or_its_descendants(service):
    project = service.project()
    top = service.task(project["id"])
    mid = service.task(project["id"], parentId=top["id"])
    low = service.task(project["id"], parentId=mid["id"])
    message = "A task cannot be its own parent or the child of one of its descendants"
    service.take_events()
    for parent in (top, mid, low):
        error = service.refused("update_task", top["id"], {"parentId": parent["id"]})
        assert (error.code, error.message) == ("VALIDATION_ERROR", message)
    # A move elsewhere in the tree, and back to the top, are fine.
    other = service.task(project["id"])
    assert service.update_task(low["id"], {"parentId": other["id"]})["parentId"] == other["id"]
    assert service.update_task(low["id"], {"parentId": None})["parentId"] is None


def test_a_parent_that_closes_a_cycle_through_dependencies_is_refused(service):
    project = service.project()
    a = service.task(project["id"])
    b = service.task(project["id"], dependencies=[a["id"]])
    service.take_events()
    # a under b: a inherits b's dependency on a.
    error = service.refused("update_task", a["id"], {"parentId": b["id"]})
    assert (error.code, error.message) == (
        "DEPENDENCY_CYCLE", f"Dependency cycle: {a['id']} -> {b['id']} -> {a['id']}")
    assert error.details == {"cycle": [a["id"], b["id"], a["id"]]}


# ------------------------------------------------------------------ sessions and links
def test_a_session_created_with_tasks_is_linked_on_both_sides(service):
    project = service.project()
    t1, t2 = service.task(project["id"]), service.task(project["id"])
    service.take_events()
    session = service.session(project["id"], [t1["id"], t2["id"], t1["id"]], name="Worker")
    assert session["taskIds"] == [t1["id"], t2["id"]] and session["status"] == "running"
    for tid in (t1["id"], t2["id"]):
        task = service.get_task(tid)
        assert task["sessionIds"] == [session["id"]]
        assert task["timeline"][-1]["type"] == "session_started"
        assert service.store.entity("task", tid) == task
    assert service.store.entity("session", session["id"]) == session
    assert service.event_types() == ["session:created", "task:session_added", "task:updated",
                                     "task:session_added", "task:updated"]


def test_links_added_and_removed_from_either_side_stay_two_sided(service):
    project = service.project()
    task = service.task(project["id"])
    session = service.session(project["id"])
    service.take_events()

    service.add_task_to_session(session["id"], task["id"])
    assert service.get_task(task["id"])["sessionIds"] == [session["id"]]
    assert service.get_session(session["id"])["taskIds"] == [task["id"]]
    assert service.event_types() == ["session:task_added", "task:session_added",
                                     "session:updated", "task:updated"]
    service.remove_task_from_session(session["id"], task["id"])
    assert service.get_task(task["id"])["sessionIds"] == []
    assert service.get_session(session["id"])["taskIds"] == []

    # The task's side: PATCH sessionIds links and unlinks just the same.
    service.update_task(task["id"], {"sessionIds": [session["id"]]})
    assert service.get_session(session["id"])["taskIds"] == [task["id"]]
    service.take_events()
    service.update_task(task["id"], {"sessionIds": []})
    assert service.get_session(session["id"])["taskIds"] == []
    assert service.event_types() == ["task:updated", "session:task_removed",
                                     "task:session_removed", "session:updated"]
    # The session's side: PATCH taskIds.
    service.update_session(session["id"], {"taskIds": [task["id"]]})
    assert service.get_task(task["id"])["sessionIds"] == [session["id"]]


def test_link_refusals_change_nothing(service):
    project = service.project()
    task = service.task(project["id"])
    session = service.session(project["id"])
    other = service.task(service.project()["id"])
    service.take_events()
    assert service.refused("add_task_to_session", "sess_gone", task["id"]).message == \
        "Session not found"
    assert service.refused("add_task_to_session", session["id"], "task_gone").message == \
        "Task not found"
    assert service.refused("create_session", {"projectId": project["id"],
                                              "taskIds": ["task_gone"]}).code == "TASK_NOT_FOUND"
    assert service.refused("update_task", task["id"], {"sessionIds": ["sess_gone"]}).status == 404
    assert service.refused("create_session", {"projectId": project["id"]}).message == \
        "taskIds is required"
    assert service.get_task(other["id"])["sessionIds"] == []


# ------------------------------------------------------------------ deletes
def test_a_task_with_children_goes_only_with_cascade_deepest_first(service):
    project = service.project()
    top = service.task(project["id"])
    mid = service.task(project["id"], parentId=top["id"])
    low = service.task(project["id"], parentId=mid["id"])
    session = service.session(project["id"], [low["id"]])
    service.take_events()
    error = service.refused("delete_task", top["id"])
    assert (error.code, error.message) == ("TASK_HAS_CHILDREN",
                                           "Cannot delete task with 1 child task(s)")
    result = service.delete_task(top["id"], cascade=True)
    assert result["deleted"] == [low["id"], mid["id"], top["id"]]
    assert service.list_tasks(project_id=project["id"]) == []
    assert service.store.ids("task") == []
    assert service.get_session(session["id"])["taskIds"] == []
    assert service.store.entity("session", session["id"])["taskIds"] == []


def test_a_deleted_task_leaves_the_dependencies_naming_it(service):
    project = service.project()
    up = service.task(project["id"])
    down = service.task(project["id"], dependencies=[up["id"]])
    service.delete_task(up["id"])
    assert service.get_task(down["id"])["dependencies"] == []
    assert service.store.entity("task", down["id"])["dependencies"] == []


def test_a_session_deleted_is_unlinked_from_its_tasks(service):
    project = service.project()
    task = service.task(project["id"])
    session = service.session(project["id"], [task["id"]])
    service.take_events()
    service.delete_session(session["id"])
    assert service.get_task(task["id"])["sessionIds"] == []
    assert service.store.ids("session") == []
    types = service.event_types()
    assert types[0] == "session:deleted" and "task:session_removed" in types


def test_a_project_deleted_with_cascade_takes_everything_in_one_change(service):
    project = service.project()
    keep = service.project()
    kept = service.task(keep["id"])
    parent = service.task(project["id"])
    child = service.task(project["id"], parentId=parent["id"])
    session = service.session(project["id"], [child["id"]])
    batches = service.store.batches
    service.take_events()
    error = service.refused("delete_project", project["id"])
    assert error.message == "Cannot delete project with 2 existing task(s)"
    result = service.delete_project(project["id"], cascade=True)
    assert result["deleted"] == {"sessions": [session["id"]],
                                 "tasks": [child["id"], parent["id"]]}
    assert service.store.batches == batches + 1
    assert service.store.ids("project") == [keep["id"]]
    assert service.store.ids("task") == [kept["id"]] and service.store.ids("session") == []
    assert service.event_types()[-1] == "project:deleted"


# ------------------------------------------------------------------ the store
def test_a_change_the_store_refuses_is_not_visible_and_publishes_nothing(service):
    project = service.project()
    service.take_events()
    before = service.snapshot()
    service.store.fail_next(whole=True)
    try:
        service.update_project(project["id"], {"name": "Renamed"})
    except Exception:
        pass
    else:
        raise AssertionError("a refused write was reported as done")
    assert service.snapshot() == before
    assert service.take_events() == []
    # The next change goes through.
    assert service.update_project(project["id"], {"name": "Again"})["name"] == "Again"
    assert service.store.entity("project", project["id"])["name"] == "Again"
