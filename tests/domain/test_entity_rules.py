"""Embedded records and loaded entities (SPEC §4.3, §4.5, §5.3, §7.3.4) as plain functions:
timeline entries and session events as they are kept (once their declarations accepted them),
and the load-time migrations of older files."""

from __future__ import annotations

from maestro.entities import (
    bump,
    fill_session_event,
    fill_timeline_entry,
    migrate_session,
    migrate_task,
    session_event,
    timeline_entry,
    with_changes,
)
from maestro.ids import now_ms


def test_a_timeline_entry_keeps_only_known_keys_and_defaults_to_an_update():
    assert timeline_entry({"message": "hi", "extra": 1, "sessionId": "s", "id": None}) == \
        {"type": "update", "message": "hi", "sessionId": "s"}
    assert timeline_entry({"type": "blocker", "timestamp": 5.0, "id": "e"}) == \
        {"id": "e", "type": "blocker", "timestamp": 5}


def test_a_filled_entry_has_an_id_and_a_time():
    before = now_ms()
    entry = fill_timeline_entry({"type": "update", "message": "m"})
    assert entry["id"].startswith("evt_") and entry["timestamp"] >= before
    assert fill_timeline_entry({"type": "update", "id": "mine", "timestamp": 4}) == \
        {"id": "mine", "type": "update", "timestamp": 4}


def test_a_session_event_keeps_its_type_and_data_only():
    assert session_event({"type": "log", "data": {"a": [1]}, "other": 1}) == \
        {"type": "log", "data": {"a": [1]}}
    assert session_event({"type": "log", "id": "e", "timestamp": 7.0, "data": None}) == \
        {"type": "log", "id": "e", "timestamp": 7, "data": None}
    filled = fill_session_event({"type": "log"})
    assert set(filled) == {"id", "timestamp", "type"}


def test_a_task_file_missing_its_lists_gets_empty_ones_without_touching_the_original():
    old = {"id": "t", "title": "Old", "dependencies": ["d"]}
    new = migrate_task(old)
    assert new == {"id": "t", "title": "Old", "dependencies": ["d"], "sessionIds": [],
                   "skillIds": [], "agentIds": [], "timeline": []}
    assert old == {"id": "t", "title": "Old", "dependencies": ["d"]}
    assert migrate_task(new) is new


def test_a_session_file_with_one_task_id_gets_a_list_and_a_name():
    assert migrate_session({"id": "s", "taskId": "t"}) == \
        {"id": "s", "taskIds": ["t"], "env": {}, "events": [], "name": "Session s"}
    assert migrate_session({"id": "s", "taskId": None, "name": "n"})["taskIds"] == []
    kept = {"id": "s", "taskIds": ["a"], "env": {"K": "v"}, "events": [], "name": "x"}
    assert migrate_session(kept) == kept


def test_versions_are_new_objects_and_times_only_move_forward():
    base = {"id": "p", "name": "a"}
    changed = with_changes(base, name="b")
    assert changed == {"id": "p", "name": "b"} and base["name"] == "a"
    far = now_ms() + 10_000
    assert bump(far) == far + 1
    assert bump(None) >= now_ms() - 1000
    assert bump(True) != 2
