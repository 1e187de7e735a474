"""`python -m bench.grown`: writes to entities that have grown, on servers it starts itself (a
temporary data directory, and with `--database-url` a fresh schema of that PostgreSQL, dropped
afterwards).

A team's board after a while: tasks with ~25 linked sessions and a few hundred timeline
entries, sessions with thousands of events. On such a board, with 32 keep-alive connections:

- timeline append: `POST /api/tasks/:id/timeline` on random grown tasks;
- session event append: `POST /api/sessions/:id/events` on sessions holding `--events` events;
- session create: `POST /api/sessions` linking 5 grown tasks (each link writes both sides and a
  `session_started` entry on the task).

Besides ops/s and latency, each row gives the CPU per operation of the server, of its store
process (the file store's helper, or PostgreSQL's writer process) and, for PostgreSQL, of the
machine's PostgreSQL processes (a local database: its backends do the writes' work).

Each store runs the same plan on a server of its own; `--stores` picks them (default: files,
and postgres when a database is given). `--maestro-src DIR` runs the server from another
source tree (e.g. a checkout of an earlier version, for before/after figures). Never part of
the test suite; the figures of a shared machine are noisy, so compare runs made together."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time

import orjson

from .append import child_pids
from .client import (
    HttpConnection,
    Measurement,
    Target,
    close_pool,
    closed_loop,
    open_pool,
    process_cpu_seconds,
)
from .coordination import Server, _drop_schema, _row, _schema_url, source_path


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL server process of this machine (a local database: its
    backends do the writes' work)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if not f.read().startswith("postgres"):
                        continue
            except OSError:
                continue
            cpu = process_cpu_seconds(int(entry))
            if cpu is not None:
                found[int(entry)] = cpu
    return found


def cpu_since(before: dict[int, float], now: dict[int, float]) -> float:
    """CPU used between two readings by the processes alive at the second (one that started
    meanwhile counts from zero; one that ended is left out, as its time is no longer
    readable)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in now.items())


def cpu_of(pids: list[int]) -> dict[int, float]:
    return {pid: cpu for pid in pids if (cpu := process_cpu_seconds(pid)) is not None}


async def _call(conn: HttpConnection, method: str, path: str, body=None):
    status, answer = await conn.request(method.encode(), path.encode(),
                                        None if body is None else orjson.dumps(body))
    if status >= 400:
        raise RuntimeError(f"{method} {path} -> {status}: {answer[:300]!r}")
    return orjson.loads(answer) if answer else None


