"""What a task's history shows and what its dependents learn when it completes (SPEC §15.4), as
pure functions of tasks and sessions."""

from __future__ import annotations

from maestro.domain.handoff import dependency_briefs, handoff_message, last_completion_report
from maestro.domain.history import merged_history


def completed(message, timestamp, task_id=None) -> dict:
    entry = {"type": "task_completed", "message": message, "timestamp": timestamp}
    if task_id is not None:
        entry["taskId"] = task_id
    return entry


# ------------------------------------------------------------------ handoff
def test_the_latest_report_of_any_session_wins():
    sessions = {"s1": {"id": "s1", "taskIds": ["t"], "timeline": [completed("first", 3, "t")]},
                "s2": {"id": "s2", "taskIds": ["t"], "timeline": [completed("second", 7, "t")]}}
    up = {"id": "t", "sessionIds": ["s1", "s2"]}
    assert last_completion_report(up, sessions.get) == "second"
    assert last_completion_report(dict(up, sessionIds=["s2", "s1"]), sessions.get) == "second"


def test_a_report_without_a_task_id_counts_only_for_a_task_of_that_session():
    sessions = {"s": {"id": "s", "taskIds": ["t"], "timeline": [completed("done", 1)]},
                "x": {"id": "x", "taskIds": ["other"], "timeline": [completed("elsewhere", 9)]}}
    assert last_completion_report({"id": "t", "sessionIds": ["s", "x"]}, sessions.get) == "done"
    assert last_completion_report({"id": "u", "sessionIds": ["s"]}, sessions.get) is None


def test_each_session_gives_its_last_report_about_the_task():
    sessions = {"s": {"id": "s", "taskIds": ["t"], "timeline": [
        completed("later but earlier in the timeline", 50, "t"),
        completed("last written", 10, "t"),
        {"type": "progress", "message": "not a report", "timestamp": 99, "taskId": "t"}]}}
    assert last_completion_report({"id": "t", "sessionIds": ["s"]}, sessions.get) == \
        "last written"


def test_unreadable_sessions_and_entries_are_passed_over():
    sessions = {"bad": {"id": "bad", "taskIds": ["t"], "timeline": "none"},
                "odd": {"id": "odd", "taskIds": "t", "timeline": [
                    "text", completed("", 5, "t"), completed(7, 6, "t"),
                    completed("undated", None, "t")]}}
    task = {"id": "t", "sessionIds": ["gone", 12, "bad", "odd"]}
    assert last_completion_report(task, sessions.get) == "undated"
    assert last_completion_report({"id": "t", "sessionIds": "odd"}, sessions.get) is None


def test_the_handoff_message_with_and_without_a_report():
    up = {"id": "t1", "title": "Schema"}
    assert handoff_message(up, "tables made") == 'Dependency t1 "Schema" completed. Report: ' \
                                                 'tables made'
    assert handoff_message(up, None) == 'Dependency t1 "Schema" completed (no completion report).'
    assert handoff_message({"id": "t2", "title": None}, "") == \
        'Dependency t2 "" completed (no completion report).'


def test_briefs_follow_the_dependency_order_and_name_missing_ones():
    tasks = {"a": {"id": "a", "title": "A", "status": "pending", "sessionIds": []},
             "b": {"id": "b", "title": 3, "status": "completed", "sessionIds": []}}
    down = {"id": "d", "dependencies": ["b", "zz", "a"]}
    assert dependency_briefs(down, tasks.get, {}.get) == [
        {"id": "b", "title": "", "status": "completed", "lastReport": None},
        {"id": "zz", "title": "", "status": "missing", "lastReport": None},
        {"id": "a", "title": "A", "status": "pending", "lastReport": None}]
    assert dependency_briefs({"id": "e"}, tasks.get, {}.get) == []


# ------------------------------------------------------------------ history
def test_history_merges_the_task_timeline_with_reports_about_it_oldest_first():
    task = {"id": "t", "timeline": [
        {"id": "e1", "type": "created", "timestamp": 10, "message": "Task created"},
        {"id": "e3", "type": "update", "timestamp": 30, "sessionId": "s1"}]}
    s1 = {"id": "s1", "timeline": [
        {"id": "r1", "type": "progress", "timestamp": 20, "message": "half", "taskId": "t"},
        {"id": "r2", "type": "progress", "timestamp": 25, "message": "other", "taskId": "u"}]}
    s2 = {"id": "s2", "timeline": [
        {"id": "r3", "type": "task_completed", "timestamp": 40, "message": "done",
         "taskId": "t"}]}
    assert merged_history(task, [s1, s2]) == [
        {"id": "e1", "timestamp": 10, "type": "created", "message": "Task created",
         "source": "task"},
        {"id": "r1", "timestamp": 20, "type": "progress", "message": "half", "sessionId": "s1",
         "source": "session"},
        {"id": "e3", "timestamp": 30, "type": "update", "sessionId": "s1", "source": "task"},
        {"id": "r3", "timestamp": 40, "type": "task_completed", "message": "done",
         "sessionId": "s2", "source": "session"}]


def test_history_ties_keep_the_task_first_then_sessions_in_order():
    task = {"id": "t", "timeline": [{"id": "a", "type": "update", "timestamp": 5}]}
    sessions = [{"id": f"s{i}", "timeline": [{"id": f"r{i}", "type": "progress", "timestamp": 5,
                                              "taskId": "t"}]} for i in range(3)]
    assert [e["id"] for e in merged_history(task, sessions)] == ["a", "r0", "r1", "r2"]


def test_history_passes_over_what_is_not_an_entry_and_puts_undated_ones_first():
    task = {"id": "t", "timeline": ["text", {"id": "late", "type": "update", "timestamp": 9},
                                    {"id": "undated", "type": "update", "timestamp": True}]}
    sessions = [{"id": "s", "timeline": [None, {"id": "r", "type": "x", "taskId": "t"}]},
                {"id": "empty"}]
    assert [e["id"] for e in merged_history(task, sessions)] == ["undated", "r", "late"]
    assert merged_history({"id": "t"}, []) == []
