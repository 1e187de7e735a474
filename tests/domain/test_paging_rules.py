"""Pages of the in-memory tables: the sorted id lists kept for paging follow every put and delete
(entities joining and leaving buckets, order keys that change, odd values from foreign files),
so walking a list page by page always gives exactly what `query` gives; cursors round-trip and
anything else is refused."""

from __future__ import annotations

import random

import pytest
from maestro.errors import ApiError
from maestro.paging import CREATION, PRIORITY, decode_cursor, encode_cursor, page_request
from maestro.state import State

TASK_FILTERS = [
    ({}, None), ({"projectId": "p1"}, None), ({"status": "pending"}, None),
    ({"projectId": "p2", "status": "completed"}, None), ({"parentId": None}, None),
    ({"parentId": "task_1", "projectId": "p1"}, None),
    ({"projectId": "p1", "parentId": None, "status": "pending"}, None),
]
SESSION_FILTERS = [
    ({}, None), ({"projectId": "p1"}, None), ({}, {"taskIds": "task_1"}),
    ({"projectId": "p2"}, {"taskIds": "task_2"}), ({"status": "running"}, None),
]


def walk(table, equals, contains, limit, predicate=None) -> list[str]:
    out, after = [], None
    while True:
        page, after = table.page(equals, contains, predicate, after=after, limit=limit)
        assert len(page) <= limit
        out += [e["id"] for e in page]
        if after is None:
            return out
        assert len(page) == limit


def test_pages_follow_random_puts_and_deletes():
    rng = random.Random(11)
    state = State()
    tasks, sessions = state.table("task"), state.table("session")
    for step in range(12_000):
        tid = f"task_{rng.randrange(80)}"
        if rng.random() < 0.12:
            tasks.delete(tid)
        else:
            tasks.put({"id": tid, "createdAt": rng.choice([rng.randrange(50), "odd", None]),
                       "projectId": rng.choice(["p1", "p2", None]),
                       "status": rng.choice(["pending", "completed", ["odd"]]),
                       "parentId": rng.choice([None, "task_1", "task_2"])})
        sid = f"sess_{rng.randrange(25)}"
        if rng.random() < 0.08:
            sessions.delete(sid)
        else:
            sessions.put({"id": sid, "startedAt": rng.randrange(30),
                          "projectId": rng.choice(["p1", "p2"]),
                          "status": rng.choice(["running", "completed"]),
                          "taskIds": rng.choice([["task_1"], ["task_1", "task_2"], [], None,
                                                 ["task_2", "task_2"]])})
        if step % 97 == 0:
            for table, filters in ((tasks, TASK_FILTERS), (sessions, SESSION_FILTERS)):
                for equals, contains in filters:
                    want = [e["id"] for e in table.query(equals, contains)]
                    assert walk(table, equals, contains, rng.choice([1, 3, 7, 500])) == want, \
                        (equals, contains)
    active = [s["id"] for s in sessions.query({}, None, lambda s: s["status"] == "running")]
    assert walk(sessions, {}, None, 4, lambda s: s["status"] == "running") == active


def test_a_page_starts_after_the_cursor_even_when_that_item_is_gone():
    table = State().table("task")
    for i in range(10):
        table.put({"id": f"task_{i}", "createdAt": i, "projectId": "p"})
    first, after = table.page({"projectId": "p"}, limit=3)
    assert [e["id"] for e in first] == ["task_0", "task_1", "task_2"]
    table.delete("task_2")
    table.put({"id": "task_a", "createdAt": 1, "projectId": "p"})  # before the cursor
    table.put({"id": "task_z", "createdAt": 99, "projectId": "p"})
    rest, end = table.page({"projectId": "p"}, after=after, limit=100)
    assert [e["id"] for e in rest] == [f"task_{i}" for i in range(3, 10)] + ["task_z"]
    assert end is None


def test_cursors_round_trip_and_anything_else_is_refused():
    for order, key in ((CREATION, (1706789123456, "task_1_x")), (CREATION, (0, "a")),
                       (CREATION, (1.5, "b")), (PRIORITY, (2, 17, "task_9"))):
        assert decode_cursor(order, encode_cursor(order, key)) == key
        request = page_request("10", encode_cursor(order, key), order)
        assert (request.limit, request.after) == (10, key)
    assert page_request(None, None, CREATION) is None
    for limit, cursor, order in [
        ("0", None, CREATION), ("1001", None, CREATION), ("x", None, CREATION),
        (None, encode_cursor(CREATION, (1, "a")), CREATION),
        ("5", encode_cursor(CREATION, (1, "a")), PRIORITY),
        ("5", encode_cursor(PRIORITY, (1, 1, "a")), CREATION),
        ("5", encode_cursor(PRIORITY, (1.5, 1, "a")), PRIORITY),
        ("5", encode_cursor(CREATION, (True, "a")), CREATION),
        ("5", encode_cursor(CREATION, (1, 2)), CREATION),
        ("5", "!!!", CREATION), ("5", "", CREATION), ("5", "bnVsbA", CREATION),
    ]:
        with pytest.raises(ApiError) as info:
            page_request(limit, cursor, order)
        assert (info.value.status, info.value.code) == (400, "VALIDATION_ERROR")
