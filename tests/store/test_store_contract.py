"""The store contract (src/maestro/store/base.py), held against every backend: the JSON-file
store on a temp directory, written in-process and through its helper process, the PostgreSQL
store on a schema of its own and the in-memory store, each driven through the one protocol the
committer uses (send_batch, resume). What one backend
writes, a fresh instance of it loads back exactly: same entities, same key order, unknown keys,
unicode and very large numbers verbatim; deletes (also of absent entities); one owner at a time.
Then what only the PostgreSQL store has to prove: a refused transaction leaves nothing, a lost
connection is survived, unreadable rows are listed, and no password ever shows."""

from __future__ import annotations

import asyncio
import secrets
import urllib.parse
from collections.abc import Callable, Iterator

import psycopg
import pytest
from servers import postgres_dsn, postgres_schema, with_search_path

from maestro import jsonio
from maestro.store.base import LoadResult, Op, Outcome, Store, StoreLockedError
from maestro.store.files import FileStore
from maestro.store.memory import MemoryData, MemoryStore
from maestro.store.postgres import DatabaseUnavailableError, PostgresStore

BACKENDS = ("files", "files-process", "postgres", "memory")


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """(dsn, schema): a fresh schema of the test database, dropped afterwards."""
    with postgres_schema() as made:
        yield made


@pytest.fixture(params=BACKENDS)
def new_store(request, tmp_path) -> Iterator[Callable[[], Store]]:
    """Factory of store instances on one and the same storage; all are closed at teardown."""
    if request.param in ("files", "files-process"):
        def make() -> Store:
            return FileStore(tmp_path / "data", worker=request.param == "files-process")
    elif request.param == "memory":
        data = MemoryData()

        def make() -> Store:
            return MemoryStore(data=data)
    else:
        dsn, _ = request.getfixturevalue("pg_schema")

        def make() -> Store:
            return PostgresStore(dsn)
    made: list[Store] = []

    def factory() -> Store:
        store = make()
        made.append(store)
        return store

    factory.backend = request.param
    factory.root = tmp_path / "data"
    yield factory
    for store in made:
        store.close()


def send(store: Store, *batches: list[list[Op]]) -> list[Outcome | BaseException]:
    """Send `batches` the way the committer does: all of them before the first resolves (as
    many as the store takes at once), then the outcome of each (or what it raised); after a
    refusal or a failure, `resume` (the committer does so once it has undone the refused
    changes)."""
    async def run():
        try:
            futures = [store.send_batch(records) for records in batches]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            if any(isinstance(o, BaseException) or o.accepted < len(records)
                   for o, records in zip(outcomes, batches)):
                await store.resume()
            return outcomes
        finally:
            store.detach_loop()
    return asyncio.run(run())


def commit(store: Store, records: list[list[Op]]) -> None:
    """Commit `records` whole (or raise what the store raised)."""
    (outcome,) = send(store, records)
    if isinstance(outcome, BaseException):
        raise outcome
    assert outcome == Outcome(len(records)), outcome


def put(kind: str, value: dict) -> Op:
    return Op(kind, value["id"], value, jsonio.dumps(value),
              value.get("projectId") if kind == "task" else None)


def delete(kind: str, eid: str, project_id: str | None = None) -> Op:
    return Op(kind, eid, None, None, project_id)


def as_text(result: LoadResult) -> dict[str, dict[str, str]]:
    """Each loaded entity as its compact JSON text (key order included), by kind and id."""
    out = {}
    for kind in ("projects", "tasks", "sessions"):
        entities = getattr(result, kind)
        ids = [e["id"] for e in entities]
        assert len(ids) == len(set(ids)), f"{kind} loaded twice: {ids}"
        out[kind] = {e["id"]: jsonio.dumps(e).decode() for e in entities}
    return out


def reopened(new_store) -> LoadResult:
    store = new_store()
    try:
        return store.open()
    finally:
        store.close()


