"""PostgreSQL's write path in a helper process (store/pg_writer.py): the server hands its batches
to a process of its own, which dies with it; a broken writing connection loses nothing
acknowledged; a killed writer process fails the batches it had not answered (never acknowledging
one it could not store) and is replaced by a new one, also beside another replica changing links;
MAESTRO_STORE_PROCESS=0 keeps the writes in-process."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from crash_driver import Acknowledged, Worker, check_recovered
from helpers import assert_link_invariant, ok, wait_until
from helpers import http_client as client
from servers import PG_DOCUMENTS, pg_env, pg_stored, postgres_schema, processes

DOCUMENTS = PG_DOCUMENTS
stored = pg_stored


@pytest.fixture
def database() -> Iterator[str]:
    with postgres_schema("maestro_writer") as (url, _):
        yield url


def writer_processes(server_pid: int) -> list[int]:
    """Pids of the PostgreSQL writer processes started by the server `server_pid`."""
    return processes(b"maestro.store.pg_writer", parent=server_pid)


def storage(api: httpx.Client) -> dict:
    return ok(api.get("/health"))["storage"]


def start_workers(url: str, acked: Acknowledged, n: int = 4) -> list[Worker]:
    rng = random.Random()
    workers = [Worker(f"w{i}", url, acked, [], random.Random(rng.random())) for i in range(n)]
    for worker in workers:
        worker.start()
    return workers


def seeded(api: httpx.Client) -> Acknowledged:
    acked = Acknowledged()
    project = ok(api.post("/api/projects", json={"name": "P"}), 201)
    task = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "T"}), 201)
    acked.projects.add(project["id"])
    acked.tasks[task["id"]] = project["id"]
    acked.messages[task["id"]] = set()
    acked.started[task["id"]] = set()
    return acked


def test_the_writer_process_writes_and_dies_with_the_server(make_server, database):
    srv = make_server(env=pg_env(database))
    with client(srv) as api:
        assert storage(api)["writer"] == "process"
        project = ok(api.post("/api/projects", json={"name": "p"}), 201)
        task = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "t"}), 201)
        ok(api.post("/api/sessions", json={"projectId": project["id"],
                                           "taskIds": [task["id"]]}), 201)
        served = {kind: {e["id"]: e for e in ok(api.get(f"/api/{kind}s"))} for kind in DOCUMENTS}
    assert stored(database) == served
    assert len(writer_processes(srv.proc.pid)) == 1
    pid = srv.proc.pid
    srv.kill()  # kill -9: the writer must not outlive it (no writer behind a new server's back)
    wait_until(lambda: not writer_processes(pid), what="the writer process to end")
    srv.start()
    with client(srv) as api:
        assert ok(api.get(f"/api/tasks/{task['id']}")) == served["task"][task["id"]]
    pid = srv.proc.pid
    assert srv.stop() == 0
    assert writer_processes(pid) == []


def test_in_process_writes_when_the_store_process_is_off(make_server, database):
    srv = make_server(env={**pg_env(database), "MAESTRO_STORE_PROCESS": "0"})
    with client(srv) as api:
        assert storage(api)["writer"] == "in-process"
        project = ok(api.post("/api/projects", json={"name": "p"}), 201)
        task = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "t"}), 201)
        session = ok(api.post("/api/sessions", json={"projectId": project["id"],
                                                     "taskIds": [task["id"]]}), 201)
        assert stored(database)["session"][session["id"]] == session
    assert writer_processes(srv.proc.pid) == []
    assert srv.stop() == 0


@pytest.mark.parametrize("in_process", [False, True])
def test_what_the_database_compresses_is_compressed_with_lz4(make_server, database,
                                                              in_process):
    """A long task description makes an entity row over 2 KB, which PostgreSQL compresses:
    with lz4 (cheaper than its default pglz) where the server has it, as it does the log's
    records (migration 0005; a session created with five links makes one over 2 KB)."""
    with psycopg.connect(database, autocommit=True) as probe:
        try:
            probe.execute("SET default_toast_compression = lz4")
        except psycopg.Error as exc:
            pytest.skip(f"this PostgreSQL has no lz4: {exc}")
    env = {**pg_env(database), "MAESTRO_STORE_PROCESS": "0" if in_process else "1"}
    srv = make_server(env=env)
    with client(srv) as api:
        project = ok(api.post("/api/projects", json={"name": "p"}), 201)
        tasks = [ok(api.post("/api/tasks", json={
            "projectId": project["id"], "title": f"t{i}",
            "description": "the same long paragraph, again. " * 200}), 201)["id"]
            for i in range(5)]
        session = ok(api.post("/api/sessions", json={"projectId": project["id"],
                                                     "taskIds": tasks}), 201)
    with psycopg.connect(database) as conn:
        record, compression = conn.execute(
            "SELECT length(record), pg_column_compression(record) FROM maestro_log "
            "WHERE strpos(record, %s) > 0 ORDER BY seq DESC LIMIT 1",
            (session["id"],)).fetchone()
        assert record > 2048 and compression == "lz4"
        compressions = {row[0] for row in conn.execute(
            "SELECT pg_column_compression(data) FROM maestro_tasks")}
    assert compressions == {"lz4"}
    assert srv.stop() == 0


def test_the_writing_connection_killed_under_load_loses_nothing(make_server, database):
    """pg_terminate_backend on the writer process's connection while four clients write: the
    batch in flight is found committed or written again on a new connection, so every request
    is answered as usual and every acknowledged change is in the database."""
    srv = make_server(env=pg_env(database))
    with client(srv) as api:
        acked = seeded(api)
        workers = start_workers(srv.url, acked)
        (writer,) = writer_processes(srv.proc.pid)
        killed = 0
        with psycopg.connect(database, autocommit=True) as admin:
            for target in (40, 120, 200):
                wait_until(lambda: acked.acked_requests >= target or acked.unexpected,
                           timeout=30, what=f"{target} acknowledged writes")
                killed += len(admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE %s", (f"maestro pid {writer} %",)).fetchall())
        wait_until(lambda: acked.acked_requests >= 260 or acked.unexpected, timeout=30,
                   what="writes after the last kill")
        assert killed == 3
        reconnects = storage(api)["reconnects"]
    srv.kill()
    for worker in workers:
        worker.join(15)
    assert acked.unexpected == []
    assert reconnects >= 3
    in_db = stored(database)
    check_recovered(in_db, acked)
    srv.start()
    with client(srv) as api:
        assert {kind: {e["id"]: e for e in ok(api.get(f"/api/{kind}s"))}
                for kind in DOCUMENTS} == in_db
        assert_link_invariant(api)
    assert srv.stop() == 0


def served_documents(api: httpx.Client) -> dict:
    return {kind: {e["id"]: e for e in ok(api.get(f"/api/{kind}s"))} for kind in DOCUMENTS}


class Writers:
    """Threads writing to a server until stopped: tasks, sessions linking tasks and sessions
    whose task list changes; what was acknowledged, and the answers that were not 2xx."""

    def __init__(self, url: str, project_id: str, tasks: list[str], n: int = 4):
        self.url = url
        self.project_id = project_id
        self.tasks = list(tasks)
        self.acked: list[tuple[str, str]] = []  # (kind, id)
        self.refused: list[dict] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(i,), daemon=True)
                        for i in range(n)]
        for thread in self.threads:
            thread.start()

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _answer(self, r: httpx.Response, kind: str) -> dict | None:
        with self.lock:
            if r.status_code in (200, 201):
                body = r.json()
                self.acked.append((kind, body["id"]))
                return body
            self.refused.append({"status": r.status_code, **r.json()})
        return None

    def _write(self, n: int) -> None:
        rng = random.Random(n)
        own: list[str] = []
        with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as api:
            i = 0
            while not self.stop.is_set():
                i += 1
                step = i % 3
                if step == 0 or len(self.tasks) < 4:
                    task = self._answer(api.post("/api/tasks", json={
                        "projectId": self.project_id, "title": f"w{n}-{i}"}), "task")
                    if task is not None:
                        with self.lock:
                            self.tasks.append(task["id"])
                    continue
                with self.lock:
                    picked = rng.sample(self.tasks, 3)
                if step == 1 or not own:
                    session = self._answer(api.post("/api/sessions", json={
                        "projectId": self.project_id, "taskIds": picked}), "session")
                    if session is not None:
                        own.append(session["id"])
                else:  # a link removed and others added
                    self._answer(api.patch(f"/api/sessions/{rng.choice(own)}",
                                           json={"taskIds": picked[:2]}), "session")

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def test_a_killed_writer_process_is_replaced_and_nothing_is_lost(make_server, database):
    """kill -9 of the writer process under load: the batches it had not answered fail (their
    changes are undone, their requests get the documented 500), a new writer process takes
    over within seconds on its own (it reads the link rows itself), writing goes on with links
    added and removed, and what the server serves is exactly what the database holds."""
    srv = make_server(env=pg_env(database))
    with client(srv) as api:
        project = ok(api.post("/api/projects", json={"name": "P"}), 201)["id"]
        tasks = [ok(api.post("/api/tasks", json={"projectId": project, "title": f"t{i}"}),
                    201)["id"] for i in range(6)]
        writers = Writers(srv.url, project, tasks)
        wait_until(lambda: writers.count() >= 100, timeout=30, what="100 acknowledged writes")
        (writer,) = writer_processes(srv.proc.pid)
        os.kill(writer, 9)
        wait_until(lambda: storage(api).get("writerRestarts") == 1, timeout=30,
                   what="a new writer process")
        health = storage(api)
        assert health["writable"] is True and health["writer"] == "process"
        (renewed,) = writer_processes(srv.proc.pid)
        assert renewed != writer
        after = writers.count()
        wait_until(lambda: writers.count() >= after + 150, timeout=30,
                   what="150 more acknowledged writes after the new writer process started")
        writers.finish()
        # Only what the dead process had not answered was refused, with the documented body.
        assert {r["status"] for r in writers.refused} <= {500}
        assert all(r["code"] == "INTERNAL_ERROR" and r["error"] is True
                   and "store process stopped" in r["message"] for r in writers.refused)
        in_db = stored(database)
        for kind, eid in writers.acked:
            assert eid in in_db[kind]
        # A batch stored just before the process died, although its requests were told it
        # failed, is read back from the log.
        wait_until(lambda: served_documents(api) == in_db,
                   what="the server to serve exactly what is stored")
        assert_link_invariant(api)
    srv.kill()
    srv.start()
    with client(srv) as api:
        assert served_documents(api) == in_db
        ok(api.post("/api/tasks", json={"projectId": project, "title": "after"}), 201)
    assert srv.stop() == 0


def test_a_writer_process_that_dies_while_nothing_is_written_is_replaced_at_once(
        make_server, database):
    """The server notices its writer process's death by itself (not at the next write, which
    would fail): by the time a client writes again a new one is there, and the write succeeds."""
    srv = make_server(env=pg_env(database))
    with client(srv) as api:
        project = ok(api.post("/api/projects", json={"name": "P"}), 201)["id"]
        (writer,) = writer_processes(srv.proc.pid)
        os.kill(writer, 9)
        wait_until(lambda: storage(api).get("writerRestarts") == 1, timeout=10,
                   what="a new writer process")
        assert storage(api)["writable"] is True
        task = ok(api.post("/api/tasks", json={"projectId": project, "title": "t"}), 201)
        assert task["id"] in stored(database)["task"]
    assert srv.stop() == 0


def test_a_replaced_writer_process_follows_the_links_another_replica_changes(make_server,
                                                                             database):
    """Two replicas; A's writer process is killed while B keeps adding and removing links. A's
    new process reads the link rows at a head A has not applied yet: the records A applies
    after it must not be taken twice. A then changes links itself: no batch is refused, and
    both replicas serve exactly what the database holds."""
    # Each replica writes itself (with the write lead, B's changes would be A's).
    alone = {**pg_env(database), "MAESTRO_FORWARD_WRITES": "0"}
    a = make_server(env=alone)
    b = make_server(env=alone)
    with client(a) as api_a, client(b) as api_b:
        project = ok(api_a.post("/api/projects", json={"name": "P"}), 201)["id"]
        tasks = [ok(api_a.post("/api/tasks", json={"projectId": project, "title": f"t{i}"}),
                    201)["id"] for i in range(8)]
        wait_until(lambda: len(ok(api_b.get("/api/tasks"))) == 8, what="B to follow")
        on_b = Writers(b.url, project, tasks, n=2)
        wait_until(lambda: on_b.count() >= 50, timeout=30, what="writes on B")
        (writer,) = writer_processes(a.proc.pid)
        os.kill(writer, 9)
        wait_until(lambda: storage(api_a).get("writerRestarts") == 1, timeout=30,
                   what="a new writer process on A")
        on_a = Writers(a.url, project, tasks, n=2)
        wait_until(lambda: on_a.count() >= 150, timeout=30, what="writes on A")
        on_a.finish()
        on_b.finish()
        assert on_a.refused == [] and on_b.refused == []
        in_db = stored(database)
        for kind, eid in on_a.acked + on_b.acked:
            assert eid in in_db[kind]
        for api in (api_a, api_b):
            wait_until(lambda api=api: served_documents(api) == in_db,
                       what="both replicas to serve exactly what is stored")
            assert_link_invariant(api)
    assert a.stop() == 0
    assert b.stop() == 0


def test_numbers_beyond_64_bits_reach_the_database_verbatim(make_server, database):
    """A list entry holding an integer orjson cannot encode goes to the writer process by the
    exact path (jsonio) and is stored, served and reloaded digit for digit."""
    big = b"123456789012345678901234567890"
    srv = make_server(env=pg_env(database))
    with client(srv) as api:
        project = ok(api.post("/api/projects", json={"name": "p"}), 201)
        task = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "t"}), 201)
        session = ok(api.post("/api/sessions", json={"projectId": project["id"],
                                                     "taskIds": [task["id"]]}), 201)
        answer = api.post(f"/api/sessions/{session['id']}/events",
                          content=b'{"type":"x","data":{"n":' + big + b'}}',
                          headers={"content-type": "application/json"})
        assert answer.status_code == 200 and b'"n":' + big in answer.content
        with psycopg.connect(database) as conn:
            (entry,) = conn.execute("SELECT entry::text FROM maestro_session_events").fetchone()
        assert '"n":' + big.decode() in entry
    srv.stop()
    srv.start()
    with client(srv) as api:
        assert b'"n":' + big in api.get(f"/api/sessions/{session['id']}").content
    assert srv.stop() == 0


def test_a_batch_sent_after_a_refused_one_is_refused_too(database):
    """The writer process, driven as the server drives it: batch 1 was built on state behind
    the log (another server wrote first) and is refused; batch 2, sent before the server knew,
    was built on batch 1 and must be refused too, even when the number of records the other
    server wrote makes its expected head match the log's. `resume` ends the refusal."""
    from maestro import jsonio as json_io
    from maestro.store import pg_writer
    from maestro.store.base import Op
    from maestro.store.postgres import PostgresStore

    def project(name: str) -> Op:
        value = {"id": f"proj_{name}", "name": name}
        return Op("project", value["id"], value, json_io.dumps(value), new=True)

    other = PostgresStore(database)
    other.open()
    other.commit_now([[project("other")]])  # the log's head is now 1
    store = PostgresStore(database)
    store.open()
    store.log_head = store.log_events = 0  # as if loaded before the other server wrote
    helper = pg_writer.spawn()
    assert pg_writer.WriterProxy.hand_over(store, helper) is not None

    def batch(name: str, expected: int) -> dict:
        op = project(name)
        rows, logged, counts = store.described([[op]])
        header = {"op": "batch", "expected": expected, "firstEvent": 0, "counts": counts,
                  "rows": [list(row[:5]) for row in rows]}
        return helper.request(json_io.dumps(header), logged + [row[5] for row in rows])

    try:
        first = batch("first", 0)
        assert first["ok"] is False and first["moved"] is True
        second = batch("second", 1)  # expected matches the head, but built on `first`
        assert second["ok"] is True and second["ready"] == 0 and second["error"]
        assert helper.request(json_io.dumps({"op": "resume"}))["ok"] is True
        third = batch("third", 1)
        assert third["ok"] is True and third["ready"] == 1
    finally:
        helper.close()
        store.close()
        other.close()
    ids = set(stored(database)["project"])
    assert ids == {"proj_other", "proj_third"}


