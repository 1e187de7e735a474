"""PostgreSQL's write path in a helper process (store/pg_writer.py): the server hands its batches
to a process of its own, which dies with it; a broken writing connection loses nothing
acknowledged; a killed writer process makes the server refuse writes (never acknowledge one it
could not store) until it is restarted; MAESTRO_STORE_PROCESS=0 keeps the writes in-process."""

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


def test_a_killed_writer_process_refuses_writes_and_loses_nothing(make_server, database):
    """kill -9 of the writer process under load: the batches it had not answered fail (their
    changes are undone), every later write is refused with the documented error body, nothing
    acknowledged is missing, and a restart serves everything and writes again."""
    srv = make_server(env=pg_env(database))
    with client(srv) as api:
        project = ok(api.post("/api/projects", json={"name": "P"}), 201)
    acked: list[str] = []
    refused: list[dict] = []
    stop = threading.Event()

    def write(n: int) -> None:
        with client(srv) as api:
            i = 0
            while not stop.is_set():
                i += 1
                r = api.post("/api/tasks", json={"projectId": project["id"],
                                                 "title": f"w{n}-{i}"})
                if r.status_code == 201:
                    acked.append(r.json()["id"])
                else:
                    refused.append({"status": r.status_code, **r.json()})

    threads = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acked) >= 100, timeout=30, what="100 acknowledged writes")
    (writer,) = writer_processes(srv.proc.pid)
    os.kill(writer, 9)
    wait_until(lambda: len(refused) >= 20, timeout=30, what="writes refused")
    stop.set()
    for thread in threads:
        thread.join(15)
    assert {r["status"] for r in refused} == {500}
    assert {r["code"] for r in refused} == {"INTERNAL_ERROR"}
    assert all(r["error"] is True and r["message"] for r in refused)
    with client(srv) as api:
        health = storage(api)
        assert health["writable"] is False
        assert "store process stopped" in health["lastError"]
        in_db = set(stored(database)["task"])
        assert set(acked) <= in_db
        # Nothing refused is served; a batch stored just before the process died, although
        # its requests were told it failed, is read back from the log once writes stop.
        wait_until(lambda: {t["id"] for t in ok(api.get("/api/tasks"))} == in_db,
                   what="the server to serve exactly what is stored")
    srv.kill()
    srv.start()
    with client(srv) as api:
        assert {t["id"] for t in ok(api.get("/api/tasks"))} == in_db
        ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "after"}), 201)
        assert storage(api)["writable"] is True
    assert srv.stop() == 0


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