# Deliberately odd: keys out of the usual order, unknown keys, out-of-enum values, unicode of
# every plane, escapes, an integer no double can hold exactly, nesting.
PROJECT = {"zeta": "first key", "id": "proj_1", "name": "Ünïcödé 日本語 🎉", "workingDir": "/tmp",
           "description": "quote \" backslash \\ tab \t newline \n nul \u0000 end",
           "createdAt": 1700000000000, "updatedAt": 1700000000001,
           "custom": {"nested": [1, 2.5, None, True, {"b": 1, "a": 2}], "big": 2**64 - 1}}
TASK_A = {"id": "task_a", "projectId": "proj_1", "parentId": None, "title": "A",
          "status": "todo", "sessionIds": [], "timeline": [], "x-unknown": {"kept": "yes"},
          "createdAt": 1700000000002, "updatedAt": 1700000000002}
TASK_B = {"id": "task_b", "projectId": "proj_1", "parentId": "task_a", "title": "B",
          "status": "pending", "sessionIds": [], "createdAt": 1700000000003,
          "updatedAt": 1700000000003}
SESSION = {"id": "sess_1", "projectId": "proj_1", "taskIds": ["task_a", "task_b"],
           "status": "spawning", "env": {"K": "ü"}, "events": [], "createdAt": 1700000000004}


def linked(task: dict, *session_ids: str) -> dict:
    return {**task, "sessionIds": list(session_ids)}


# ---------------------------------------------------------------------- the contract
def test_an_empty_store_opens_empty(new_store):
    result = new_store().open()
    assert (result.projects, result.tasks, result.sessions, result.quarantined) == \
        ([], [], [], [])


def test_what_is_written_is_loaded_back_exactly(new_store):
    store = new_store()
    store.open()
    commit(store, [[put("project", PROJECT)], [put("task", TASK_A)]])
    # One record touching three entities (a session created with links to two tasks).
    commit(store, [[put("session", SESSION), put("task", linked(TASK_A, "sess_1")),
                        put("task", linked(TASK_B, "sess_1"))]])
    store.close()

    loaded = reopened(new_store)
    assert as_text(loaded) == {
        "projects": {"proj_1": jsonio.dumps(PROJECT).decode()},
        "tasks": {"task_a": jsonio.dumps(linked(TASK_A, "sess_1")).decode(),
                  "task_b": jsonio.dumps(linked(TASK_B, "sess_1")).decode()},
        "sessions": {"sess_1": jsonio.dumps(SESSION).decode()},
    }
    project = loaded.projects[0]
    assert list(project) == list(PROJECT)
    assert project["custom"]["big"] == 2**64 - 1
    assert project["description"].endswith("nul \u0000 end")
    assert loaded.quarantined == []


def test_updates_and_deletes_leave_the_last_state(new_store):
    store = new_store()
    store.open()
    commit(store, [[put("project", PROJECT), put("task", TASK_A), put("task", TASK_B)]])
    renamed = {**TASK_A, "title": "renamed", "added": [1]}
    # Several records of one batch touch the same entities: the last one wins, in order.
    commit(store, [
        [put("task", {**TASK_A, "title": "intermediate"})],
        [put("task", renamed)],
        [put("session", SESSION)],
        [delete("session", "sess_1")],
        [delete("task", "task_b", "proj_1")],
    ])
    store.close()
    assert as_text(reopened(new_store)) == {
        "projects": {"proj_1": jsonio.dumps(PROJECT).decode()},
        "tasks": {"task_a": jsonio.dumps(renamed).decode()},
        "sessions": {},
    }


def test_deleting_an_absent_entity_is_fine(new_store):
    store = new_store()
    store.open()
    commit(store, [[delete("project", "never"), delete("task", "never", "nowhere"),
                        delete("session", "never")], [put("project", PROJECT)]])
    commit(store, [[delete("project", "proj_1")], [delete("project", "proj_1")]])
    store.close()
    loaded = reopened(new_store)
    assert (loaded.projects, loaded.tasks, loaded.sessions) == ([], [], [])


