"""The PostgreSQL layout's numbered migrations (real database, real processes): an empty schema
is brought to the latest version by `maestro db migrate`, a second run changes nothing, three
processes migrating at once apply each version exactly once, a database ahead of the code is
refused in one line (by `serve` with exit 1, by both `db` commands), and a database of the
first layout (one json row per entity) is upgraded in place with every document intact."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
from servers import ROOT
from test_postgres_server import (  # noqa: F401 - the `database` fixture
    client,
    database,
    failed_start,
    pg_env,
)

from maestro import jsonio
from maestro.store.pg_schema import latest_version, migrations
from maestro.store.postgres import PostgresStore

LIST_TABLES = ("maestro_task_timeline", "maestro_session_events", "maestro_session_timeline",
               "maestro_task_sessions", "maestro_session_tasks")


def run_db(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAESTRO_", "DATABASE"))}
    env["DATABASE_URL"] = url
    return subprocess.run([sys.executable, "-m", "maestro", "db", *args], check=False, env=env,
                          capture_output=True, text=True, timeout=60, cwd=str(ROOT))


def versions(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version, name FROM maestro_schema_version "
                            "ORDER BY version").fetchall()


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema()")}


def expected_versions() -> list[tuple[int, str]]:
    return [(m.version, m.name) for m in migrations()]


def test_an_empty_database_is_migrated_and_a_second_run_changes_nothing(database):
    assert latest_version() >= 2
    status = run_db(database, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["version"] == 0

    first = run_db(database, "migrate", "--json")
    assert first.returncode == 0, first.stderr
    done = json.loads(first.stdout)
    assert done["version"] == done["latest"] == latest_version()
    assert done["applied"] == [f"{v:04d}_{n}" for v, n in expected_versions()]
    assert versions(database) == expected_versions()
    assert {"maestro_projects", "maestro_tasks", "maestro_sessions", "maestro_meta",
            *LIST_TABLES} <= tables(database)

    second = run_db(database, "migrate")
    assert second.returncode == 0, second.stderr
    assert "is up to date" in second.stdout
    assert versions(database) == expected_versions()
    status = run_db(database, "status")
    assert status.returncode == 0 and "(up to date)" in status.stdout
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT value FROM maestro_meta WHERE name = 'schema_version'"
                            ).fetchone()[0] == latest_version()


def test_three_processes_migrating_at_once_apply_each_version_once(database):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAESTRO_", "DATABASE"))}
    env["DATABASE_URL"] = database
    procs = [subprocess.Popen([sys.executable, "-m", "maestro", "db", "migrate", "--json"],
                              env=env, cwd=str(ROOT), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    applied = [name for out, _ in outputs for name in json.loads(out)["applied"]]
    assert sorted(applied) == [f"{v:04d}_{n}" for v, n in expected_versions()]
    assert versions(database) == expected_versions()


def test_a_database_ahead_of_the_code_is_refused(make_server, database):
    assert run_db(database, "migrate").returncode == 0
    ahead = latest_version() + 1
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO maestro_schema_version (version, name) VALUES (%s, 'future')",
                     (ahead,))
    code, lines = failed_start(make_server, pg_env(database))
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith("maestro: ")
    assert f"schema version {ahead}, newer than this Maestro knows ({latest_version()})" \
        in lines[0]
    migrate = run_db(database, "migrate")
    assert migrate.returncode == 1
    assert migrate.stderr.count("\n") == 1 and "newer than this Maestro knows" in migrate.stderr
    status = run_db(database, "status")
    assert status.returncode == 1 and "newer than this Maestro knows" in status.stdout


def test_migrate_is_refused_while_a_server_holds_an_old_layout(database):
    # A server of the first layout's era holds the schema: migrating under it is refused.
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(migrations()[0].sql())
        owner = PostgresStore(database)
        owner._conn = conn
        owner.schema = conn.execute("SELECT current_schema()").fetchone()[0]
        owner._take_owner(conn)
        refused = run_db(database, "migrate")
        assert refused.returncode == 1
        assert "in use by another Maestro server" in refused.stderr
        assert "a server migrates its database when it starts" in refused.stderr
    assert run_db(database, "migrate").returncode == 0


# ---------------------------------------------------------------------- the first layout
BIG = 123456789012345678901234567890
OLD_PROJECT = {"id": "proj_old", "name": "Ancien ✓", "workingDir": "/w", "x-odd": [1, {"b": 2}],
               "createdAt": 1, "updatedAt": 2}
OLD_TASK = {"zeta": 0, "id": "task_old", "projectId": "proj_old", "title": "grown",
            "status": "in_progress", "sessionIds": ["sess_old", "sess_gone"],
            "timeline": [{"id": f"tl_{i}", "type": "update", "message": f"step {i}",
                          "timestamp": 1000 + i, **({"big": BIG} if i == 3 else {})}
                         for i in range(40)],
            "x-unknown": {"kept": True}, "createdAt": 1, "updatedAt": 2}
OLD_TASK_ODD = {"id": "task_odd", "projectId": "proj_old", "title": "odd lists",
                "sessionIds": ["sess_old", 7, None], "timeline": "not a list",
                "createdAt": 1, "updatedAt": 2}
OLD_SESSION = {"id": "sess_old", "projectId": "proj_old", "taskIds": ["task_old", "task_odd"],
               "status": "working", "events": [{"id": f"evt_{i}", "type": "file_modified",
                                                "data": {"file": f"f{i}.py"}}
                                               for i in range(120)],
               "timeline": [{"type": "progress", "message": "ü 日本"}], "env": {"K": "v"},
               "createdAt": 1, "lastActivity": 3}


def write_first_layout(url: str) -> None:
    """The tables exactly as a server of the first layout made and wrote them."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(migrations()[0].sql())
        conn.execute("INSERT INTO maestro_projects (id, data) VALUES (%s, %s::json)",
                     (OLD_PROJECT["id"], jsonio.dumps(OLD_PROJECT).decode()))
        for task in (OLD_TASK, OLD_TASK_ODD):
            conn.execute("INSERT INTO maestro_tasks (id, project_id, data) "
                         "VALUES (%s, %s, %s::json)",
                         (task["id"], task["projectId"], jsonio.dumps(task).decode()))
        conn.execute("INSERT INTO maestro_sessions (id, project_id, data) "
                     "VALUES (%s, %s, %s::json)",
                     (OLD_SESSION["id"], "proj_old", jsonio.dumps(OLD_SESSION).decode()))
        conn.execute("UPDATE maestro_meta SET value = 7 WHERE name = 'batch_seq'")
        assert conn.execute("SELECT to_regclass('maestro_schema_version')").fetchone()[0] is None


