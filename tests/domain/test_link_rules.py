"""The pure rules of links and hierarchy, without I/O: a parent must exist and may not be the
task or below it, dependencies stay inside one project, a full new link list names only known
entities, and deletion orders put every child before its parent."""

from __future__ import annotations

import pytest

from maestro.domain.hierarchy import check_new_parent, children_first, is_descendant, \
    subtree_deepest_first
from maestro.domain.links import checked_dependencies, new_edges, one_sided_links, \
    require_new_targets, require_pair
from maestro.domain.timeline import entry
from maestro.errors import ApiError, session_not_found


def tree():
    """a ─┬─ b ── d
          └─ c"""
    tasks = {"a": {"id": "a", "projectId": "p", "parentId": None},
             "b": {"id": "b", "projectId": "p", "parentId": "a"},
             "c": {"id": "c", "projectId": "p", "parentId": "a"},
             "d": {"id": "d", "projectId": "p", "parentId": "b"},
             "x": {"id": "x", "projectId": "q", "parentId": None}}
    children: dict[str, list[str]] = {}
    for t in tasks.values():
        if t["parentId"]:
            children.setdefault(t["parentId"], []).append(t["id"])
    return tasks, (lambda tid: children.get(tid, []))


def refusal(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value


def test_a_new_parent_must_exist_and_not_lie_below_the_task():
    tasks, children = tree()
    check_new_parent("d", "c", tasks.get, children)  # a sibling's child may move anywhere else
    err = refusal(check_new_parent, "a", "nope", tasks.get, children)
    assert (err.status, err.code, err.message) == (404, "TASK_NOT_FOUND", "Parent task not found")
    for parent in ("a", "b", "d"):
        err = refusal(check_new_parent, "a", parent, tasks.get, children)
        assert (err.status, err.code) == (400, "VALIDATION_ERROR")
        assert err.message == ("A task cannot be its own parent or the child of one of its "
                               "descendants")
        assert err.details == {"taskId": "a", "parentId": parent}
    assert is_descendant("d", "a", children) and not is_descendant("a", "d", children)


def test_deletion_orders_put_children_before_parents():
    tasks, children = tree()
    order = subtree_deepest_first("a", children)
    assert sorted(order) == ["a", "b", "c", "d"]
    assert order.index("d") < order.index("b") < order.index("a")
    assert order.index("c") < order.index("a")
    order = children_first(["a", "b", "c", "d"], tasks.get)
    assert order[0] == "d" and order[-1] == "a"


def test_dependencies_stay_in_one_project_and_never_name_the_task():
    tasks, _ = tree()
    assert checked_dependencies("b", "p", ["c", "d", "c"], [], tasks.get) == ["c", "d"]
    assert checked_dependencies("b", "p", ["gone"], ["gone"], tasks.get) == ["gone"]
    err = refusal(checked_dependencies, "b", "p", ["b"], [], tasks.get)
    assert err.message == "A task cannot depend on itself"
    err = refusal(checked_dependencies, "b", "p", ["x"], [], tasks.get)
    assert err.message == "Dependency x belongs to another project"
    assert err.details == {"taskId": "x", "projectId": "q"}
    err = refusal(checked_dependencies, None, "p", ["nope"], [], tasks.get)
    assert (err.status, err.code) == (404, "TASK_NOT_FOUND")
    assert new_edges({"dependencies": ["a"], "parentId": None},
                     {"dependencies": ["a", "c"], "parentId": "b"}) == ["c", "b"]


def test_link_lists_name_known_entities_and_one_sided_links_are_counted():
    sessions = {"s1": {"id": "s1", "taskIds": ["t1", "t2"]}}
    tasks = {"t1": {"id": "t1", "sessionIds": ["s1"]}, "t2": {"id": "t2", "sessionIds": []}}
    require_new_targets(["gone"], ["gone", "s1"], sessions.get, session_not_found)
    err = refusal(require_new_targets, [], ["s9"], sessions.get, session_not_found)
    assert (err.status, err.code, err.details) == (404, "SESSION_NOT_FOUND",
                                                   {"sessionId": "s9"})
    err = refusal(require_pair, "s1", "t9", sessions.get, tasks.get)
    assert (err.code, err.message) == ("NOT_FOUND", "Task not found")
    err = refusal(require_pair, "s9", "t1", sessions.get, tasks.get)
    assert (err.code, err.message) == ("NOT_FOUND", "Session not found")
    assert one_sided_links(sessions.values(), tasks.get) == 1


def test_timeline_entries_leave_out_empty_members():
    e = entry(5, "session_started", sessionId="s1", message=None)
    assert list(e) == ["id", "type", "timestamp", "sessionId"]
    assert e["id"].startswith("evt") and e["timestamp"] == 5
    e = entry(6, "update", "hello", sessionId=None)
    assert {k: v for k, v in e.items() if k != "id"} == {"type": "update", "timestamp": 6,
                                                         "message": "hello"}