def test_a_deleted_entity_can_be_created_again(new_store):
    store = new_store()
    store.open()
    commit(store, [[put("project", PROJECT)]])
    commit(store, [[delete("project", "proj_1")]])
    again = {"id": "proj_1", "name": "again"}
    commit(store, [[put("project", again)]])
    store.close()
    assert as_text(reopened(new_store))["projects"] == {"proj_1": '{"id":"proj_1","name":"again"}'}


def test_a_second_owner_is_refused_while_the_first_holds_the_store(new_store):
    first = new_store()
    first.open()
    if new_store.backend == "postgres":
        # Servers share a PostgreSQL schema (replicas); what needs it alone is refused.
        second = new_store()
        second.open()
        with pytest.raises(StoreLockedError, match="in use by another Maestro server"):
            second.import_entities(LoadResult(projects=[PROJECT]))
    else:
        with pytest.raises(StoreLockedError, match="in use by another Maestro server"):
            new_store().open()
    # The refused attempt took nothing away from the owner.
    commit(first, [[put("project", PROJECT)]])
    first.close()
    assert list(as_text(reopened(new_store))["projects"]) == ["proj_1"]


def test_close_then_reopen_many_times_keeps_everything(new_store):
    expected = {}
    for round_no in range(3):
        store = new_store()
        loaded = store.open()
        assert as_text(loaded)["projects"] == expected
        value = {"id": f"p{round_no}", "name": f"round {round_no} ✓"}
        commit(store, [[put("project", value)]])
        expected[value["id"]] = jsonio.dumps(value).decode()
        store.close()
    assert as_text(reopened(new_store))["projects"] == expected


def test_an_id_with_a_nul_character_is_refused_before_anything_changes(new_store):
    store = new_store()
    store.open()
    bad = {"id": "bad\u0000id", "name": "x"}
    with pytest.raises(ValueError):
        store.check_op(put("project", bad))
    assert store.check_op(put("project", PROJECT)) is None
    assert store.check_op(delete("project", "whatever")) is None


# Backends that can refuse one record of a batch before the commit point, and how to make
# them refuse the second record of the next batch (a task of project proj_x).
REFUSING = ("files", "files-process", "memory")


def refuse_second_record(new_store, store: Store) -> None:
    if new_store.backend == "memory":
        store.fail_next(ready=1, message="no room for task_x")
    else:  # a file where the project's task folder would be: the task cannot be staged
        (new_store.root / "tasks" / "proj_x").write_text("in the way")


@pytest.mark.parametrize("new_store", REFUSING, indirect=True)
def test_a_refused_record_refuses_the_rest_until_resumed(new_store):
    store = new_store()
    store.open()
    commit(store, [[put("project", PROJECT)]])
    refuse_second_record(new_store, store)
    bad = {"id": "task_x", "projectId": "proj_x", "title": "X"}
    first = [[put("task", TASK_A)], [put("task", bad)], [put("task", TASK_B)]]
    # Sent before the first batch's outcome is known, as the committer may: built on the
    # refused change, so refused whole.
    second = [[put("session", SESSION)]]
    outcomes = send(store, first, second)
    assert [o.accepted for o in outcomes] == [1, 0]
    assert outcomes[0].reason and outcomes[1].reason
    commit(store, [[put("task", TASK_B)]])  # resumed: accepted again
    store.close()
    loaded = as_text(reopened(new_store))
    assert (sorted(loaded["tasks"]), loaded["sessions"]) == (["task_a", "task_b"], {})


# Backends whose durable write can be made to fail, and a batch whose write fails.
FAILING = ("postgres", "memory")


def failing_batch(new_store, store: Store) -> list[list[Op]]:
    if new_store.backend == "memory":
        store.fail_next(whole=True, message="write failed")
        return [[put("task", TASK_A)]]
    broken = Op("task", "task_x", {"id": "task_x"}, b'{"id": "task_x", oops', None)
    return [[put("task", TASK_A)], [broken]]


