"""The real server on the PostgreSQL store (DATABASE_TYPE=postgres): the API, its events and
links behave as on files, every acknowledged change is in the database after a clean restart and
after `kill -9`, a second server on the same database serves the same data, and a database that
cannot be used stops start-up with one clear line (never a traceback, never a password)."""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from crash_driver import Acknowledged, Worker, check_recovered
from helpers import WsClient, assert_link_invariant, event_types, ok, wait_until
from helpers import http_client as client
from servers import PG_DOCUMENTS, ROOT, pg_env, pg_stored, postgres_dsn, postgres_schema

TABLES = {"project": "maestro_projects", "task": "maestro_tasks", "session": "maestro_sessions"}
DOCUMENTS = PG_DOCUMENTS
stored = pg_stored


@pytest.fixture
def database() -> Iterator[str]:
    """A DATABASE_URL whose tables live in a fresh schema, dropped afterwards."""
    with postgres_schema("maestro_srv") as (url, _):
        yield url


def served(api: httpx.Client) -> dict[str, dict[str, dict]]:
    return {kind: {e["id"]: e for e in ok(api.get(f"/api/{kind}s"))} for kind in TABLES}


def failed_start(make_server, env: dict) -> tuple[int, list[str]]:
    """Start a server that must not come up: its exit code and the lines it printed."""
    srv = make_server(env=env, start=False)
    srv.start(wait=False)
    code = srv.proc.wait(30)
    srv.kill()
    return code, [line for line in srv.log().splitlines() if line.strip()]


# ---------------------------------------------------------------------- the API on PostgreSQL
def with_password(url: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def test_crud_links_and_events_are_stored_in_postgres(make_server, database):
    # The test database trusts local connections: the password is accepted and unused, and
    # must show up nowhere.
    secret = f"pw-{secrets.token_hex(8)}"
    srv = make_server(env={**pg_env(with_password(database, secret)), "LOG_LEVEL": "debug"})
    with client(srv) as api, WsClient(srv.ws_url) as ws:
        project = ok(api.post("/api/projects", json={"name": "Ünïcode ✓", "workingDir": "/w"}),
                     201)
        parent = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "Parent"}),
                    201)
        child = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "Child",
                                                "parentId": parent["id"]}), 201)
        session = ok(api.post("/api/sessions", json={
            "projectId": project["id"], "taskIds": [parent["id"], child["id"]],
            "name": "worker"}), 201)
        assert event_types(ws.barrier()) == [
            "project:created", "task:created", "task:created", "session:created",
            "task:session_added", "task:updated", "task:session_added", "task:updated"]

        ok(api.patch(f"/api/tasks/{child['id']}", json={"status": "in_progress"}))
        ok(api.delete(f"/api/sessions/{session['id']}/tasks/{parent['id']}"))
        assert event_types(ws.barrier()) == [
            "task:updated", "session:task_removed", "task:session_removed", "session:updated",
            "task:updated"]
        assert ok(api.get(f"/api/tasks/{parent['id']}"))["sessionIds"] == []
        assert_link_invariant(api)

        # What the API serves is what the database holds, key order included.
        in_db = stored(database)
        assert in_db == served(api)
        for kind, entities in served(api).items():
            for eid, entity in entities.items():
                assert list(in_db[kind][eid]) == list(entity)

        deleted = ok(api.delete(f"/api/tasks/{parent['id']}", params={"cascade": "true"}))
        assert deleted["deleted"] == [child["id"], parent["id"]]
        assert event_types(ws.barrier())[-2:] == ["task:deleted", "task:deleted"]
        assert parent["id"] not in stored(database)["task"]
        assert child["id"] not in stored(database)["task"]

        health = ok(api.get("/health"))
        assert health["storage"]["backend"] == "postgres"
        assert health["storage"]["database"].startswith("postgresql://postgres@127.0.0.1:5432/")
        assert secret not in json.dumps(health)
    assert srv.stop() == 0
    assert "postgresql://postgres@127.0.0.1:5432/test" in srv.log()
    assert secret not in srv.log()
    # Nothing of it went to the JSON-file layout.
    assert not (srv.data_dir / "projects").exists()


def test_a_clean_restart_and_a_kill_9_keep_every_acknowledged_change(make_server, database):
    srv = make_server(env=pg_env(database))
    with client(srv) as api:
        project = ok(api.post("/api/projects", json={"name": "P"}), 201)
        task = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "T"}), 201)
        ok(api.post(f"/api/tasks/{task['id']}/timeline", json={"message": "before restart"}))
        before = served(api)
    assert srv.stop() == 0
    srv.start()
    with client(srv) as api:
        assert served(api) == before

    # Concurrent writers, then kill -9 at a random point of their work.
    acked = Acknowledged()
    acked.projects.add(project["id"])
    acked.tasks[task["id"]] = project["id"]
    acked.messages[task["id"]] = {"before restart"}
    acked.started[task["id"]] = set()
    rng = random.Random()
    workers = [Worker(f"w{i}", srv.url, acked, [], random.Random(rng.random()))
               for i in range(4)]
    for worker in workers:
        worker.start()
    target = rng.randint(30, 120)
    wait_until(lambda: acked.acked_requests >= target or acked.unexpected, timeout=30,
               what=f"{target} acknowledged writes")
    srv.kill()
    for worker in workers:
        worker.join(15)
        assert not worker.is_alive()
    in_db = stored(database)
    check_recovered(in_db, acked)
    srv.start()
    with client(srv) as api:
        assert served(api) == in_db
        assert_link_invariant(api)
    assert srv.stop() == 0