async def run_plan(url: str, args: argparse.Namespace, label: str, progress,
                   pid: int | None = None) -> list[dict]:
    target = Target.from_url(url, None)
    one = HttpConnection(target)
    rng = random.Random(7)
    conns = await open_pool(target, args.concurrency)
    rows: list[dict] = []
    try:
        project = (await _call(one, "POST", "/api/projects",
                               {"name": "grown board", "workingDir": "/tmp"}))["id"]
        progress(f"{label}: {args.tasks} tasks, {args.tasks * args.links // 5} sessions "
                 f"linking 5 each")
        tasks = [(await _call(one, "POST", "/api/tasks",
                              {"projectId": project, "title": f"grown task {i}"}))["id"]
                 for i in range(args.tasks)]
        order = [t for _ in range(args.links) for t in tasks]
        sessions = []
        for i in range(0, len(order), 5):
            sessions.append((await _call(one, "POST", "/api/sessions", {
                "projectId": project, "taskIds": list(dict.fromkeys(order[i:i + 5]))}))["id"])
        progress(f"{label}: {args.entries} timeline entries per task")
        for t in tasks:
            for start in range(0, args.entries, 500):
                await _call(one, "PATCH", f"/api/tasks/{t}", {"timeline": [
                    {"type": "update", "message": f"seeded step {start + k} done"}
                    for k in range(min(500, args.entries - start))]})
        eventful = sessions[:args.big_sessions]
        progress(f"{label}: {args.events} events on each of {len(eventful)} sessions")
        for s in eventful:
            for start in range(0, args.events, 2000):
                await _call(one, "PATCH", f"/api/sessions/{s}", {"events": [
                    {"type": "file_modified", "data": {"file": f"src/module_{start + k}.py"}}
                    for k in range(min(2000, args.events - start))]})
        await asyncio.sleep(2.0)

        tl_paths = [f"/api/tasks/{t}/timeline".encode() for t in tasks]
        tl_picks = [rng.randrange(len(tl_paths)) for _ in range(args.ops)]

        async def timeline(conn, i):
            return await conn.request(b"POST", tl_paths[tl_picks[i]],
                                      b'{"message":"progress %d: step done","type":"update"}' % i)

        ev_paths = [f"/api/sessions/{s}/events".encode() for s in eventful]

        async def event(conn, i):
            return await conn.request(b"POST", ev_paths[i % len(ev_paths)],
                                      b'{"type":"file_modified","data":{"file":"src/e_%d.py"}}'
                                      % i)

        shuffled = list(tasks)
        rng.shuffle(shuffled)
        encoded = [t.encode() for t in shuffled]
        project_b = project.encode()

        async def create(conn, i):
            linked = b'","'.join(encoded[(5 * i + k) % len(encoded)] for k in range(5))
            return await conn.request(b"POST", b"/api/sessions",
                                      b'{"projectId":"%s","name":"s %d","taskIds":["%s"]}'
                                      % (project_b, i, linked))

        for name, op, n in (
                (f"timeline append, grown tasks ({label})", timeline, args.ops),
                (f"session event append, {args.events:,}-event sessions ({label})", event,
                 args.ops),
                (f"session create linking 5 grown tasks ({label})", create,
                 args.ops // 2)):
            helpers = child_pids(pid)
            postgres = label == "postgres"
            helper0, database0 = cpu_of(helpers), postgres_cpu() if postgres else {}
            m = await closed_loop(conns, n, op, Measurement(name, name), pid)
            helper = cpu_since(helper0, cpu_of(helpers))
            database = cpu_since(database0, postgres_cpu()) if postgres else None
            row = _row(m)
            if m.server_cpu is not None and m.ops:
                row["notes"].append(f"server {m.server_cpu / m.ops * 1e6:,.0f} us CPU/op, "
                                    f"{100 * m.server_cpu / m.seconds:.0f}% of a core")
                if helpers:
                    row["notes"].append(f"{'writer' if postgres else 'store'} process "
                                        f"{helper / m.ops * 1e6:,.0f} us/op")
                if database is not None:
                    row["notes"].append(f"PostgreSQL {database / m.ops * 1e6:,.0f} us/op")
            rows.append(row)
            progress(f"{name}: {row['ops_per_s']:,.0f} ops/s, p50 {row['p50_ms']:.2f} ms, "
                     f"p99 {row['p99_ms']:.2f} ms" + (f", {m.errors} errors" if m.errors
                                                      else ""))
            await asyncio.sleep(1.5)
        sample = await _call(one, "GET", f"/api/tasks/{tasks[0]}")
        rows[0]["notes"].append(f"a task ends with {len(sample['timeline'])} timeline entries "
                                f"and {len(sample['sessionIds'])} sessions")
    finally:
        close_pool(conns)
        one.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.grown", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("MAESTRO_BENCH_DATABASE_URL"))
    parser.add_argument("--stores", default="", help="comma-separated: files,postgres")
    parser.add_argument("--maestro-src", help="run the server from this checkout (or its src/)")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--links", type=int, default=25, help="sessions linked to each task")
    parser.add_argument("--entries", type=int, default=300, help="timeline entries per task")
    parser.add_argument("--events", type=int, default=5_000, help="events per big session")
    parser.add_argument("--big-sessions", type=int, default=32)
    parser.add_argument("--ops", type=int, default=4_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    stores = [s for s in args.stores.split(",") if s] or \
        (["files", "postgres"] if args.database_url else ["files"])
    if "postgres" in stores and not args.database_url:
        parser.error("postgres needs --database-url")

    def progress(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    extra = {}
    if args.maestro_src:
        extra["PYTHONPATH"] = source_path(args.maestro_src)
    rows: list[dict] = []
    load = [round(os.getloadavg()[0], 2)]
    for store in stores:
        schema = None
        env = dict(extra)
        if store == "postgres":
            schema, url = _schema_url(args.database_url)
            env.update({"DATABASE_TYPE": "postgres", "DATABASE_URL": url})
        srv = Server(env=env).start()
        try:
            rows += asyncio.run(run_plan(srv.url, args, store, progress, srv.proc.pid))
        finally:
            srv.stop()
            if schema is not None:
                _drop_schema(args.database_url, schema)
    load.append(round(os.getloadavg()[0], 2))
    if args.json:
        print(json.dumps({"rows": rows, "loadavg": load}, indent=2))
        return 0
    print("| workload | ops/s | p50 ms | p99 ms | notes |\n| --- | ---: | ---: | ---: | --- |")
    for r in rows:
        notes = list(r["notes"]) + ([f"{r['errors']} errors"] if r["errors"] else [])
        print(f"| {r['workload']} | {r['ops_per_s']:,.0f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {'; '.join(notes)} |")
    print(f"\nload average {load[0]} at the start, {load[1]} at the end")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
