"""What a change writes in the normalized PostgreSQL layout (real server, real database): an
append adds only its new row and leaves every earlier row untouched (same `xmin`), a link
added or removed writes only that link's row, a list replaced whole rewrites only that list,
many appends to one entity in one batch all arrive, deleting an entity deletes its rows, and
what is reloaded after a restart is what was served."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
from test_postgres_server import (  # noqa: F401 - the `database` fixture
    DOCUMENTS,
    client,
    database,
    pg_env,
    served,
    stored,
)

from helpers import ok


def rows(url: str, table: str, owner: str, eid: str) -> dict[int, tuple[str, str]]:
    """position -> (value, xmin) of the rows of one entity's list."""
    key, value = ("position", "session_id" if table == "maestro_task_sessions" else "task_id") \
        if table in ("maestro_task_sessions", "maestro_session_tasks") else ("idx", "entry")
    with psycopg.connect(url) as conn:
        return {k: (v, x) for k, v, x in conn.execute(
            f"SELECT {key}, {value}::text, xmin::text FROM {table} WHERE {owner} = %s",
            (eid,))}


def entity_xmin(url: str, table: str, eid: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT xmin::text FROM {table} WHERE id = %s", (eid,)).fetchone()
        return row[0] if row else None


def only_added(before: dict, after: dict, added: int) -> None:
    """`after` holds every row of `before` unchanged (same xmin) and `added` more."""
    assert {k: after.get(k) for k in before} == before
    assert len(after) == len(before) + added


def test_appends_and_link_changes_write_only_their_rows(make_server, database):
    srv = make_server(env=pg_env(database))
    url = database
    with client(srv) as api:
        project = ok(api.post("/api/projects", json={"name": "grown"}), 201)["id"]
        tasks = [ok(api.post("/api/tasks", json={"projectId": project, "title": f"T{i}"}), 201)
                 ["id"] for i in range(6)]
        task = tasks[0]
        ok(api.patch(f"/api/tasks/{task}", json={"timeline": [
            {"type": "update", "message": f"seeded {i}"} for i in range(300)]}))
        sessions = [ok(api.post("/api/sessions", json={"projectId": project,
                                                       "taskIds": [task]}), 201)["id"]
                    for _ in range(25)]
        big = sessions[0]
        ok(api.patch(f"/api/sessions/{big}", json={"events": [
            {"type": "file_modified", "data": {"file": f"f{i}.py"}} for i in range(2000)]}))

        timeline = rows(url, "maestro_task_timeline", "task_id", task)
        links = rows(url, "maestro_task_sessions", "task_id", task)
        assert len(timeline) == 1 + 300 + 25 and len(links) == 25

        # A timeline append: one new row, nothing else of the task's lists rewritten.
        ok(api.post(f"/api/tasks/{task}/timeline", json={"message": "one more"}))
        after = rows(url, "maestro_task_timeline", "task_id", task)
        only_added(timeline, after, 1)
        assert rows(url, "maestro_task_sessions", "task_id", task) == links
        timeline = after

        # A session event: one new row among 2,000; its links untouched.
        events = rows(url, "maestro_session_events", "session_id", big)
        session_links = rows(url, "maestro_session_tasks", "session_id", big)
        ok(api.post(f"/api/sessions/{big}/events", json={"type": "file_modified"}))
        only_added(events, rows(url, "maestro_session_events", "session_id", big), 1)
        assert rows(url, "maestro_session_tasks", "session_id", big) == session_links
        events = rows(url, "maestro_session_events", "session_id", big)

        # A session timeline entry: its own table only.
        ok(api.post(f"/api/sessions/{big}/timeline", json={"message": "hello"}))
        assert len(rows(url, "maestro_session_timeline", "session_id", big)) == 1
        assert rows(url, "maestro_session_events", "session_id", big) == events

        # A session made with 5 links to grown tasks: one link row and one timeline row each.
        others = {t: (rows(url, "maestro_task_timeline", "task_id", t),
                      rows(url, "maestro_task_sessions", "task_id", t)) for t in tasks[1:]}
        ok(api.post("/api/sessions", json={"projectId": project, "taskIds": tasks[1:]}), 201)
        for t, (tl, ln) in others.items():
            only_added(tl, rows(url, "maestro_task_timeline", "task_id", t), 1)
            only_added(ln, rows(url, "maestro_task_sessions", "task_id", t), 1)

        # Unlinking one session from the middle: that link row goes, the others stay.
        gone = sessions[10]
        ok(api.delete(f"/api/sessions/{gone}/tasks/{task}"))
        now = rows(url, "maestro_task_sessions", "task_id", task)
        assert now == {k: v for k, v in links.items() if v[0] != gone}
        only_added(timeline, rows(url, "maestro_task_timeline", "task_id", task), 1)
        timeline = rows(url, "maestro_task_timeline", "task_id", task)

        # PATCH sessionIds, reordered: that list's rows only (plus the entries it appends).
        order = ok(api.get(f"/api/tasks/{task}"))["sessionIds"]
        wanted = list(reversed(order))[:-1]
        ok(api.patch(f"/api/tasks/{task}", json={"sessionIds": wanted}))
        assert [v for _, (v, _) in sorted(
            rows(url, "maestro_task_sessions", "task_id", task).items())] == wanted
        only_added(timeline, rows(url, "maestro_task_timeline", "task_id", task), 1)

        # Many appends to one task at once (several per batch): every one is stored.
        def append(i: int) -> None:
            ok(api.post(f"/api/tasks/{tasks[1]}/timeline", json={"message": f"burst {i}"}))

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(append, range(120)))
        before = served(api)
        assert stored(url) == before
        for kind, table in DOCUMENTS.items():  # key order too
            for eid, entity in stored(url)[kind].items():
                assert list(entity) == list(before[kind][eid])

        # Deleting entities deletes their rows.
        ok(api.delete(f"/api/sessions/{big}"))
        ok(api.delete(f"/api/tasks/{task}"))
        assert rows(url, "maestro_session_events", "session_id", big) == {}
        assert rows(url, "maestro_session_tasks", "session_id", big) == {}
        assert rows(url, "maestro_task_timeline", "task_id", task) == {}
        assert rows(url, "maestro_task_sessions", "task_id", task) == {}
        assert entity_xmin(url, "maestro_tasks", task) is None
        before = served(api)
    assert srv.stop() == 0
    srv.start()
    with client(srv) as api:
        assert served(api) == before