@pytest.mark.parametrize("new_store", FAILING, indirect=True)
def test_a_failed_write_commits_nothing_and_refuses_what_follows_until_resumed(new_store):
    store = new_store()
    store.open()
    commit(store, [[put("project", PROJECT)]])
    outcomes = send(store, failing_batch(new_store, store), [[put("session", SESSION)]])
    assert isinstance(outcomes[0], Exception)
    assert outcomes[1].accepted == 0 and "could not be stored" in outcomes[1].reason
    commit(store, [[put("task", TASK_B)]])
    store.close()
    loaded = as_text(reopened(new_store))
    assert (list(loaded["tasks"]), loaded["sessions"]) == (["task_b"], {})


def test_batches_sent_together_are_committed_in_order(new_store):
    store = new_store()
    store.open()
    renamed = {**PROJECT, "name": "renamed"}
    outcomes = send(store, [[put("project", PROJECT)], [put("task", TASK_A)]],
                    [[put("project", renamed)], [delete("task", "task_a", "proj_1")]],
                    [[put("task", TASK_B)]])
    assert outcomes == [Outcome(2), Outcome(2), Outcome(1)]
    store.close()
    loaded = as_text(reopened(new_store))
    assert loaded["projects"] == {"proj_1": jsonio.dumps(renamed).decode()}
    assert list(loaded["tasks"]) == ["task_b"]


def test_health_names_the_backend(new_store):
    store = new_store()
    store.open()
    health = store.health()
    assert health["backend"] == store.name
    assert health["quarantined"] == []
    assert health["writable"] is True


# ---------------------------------------------------------------------- PostgreSQL only
def rows(dsn: str, table: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dict(conn.execute(f"SELECT id, data::text FROM {table}").fetchall())


def test_postgres_keeps_the_json_text_verbatim_in_its_tables(pg_schema):
    dsn, _ = pg_schema
    store = PostgresStore(dsn)
    store.open()
    commit(store, [[put("project", PROJECT), put("task", TASK_A), put("session", SESSION)]])
    assert rows(dsn, "maestro_projects") == {"proj_1": jsonio.dumps(PROJECT).decode()}
    assert rows(dsn, "maestro_tasks") == {"task_a": jsonio.dumps(TASK_A).decode()}
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT project_id FROM maestro_tasks").fetchall() == [("proj_1",)]
        assert conn.execute("SELECT project_id FROM maestro_sessions").fetchall() == \
            [("proj_1",)]
    store.close()


def test_postgres_a_refused_batch_stores_nothing_and_the_store_goes_on(pg_schema):
    dsn, _ = pg_schema
    store = PostgresStore(dsn)
    store.open()
    commit(store, [[put("project", PROJECT)]])
    broken = Op("task", "task_x", {"id": "task_x"}, b'{"id": "task_x", oops', None)
    with pytest.raises(psycopg.Error):
        commit(store, [[put("task", TASK_A)], [delete("project", "proj_1")], [broken]])
    assert rows(dsn, "maestro_projects") == {"proj_1": jsonio.dumps(PROJECT).decode()}
    assert rows(dsn, "maestro_tasks") == {}
    commit(store, [[put("task", TASK_B)]])
    store.close()
    loaded = reopened(lambda: PostgresStore(dsn))
    assert [t["id"] for t in loaded.tasks] == ["task_b"]
    assert [p["id"] for p in loaded.projects] == ["proj_1"]


def test_postgres_survives_a_lost_connection_and_takes_its_lock_again(pg_schema):
    dsn, _ = pg_schema
    store = PostgresStore(dsn)
    store.open()
    commit(store, [[put("project", PROJECT)]])
    with psycopg.connect(dsn, autocommit=True) as admin:
        killed = admin.execute("SELECT pg_terminate_backend(%s)",
                               (store._conn.info.backend_pid,)).fetchall()
    assert killed == [(True,)]
    # The next batch notices, reconnects, takes the lock again and commits.
    commit(store, [[put("task", TASK_A)]])
    assert store.health()["reconnects"] == 1
    assert list(rows(dsn, "maestro_tasks")) == ["task_a"]
    other = PostgresStore(dsn)
    other.open()  # another server may share it, but nothing may take it alone
    with pytest.raises(StoreLockedError):
        other.import_entities(LoadResult())
    other.close()
    store.close()


def test_postgres_a_connection_lost_while_committing_is_retried_once(pg_schema):
    dsn, _ = pg_schema
    store = PostgresStore(dsn)
    store.open()
    commit(store, [[put("project", PROJECT)]])
    # A deferred trigger runs inside COMMIT: the first time, it kills its own connection there,
    # so the client sees the connection die during the commit, which did not happen.
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("""
            CREATE SEQUENCE commit_killer;
            CREATE FUNCTION kill_first_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('commit_killer') = 1 THEN
                    PERFORM pg_terminate_backend(pg_backend_pid());
                    PERFORM pg_sleep(5);
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER kill_first_commit AFTER UPDATE ON maestro_meta
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.name = 'log_seq')
                EXECUTE FUNCTION kill_first_commit();
        """)
    commit(store, [[put("task", TASK_A)], [delete("project", "proj_1")]])
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT last_value FROM commit_killer").fetchone()[0] == 2
    assert store.health()["reconnects"] == 1
    assert store.health()["restartNeeded"] is False
    store.close()
    loaded = reopened(lambda: PostgresStore(dsn))
    assert ([p["id"] for p in loaded.projects], [t["id"] for t in loaded.tasks]) == \
        ([], ["task_a"])


def test_postgres_unreadable_rows_are_listed_and_left_in_place(pg_schema):
    dsn, _ = pg_schema
    store = PostgresStore(dsn)
    store.open()
    commit(store, [[put("project", PROJECT)]])
    store.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO maestro_projects (id, data) VALUES ('not_object', '[1,2]'), "
                     "('other_id', '{\"id\": \"someone_else\"}')")
    store = PostgresStore(dsn)
    loaded = store.open()
    assert [p["id"] for p in loaded.projects] == ["proj_1"]
    assert sorted(q["id"] for q in loaded.quarantined) == ["not_object", "other_id"]
    assert {q["table"] for q in store.health()["quarantined"]} == {"maestro_projects"}
    store.close()
    assert set(rows(dsn, "maestro_projects")) == {"proj_1", "not_object", "other_id"}


