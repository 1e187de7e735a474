"""A server on either store for tests that must hold on both: `store` parametrizes over the
JSON-file store and PostgreSQL (a fresh schema per test, dropped afterwards), and `edit_task`
changes a stored task behind the server's back (the server must be stopped), as a data
directory or database written by another program would."""

from __future__ import annotations

import json
from collections.abc import Callable

import psycopg
import pytest
from servers import pg_env, postgres_schema

STORES = ["files", "postgres"]


@pytest.fixture(params=STORES)
def store(request):
    """`{"name", "env", "url"}` of the store under test (env starts a server on it)."""
    if request.param == "files":
        yield {"name": "files", "env": {}, "url": None}
        return
    with postgres_schema("maestro_coord") as (url, _):
        yield {"name": "postgres", "env": pg_env(url), "url": url}


def edit_task(store: dict, srv, task: dict, change: Callable[[dict], None]) -> None:
    """Apply `change` to the stored form of `task` while its server is stopped."""
    if store["name"] == "files":
        path = srv.data_dir / "tasks" / task["projectId"] / f"{task['id']}.json"
        stored = json.loads(path.read_text())
        change(stored)
        path.write_text(json.dumps(stored, indent=2))
        return
    with psycopg.connect(store["url"]) as conn:
        text = conn.execute("SELECT data::text FROM maestro_tasks WHERE id = %s",
                            (task["id"],)).fetchone()[0]
        stored = json.loads(text)
        change(stored)
        conn.execute("UPDATE maestro_tasks SET data = %s::json WHERE id = %s",
                     (json.dumps(stored), task["id"]))