def task_with_inline_timeline(make_server, url: str):
    """A stopped server and a task of its database whose whole document was written back
    into its row (its timeline inline, the timeline's rows gone), as a tool might."""
    srv = make_server(env=pg_env(url))
    with client(srv) as api:
        project = ok(api.post("/api/projects", json={"name": "p"}), 201)["id"]
        task = ok(api.post("/api/tasks", json={"projectId": project, "title": "t"}), 201)["id"]
    assert srv.stop() == 0
    with psycopg.connect(url) as conn:
        text = conn.execute("SELECT data::text FROM maestro_task_documents WHERE id = %s",
                            (task,)).fetchone()[0]
        conn.execute("UPDATE maestro_tasks SET data = %s::json WHERE id = %s", (text, task))
        conn.execute("DELETE FROM maestro_task_timeline WHERE task_id = %s", (task,))
    return srv, task


def test_a_list_written_into_the_entity_row_by_another_program_is_kept(make_server, database):
    srv, task = task_with_inline_timeline(make_server, database)
    srv.start()
    with client(srv) as api:
        first = ok(api.get(f"/api/tasks/{task}"))["timeline"]
        assert [e["type"] for e in first] == ["created"]
        ok(api.post(f"/api/tasks/{task}/timeline", json={"message": "next"}))
    assert srv.stop() == 0
    assert len(rows(database, "maestro_task_timeline", "task_id", task)) == 2
    srv.start()
    with client(srv) as api:
        timeline = ok(api.get(f"/api/tasks/{task}"))["timeline"]
        assert timeline[0] == first[0] and timeline[1]["message"] == "next"