def test_a_new_writer_process_ends_the_dead_ones_connections_first(database):
    """A batch the dead writer process had sent may still be running in its backend (waiting
    for the log's counter row, say) and would commit under the same origin as the new
    process's: the new one ends those connections (its pid's application name, or the backend
    it last reported) and waits until they are gone; others are left alone."""
    import socket

    from maestro.store.postgres import PostgresStore

    dead_pid = 999_999_001
    victim = psycopg.connect(database, autocommit=True,
                             application_name=f"maestro pid {dead_pid} on {socket.gethostname()}")
    by_backend = psycopg.connect(database, autocommit=True, application_name="renamed by a URL")
    bystander = psycopg.connect(database, autocommit=True,
                                application_name=f"maestro pid {dead_pid} on another-host")
    victim.execute("BEGIN")
    victim.execute("SELECT 1")  # a transaction in progress
    store = PostgresStore(database)
    store._conn = store._connect()
    try:
        store.end_connections({"pid": dead_pid, "backendPid": by_backend.info.backend_pid})
        for conn in (victim, by_backend):
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        assert bystander.execute("SELECT 1").fetchone() == (1,)
    finally:
        store._conn.close()
        for conn in (victim, by_backend, bystander):
            conn.close()


def test_a_new_writer_process_learns_which_lists_left_entity_rows_before_its_snapshot(
        database):
    """A new writer process reads the link rows at the database's head but is told which lists
    are still in entity rows by the server, whose view is older: another server's record in
    between moved a timeline out of its task row. When the server forwards that record (at or
    below the new process's head), the process must still learn the list has left the row, or
    the server's next append to it (described as an append, not a whole list) is refused."""
    from maestro import jsonio as json_io
    from maestro.store import pg_writer
    from maestro.store.base import Op
    from maestro.store.postgres import PostgresStore

    def op(value: dict, **extra) -> Op:
        return Op(value.get("projectId") and "task" or "project", value["id"], value,
                  json_io.dumps(value), value.get("projectId"), **extra)

    entry = {"id": "evt_1", "type": "created", "timestamp": 1}
    task = {"id": "task_1", "projectId": "proj_1", "title": "t", "timeline": [entry]}
    first = PostgresStore(database)
    first.open()
    first.commit_now([[op({"id": "proj_1", "name": "p"}, new=True), op(task, new=True)]])
    first.close()
    with psycopg.connect(database) as conn:  # the timeline written back into the row
        conn.execute("UPDATE maestro_tasks SET data = %s::json WHERE id = 'task_1'",
                     (json_io.dumps(task).decode(),))
        conn.execute("DELETE FROM maestro_task_timeline")
    server = PostgresStore(database)  # the server whose writer process dies
    server.open()
    assert ("task", "task_1", "timeline") in server.shapes.inline
    other = PostgresStore(database)  # another server appends: the list moves to its rows
    other.open()
    second = {"id": "evt_2", "type": "note", "timestamp": 2}
    moved = {**task, "timeline": [entry, second]}
    other.commit_now([[op(moved, delta={"push": {"timeline": [1, [second]]}})]])
    with psycopg.connect(database) as conn:
        seq, shapes = conn.execute("SELECT seq, shapes FROM maestro_log "
                                   "ORDER BY seq DESC LIMIT 1").fetchone()
    assert seq == server.log_head + 1 and '"inline":[["task","task_1","timeline"]]' in shapes
    helper = pg_writer.spawn()
    assert pg_writer.WriterProxy.hand_over(server, helper, anew=True) is not None
    try:
        # The server applies the other's record: its own view of inline lists follows it, and
        # it forwards the record to its writer process.
        server.adopt_shapes(shapes, seq)  # (no proxy attached here: the server's side only)
        assert ("task", "task_1", "timeline") not in server.shapes.inline
        assert helper.request(json_io.dumps({"op": "shapes", "text": shapes,
                                             "seq": seq}))["ok"] is True
        third = {"id": "evt_3", "type": "note", "timestamp": 3}
        appended = op({**moved, "timeline": [entry, second, third]},
                      delta={"push": {"timeline": [2, [third]]}})
        rows, logged, counts = server.described([[appended]])
        header = {"op": "batch", "expected": seq, "firstEvent": 0, "counts": counts,
                  "rows": [list(row[:5]) for row in rows]}
        answer = helper.request(json_io.dumps(header), logged + [row[5] for row in rows])
        assert answer["ok"] is True and answer["ready"] == 1, answer
    finally:
        helper.close()
        server.close()
        other.close()
    assert stored(database)["task"]["task_1"]["timeline"] == [entry, second, third]