# ---------------------------------------------------------------------- refusing to start
def test_a_second_server_on_the_same_database_serves_the_same_data(make_server, database):
    first = make_server(env=pg_env(database))
    second = make_server(env=pg_env(database))
    with client(first) as one, client(second) as two:
        project = ok(one.post("/api/projects", json={"name": "shared"}), 201)
        task = ok(two.post("/api/tasks", json={"projectId": project["id"], "title": "T"}), 201)
        ok(one.patch(f"/api/tasks/{task['id']}", json={"status": "in_progress"}))
        wait_until(lambda: served(one) == served(two), what="both servers to agree")
        assert ok(two.get(f"/api/tasks/{task['id']}"))["status"] == "in_progress"
        assert served(two) == stored(database)


@pytest.mark.parametrize("url, says", [
    ("postgresql://postgres:{secret}@127.0.0.1:1/test",
     "cannot connect to the PostgreSQL database postgresql://postgres@127.0.0.1:1/test"),
    ("host=127.0.0.1 password={secret} nonsense",
     "DATABASE_URL is not a valid PostgreSQL connection string"),
])
def test_an_unusable_database_url_gives_one_line_and_exit_1(make_server, url, says):
    secret = f"pw-{secrets.token_hex(8)}"
    code, lines = failed_start(make_server, pg_env(url.format(secret=secret)))
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("maestro: ") and says in lines[0], lines
    assert secret not in lines[0]


def test_a_missing_driver_gives_one_line_and_exit_1(make_server, tmp_path):
    # A `psycopg` package that cannot be imported, ahead of the real one on the path.
    shadow = tmp_path / "shadow" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named psycopg')\n")
    code, lines = failed_start(make_server, {
        **pg_env("postgresql://postgres@127.0.0.1:5432/test"),
        "PYTHONPATH": str(shadow.parent)})
    assert code == 1
    assert len(lines) == 1, lines
    assert "needs the psycopg driver" in lines[0]
    assert "pip install 'maestro[postgres]'" in lines[0]


# ---------------------------------------------------------------------- import-data
def run_import(env: dict, *args: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("MAESTRO_", "DATABASE"))}
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "maestro", "import-data", *args], check=False,
                          env=full_env, capture_output=True, text=True, timeout=60, cwd=str(ROOT))


def test_import_data_copies_a_data_directory_into_postgres(make_server, database):
    files = make_server()
    with client(files) as api:
        project = ok(api.post("/api/projects", json={"name": "Données ✓"}), 201)
        tasks = [ok(api.post("/api/tasks", json={"projectId": project["id"], "title": f"T{i}"}),
                    201) for i in range(3)]
        ok(api.post("/api/sessions", json={"projectId": project["id"],
                                            "taskIds": [t["id"] for t in tasks[:2]]}), 201)
        refused = run_import({"DATABASE_URL": database}, "--data-dir", str(files.data_dir))
        assert refused.returncode == 1
        assert "in use by another Maestro server" in refused.stderr
    assert files.stop() == 0
    # A task file of the original, in its legacy location, with an unknown key.
    legacy = {"id": "task_legacy", "projectId": project["id"], "title": "Old", "status": "todo",
              "x-extra": {"kept": True}, "createdAt": 1, "updatedAt": 1}
    (files.data_dir / "tasks" / "task_legacy.json").write_text(json.dumps(legacy, indent=2))
    files.start()
    with client(files) as api:
        expected = served(api)
    assert files.stop() == 0

    done = run_import({"DATABASE_URL": database}, "--data-dir", str(files.data_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "imported 1 project(s), 4 task(s) and 1 session(s) from ")
    # Verbatim: the original's status and unknown key as written (the server migrates on load).
    assert stored(database)["task"]["task_legacy"] == legacy

    again = run_import({"DATABASE_URL": database}, "--data-dir", str(files.data_dir))
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and "already holds 6 entities" in again.stderr
    replaced = run_import({"DATABASE_URL": database}, "--data-dir", str(files.data_dir),
                          "--replace", "--json")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(replaced.stdout)["imported"] == {"projects": 1, "tasks": 4, "sessions": 1}

    on_postgres = make_server(env=pg_env(database))
    with client(on_postgres) as api:
        assert served(api) == expected


def test_a_database_not_in_utf8_is_refused_with_one_line(make_server):
    dsn = postgres_dsn()
    if dsn is None:
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432 (database test)")
    name = f"maestro_latin1_{secrets.token_hex(4)}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
                      "TEMPLATE template0")
    try:
        url = urllib.parse.urlunsplit(urllib.parse.urlsplit(dsn)._replace(path=f"/{name}"))
        code, lines = failed_start(make_server, pg_env(url))
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name}")
    assert code == 1
    assert len(lines) == 1, lines
    assert "uses the LATIN1 encoding; Maestro needs a UTF8 database" in lines[0]
