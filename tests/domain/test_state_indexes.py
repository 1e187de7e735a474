"""The in-memory indexes stay exact under any sequence of puts and deletes: an update moves an
entity only in the indexes whose field changed, and the result must equal indexes built from
scratch (a wrong bucket would make a list filter miss or invent a task)."""

from __future__ import annotations

import random

from maestro.state import State


def _buckets(index) -> dict:
    return {key: set(ids) for key, ids in index.buckets.items()}


def _assert_same_indexes(table, kind: str) -> None:
    fresh = State().table(kind)
    for entity in table.rows.values():
        fresh.put(entity)
    for name, index in table.indexes.items():
        assert _buckets(index) == _buckets(fresh.indexes[name]), name
    for fields, (_, index) in table.compound.items():
        assert _buckets(index) == _buckets(fresh.compound[fields][1]), sorted(fields)
    for name, index in table.multi.items():
        assert _buckets(index) == _buckets(fresh.multi[name]), name


def test_indexes_equal_a_rebuild_after_random_updates_and_deletes():
    rng = random.Random(7)
    state = State()
    tasks, sessions = state.table("task"), state.table("session")
    for _ in range(20_000):
        tid = f"task_{rng.randrange(60)}"
        if rng.random() < 0.1:
            tasks.delete(tid)
        else:
            tasks.put({"id": tid, "createdAt": rng.randrange(100),
                       "projectId": rng.choice(["p1", "p2", None]),
                       # foreign files may hold odd values: unhashable ones are never indexed
                       "status": rng.choice(["pending", "completed", None, ["odd"], 1, True]),
                       "parentId": rng.choice([None, "task_1", "task_2"]),
                       "sessionIds": rng.choice([[], ["s1"], ["s1", "s2"], None, "odd"])})
        sid = f"sess_{rng.randrange(20)}"
        if rng.random() < 0.05:
            sessions.delete(sid)
        else:
            sessions.put({"id": sid, "startedAt": 1, "projectId": rng.choice(["p1", "p2"]),
                          "status": rng.choice(["running", "completed"]),
                          "taskIds": rng.choice([rng.sample([f"task_{i}" for i in range(6)],
                                                            rng.randrange(5)),
                                                 ["task_1", "task_1"], None])})
    _assert_same_indexes(tasks, "task")
    _assert_same_indexes(sessions, "session")
    assert set(tasks.indexes) == {"projectId", "parentId", "status"}
    assert sessions.multi


def test_a_working_state_answers_every_filter_like_its_view():
    """The working state keeps only the indexes mutations look up (lists are read from the
    committed view): a filter on status or on several fields there still gives what the view
    gives, from another field's bucket or a scan."""
    rng = random.Random(11)
    view = State()
    working = State(twin=view)
    assert not working.tasks.compound and view.tasks.compound
    assert "status" not in working.tasks.indexes and "status" in view.tasks.indexes
    for _ in range(400):
        n, m = rng.randrange(120), rng.randrange(30)  # creation times never change
        task = {"id": f"task_{n}", "createdAt": n % 40,
                "projectId": rng.choice(["p1", "p2"]), "status": rng.choice(["pending", "done"]),
                "parentId": rng.choice([None, "task_1", "task_2"])}
        session = {"id": f"sess_{m}", "startedAt": m % 7,
                   "projectId": rng.choice(["p1", "p2"]),
                   "status": rng.choice(["running", "completed"]),
                   "taskIds": [task["id"]]}
        for state in (working, view):
            state.tasks.put(task)
            state.sessions.put(session)
    for equals in ({"status": "pending"}, {"projectId": "p1", "status": "pending"},
                   {"projectId": "p2", "parentId": None},
                   {"parentId": "task_1", "status": "done"},
                   {"projectId": "p1", "parentId": "task_2", "status": "pending"}):
        want = view.tasks.query(equals)
        assert want and working.tasks.query(equals) == want
        for limit in (1, 5, 1000):
            assert working.tasks.page(equals, limit=limit) == view.tasks.page(equals, limit=limit)
    for equals in ({"status": "running"}, {"projectId": "p1", "status": "completed"}):
        want = view.sessions.query(equals)
        assert want and working.sessions.query(equals) == want
        assert working.sessions.page(equals, limit=3) == view.sessions.page(equals, limit=3)


def test_entities_missing_indexed_fields_move_between_combined_buckets():
    rng = random.Random(5)
    state = State()
    tasks = state.table("task")
    for n in range(3_000):
        task = {"id": f"task_{rng.randrange(40)}", "createdAt": n,
                "projectId": rng.choice(["p1", "p2"]), "status": rng.choice(["pending", "done"]),
                "parentId": rng.choice([None, "task_1"])}
        for field in ("projectId", "status", "parentId"):
            if rng.random() < 0.2:
                del task[field]  # a foreign file's entity may lack any of them
        tasks.put(task)
    _assert_same_indexes(tasks, "task")