def test_a_batch_text_reports_what_psycopg_would(database):
    """The SQL text of a batch runs through libpq's PQexec (postgres._run_text): a statement
    refused undoes the whole text and raises psycopg's error with its SQLSTATE (the log's
    MLOG1 among them), and a connection ended under it raises and reads as broken."""
    from maestro.store.postgres import _run_text

    with psycopg.connect(database, autocommit=True) as conn:
        _run_text(conn, b"CREATE TABLE batch_probe (a integer); SELECT 1")
        with pytest.raises(psycopg.errors.DivisionByZero):
            _run_text(conn, b"INSERT INTO batch_probe VALUES (1); SELECT 1 / 0; "
                            b"INSERT INTO batch_probe VALUES (2)")
        assert conn.execute("SELECT count(*) FROM batch_probe").fetchone()[0] == 0
        with pytest.raises(psycopg.Error) as refused:
            _run_text(conn, b"DO $$ BEGIN RAISE EXCEPTION 'the log moved' "
                            b"USING ERRCODE = 'MLOG1'; END $$")
        assert refused.value.sqlstate == "MLOG1"
        _run_text(conn, b"INSERT INTO batch_probe VALUES (3); INSERT INTO batch_probe VALUES (4)")
        assert conn.execute("SELECT count(*) FROM batch_probe").fetchone()[0] == 2
        with psycopg.connect(database, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        with pytest.raises(psycopg.Error):
            _run_text(conn, b"INSERT INTO batch_probe VALUES (5)")
        assert conn.broken
