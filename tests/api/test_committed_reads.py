"""Readers only ever see committed state: while writes are refused by the store (a folder that
cannot be written on the file store, a trigger that raises on PostgreSQL), concurrent GETs,
lists and WebSocket clients never see the refused changes, and afterwards they never existed."""

from __future__ import annotations

import asyncio
import shutil

import httpx
import psycopg
from helpers import WsClient, ok
from test_postgres_server import database, pg_env  # noqa: F401  (fixture)

REFUSED_TITLE = "refused by the store"
WRITERS = 120
READERS = 6


def client(srv) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=30.0, trust_env=False)


async def _race(srv, task_id: str, project_id: str, patch: bool) -> tuple[list[int], list[str]]:
    """Refused writes (new tasks and, with `patch`, PATCHes of `task_id`, all titled
    REFUSED_TITLE) while readers poll; returns the writers' status codes and whatever the
    readers saw of them. (On the file store two PATCHes of one task in one batch share one
    file write, so the first may be committed through the journal alone: only creations are
    refused one by one there.)"""
    seen: list[str] = []
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=srv.url, timeout=30.0, trust_env=False,
                                 limits=limits) as api:
        async def write(i: int) -> int:
            if patch and i % 2:
                resp = await api.patch(f"/api/tasks/{task_id}", json={"title": REFUSED_TITLE})
            else:
                resp = await api.post("/api/tasks", json={"projectId": project_id,
                                                          "title": REFUSED_TITLE})
            return resp.status_code

        async def read() -> None:
            while not done.is_set():
                for path in (f"/api/tasks/{task_id}", f"/api/tasks?projectId={project_id}",
                             "/api/tasks"):
                    body = (await api.get(path)).text
                    if REFUSED_TITLE in body:
                        seen.append(path)
                await asyncio.sleep(0)

        readers = [asyncio.create_task(read()) for _ in range(READERS)]
        await asyncio.sleep(0.05)
        codes = await asyncio.gather(*(write(i) for i in range(WRITERS)))
        done.set()
        await asyncio.gather(*readers)
    return codes, seen


def _check(srv, task: dict, project_id: str, patch: bool) -> None:
    with WsClient(srv.ws_url) as ws:
        ws.barrier()
        codes, seen = asyncio.run(_race(srv, task["id"], project_id, patch))
        events = ws.barrier()
    assert set(codes) == {500}, codes
    assert seen == [], f"readers saw {len(seen)} refused change(s): {seen[:5]}"
    leaked = [e["type"] for e in events if REFUSED_TITLE in str(e.get("data"))]
    assert leaked == []
    with client(srv) as api:
        assert ok(api.get(f"/api/tasks/{task['id']}")) == task
        assert ok(api.get("/api/tasks", params={"projectId": project_id})) == [task]


def test_reads_never_show_a_change_the_file_store_refuses(make_server, tmp_path):
    srv = make_server()
    with client(srv) as api:
        project = ok(api.post("/api/projects", json={"name": "blocked"}), 201)
        task = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "old"}), 201)
    # A regular file where the project's task folder must be: every write to it is refused.
    folder = srv.data_dir / "tasks" / project["id"]
    shutil.move(folder, tmp_path / "moved-away")
    folder.write_bytes(b"not a folder")
    _check(srv, task, project["id"], patch=False)
    srv.stop()
    folder.unlink()
    shutil.move(tmp_path / "moved-away", folder)
    srv.start()
    with client(srv) as api:
        assert ok(api.get("/api/tasks")) == [task]


def test_reads_never_show_a_change_postgresql_refuses(make_server, database):  # noqa: F811
    srv = make_server(env=pg_env(database))
    with client(srv) as api:
        project = ok(api.post("/api/projects", json={"name": "blocked"}), 201)
        task = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "old"}), 201)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"""
            CREATE FUNCTION refuse_title() RETURNS trigger AS $$
            BEGIN
              IF NEW.data::jsonb ->> 'title' = '{REFUSED_TITLE}' THEN
                RAISE EXCEPTION 'disk full (simulated)';
              END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql""")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON maestro_tasks "
                     "FOR EACH ROW EXECUTE FUNCTION refuse_title()")
    _check(srv, task, project["id"], patch=True)
    srv.stop()
    srv.start()
    with client(srv) as api:
        assert ok(api.get("/api/tasks")) == [task]