def test_postgres_each_schema_has_its_own_owner(pg_schema):
    dsn, schema = pg_schema
    base = postgres_dsn()
    other_schema = f"{schema}_b"
    first, second = PostgresStore(dsn), PostgresStore(with_search_path(base, other_schema))
    try:
        first.open()
        second.open()  # a schema that does not exist yet is created
        commit(second, [[put("project", PROJECT)]])
        assert first.health()["schema"] == schema
        assert second.health()["schema"] == other_schema
        assert rows(dsn, "maestro_projects") == {}
    finally:
        first.close()
        second.close()
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{other_schema}" CASCADE')


def with_password(dsn: str, password: str) -> str:
    parts = urllib.parse.urlsplit(dsn)
    netloc = parts.netloc
    user, _, host = netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def test_postgres_never_shows_the_password(pg_schema):
    dsn, _ = pg_schema
    secret = f"pw-{secrets.token_hex(8)}"
    # The test database trusts local connections, so the password is accepted and unused.
    owner = PostgresStore(with_password(dsn, secret))
    owner.open()
    try:
        health = owner.health()
        assert "postgresql://" in health["database"]
        assert secret not in jsonio.dumps(health).decode()
        other = PostgresStore(with_password(dsn, secret))
        other.open()
        with pytest.raises(StoreLockedError) as locked:
            other.import_entities(LoadResult())
        other.close()
        assert secret not in str(locked.value)
        assert "in use by another Maestro server" in str(locked.value)
    finally:
        owner.close()
    unreachable = with_password("postgresql://postgres@127.0.0.1:1/test", secret)
    with pytest.raises(DatabaseUnavailableError) as refused:
        PostgresStore(unreachable).open()
    assert "cannot connect" in str(refused.value)
    assert secret not in str(refused.value)
    with pytest.raises(DatabaseUnavailableError) as malformed:
        PostgresStore(f"host=127.0.0.1 password={secret} nonsense").open()
    assert secret not in str(malformed.value)