def loaded_text(url: str) -> dict[str, str]:
    store = PostgresStore(url)
    try:
        result = store.open()
    finally:
        store.close()
    assert result.quarantined == []
    return {e["id"]: jsonio.dumps(e).decode()
            for e in (*result.projects, *result.tasks, *result.sessions)}


def test_a_database_of_the_first_layout_is_upgraded_in_place(database):
    write_first_layout(database)
    status = run_db(database, "status", "--json")
    assert json.loads(status.stdout)["version"] == 1
    done = run_db(database, "migrate", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["applied"] == [
        f"{v:04d}_{n}" for v, n in expected_versions()[1:]]
    assert versions(database) == expected_versions()

    with psycopg.connect(database) as conn:
        count = dict(conn.execute(
            " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in LIST_TABLES)
        ).fetchall())
        row = conn.execute("SELECT data::text FROM maestro_tasks WHERE id = 'task_old'"
                           ).fetchone()[0]
        odd = json.loads(conn.execute("SELECT data::text FROM maestro_tasks "
                                      "WHERE id = 'task_odd'").fetchone()[0])
        assert conn.execute("SELECT value FROM maestro_meta WHERE name = 'batch_seq'"
                            ).fetchone()[0] == 7
    assert count == {"maestro_task_timeline": 40, "maestro_session_events": 120,
                     "maestro_session_timeline": 1, "maestro_task_sessions": 2,
                     "maestro_session_tasks": 2}
    hollow = json.loads(row)
    assert list(hollow) == list(OLD_TASK)  # key order kept, the lists left as []
    assert hollow["timeline"] == [] and hollow["sessionIds"] == []
    assert odd == OLD_TASK_ODD  # a link list of more than ids stays in the row

    # Loaded back byte for byte (key order, unknown keys, the big number).
    expected = {e["id"]: jsonio.dumps(e).decode()
                for e in (OLD_PROJECT, OLD_TASK, OLD_TASK_ODD, OLD_SESSION)}
    assert loaded_text(database) == expected
    with psycopg.connect(database) as conn:  # and through the documents' views
        docs = dict(conn.execute("SELECT id, data::text FROM maestro_task_documents "
                                 "UNION ALL SELECT id, data::text FROM maestro_session_documents"
                                 ).fetchall())
    assert json.loads(docs["task_old"]) == OLD_TASK
    assert json.loads(docs["sess_old"]) == OLD_SESSION


def test_a_server_upgrades_the_first_layout_when_it_starts(make_server, database):
    write_first_layout(database)
    srv = make_server(env=pg_env(database))
    with client(srv) as api:
        # What was stored, as stored (the API adds the fields the original did not have).
        for path, old in (("/api/tasks/task_old", OLD_TASK), ("/api/sessions/sess_old",
                                                                OLD_SESSION)):
            served = api.get(path).json()
            assert {k: served[k] for k in old} == old
            assert [k for k in served if k in old] == list(old)
        added = api.post("/api/tasks/task_old/timeline", json={"message": "after upgrade"})
        assert added.status_code == 200, added.text
    assert srv.stop() == 0
    assert versions(database) == expected_versions()
    srv.start()
    with client(srv) as api:
        timeline = api.get("/api/tasks/task_old").json()["timeline"]
        assert timeline[:40] == OLD_TASK["timeline"]
        assert [e["message"] for e in timeline[40:]] == ["after upgrade"]


def test_the_log_is_compressed_with_lz4_where_the_server_has_it(database):
    """Migration 0005: the log's records use lz4 when PostgreSQL offers it, else the default
    stays and the migration still succeeds."""
    migrated = run_db(database, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(database, autocommit=True) as conn:
        if int(conn.execute("SHOW server_version_num").fetchone()[0]) < 140000:
            return  # no per-column compression before PostgreSQL 14: nothing to check
        try:
            conn.execute("CREATE TEMP TABLE lz4_probe (x text COMPRESSION lz4)")
            expected = "l"
        except psycopg.Error:
            expected = ""  # no lz4 here (or PostgreSQL before 14): the default compression
        got = dict(conn.execute(
            "SELECT attname, attcompression::text FROM pg_attribute "
            "WHERE attrelid = 'maestro_log'::regclass AND attname IN ('record', 'shapes')"
        ).fetchall())
    assert got == {"record": expected, "shapes": expected}
