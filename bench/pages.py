"""`python -m bench.pages`: pages of lists (`?limit=100&cursor=…`) on servers it starts itself,
holding 1k and 50k tasks (written as a data directory before the start, as in
bench.coordination):

- the first page and a page deep in the list (after ~80% of it), for all tasks, a project,
  a project + status, and ready work: a page should cost the same wherever it starts and
  whatever the size of the table;
- walking every task 1,000 at a time, against one unpaged `GET /api/tasks`;
- task PATCHes (status changes of random tasks) on a server whose lists were paged (the
  sorted id lists kept for paging then follow every change) and on a twin never paged,
  rounds interleaved.

Prints a table (or `--json`). Never part of the test suite; run it on a quiet machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

from .client import HttpConnection, Measurement, Target, close_pool, closed_loop, open_pool
from .coordination import Server, write_board


async def _get(conn: HttpConnection, path: str) -> tuple[bytes, str | None]:
    """Body and X-Next-Cursor of one GET (the bench client reads headers itself here)."""
    t = conn.target
    conn.writer.write(b"GET %s%s HTTP/1.1\r\n%s\r\n" % (t.base_path.encode(), path.encode(),
                                                       t.fixed_headers))
    head = await conn.reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    length = int(lower[at + 17:lower.find(b"\r\n", at + 2)])
    body = await conn.reader.readexactly(length)
    if int(head[9:12]) != 200:
        raise RuntimeError(f"GET {path}: {body[:200]!r}")
    at = lower.find(b"\r\nx-next-cursor:")
    cursor = None
    if at >= 0:
        cursor = head[at + 16:head.find(b"\r\n", at + 2)].strip().decode()
    return body, cursor


async def deep_cursor(conn: HttpConnection, path: str, fraction: float = 0.8) -> str | None:
    """The cursor after ~`fraction` of a list, found by walking it 1,000 at a time."""
    sep = "&" if "?" in path else "?"
    total = len(orjson.loads((await _get(conn, path))[0]))
    seen, cursor = 0, None
    while seen < total * fraction:
        body, cursor = await _get(conn, f"{path}{sep}limit=1000"
                                  + (f"&cursor={cursor}" if cursor else ""))
        seen += len(orjson.loads(body))
        if cursor is None:
            break
    return cursor


async def page_workloads(url: str, ids: dict, n: int, size: str) -> list[Measurement]:
    conns = await open_pool(Target.from_url(url), 1)
    conn = conns[0]
    out = []
    lists = [("all tasks", "/api/tasks"),
             (f"project ({ids['bulk_size']} tasks)", f"/api/tasks?projectId={ids['bulk']}"),
             ("project + status", f"/api/tasks?projectId={ids['bulk']}&status=pending"),
             ("ready work", "/api/tasks?ready=true")]
    for label, path in lists:
        sep = "&" if "?" in path else "?"
        deep = await deep_cursor(conn, path)
        for where, query in (("first", ""), ("deep", f"&cursor={deep}" if deep else "")):
            target = f"{path}{sep}limit=100{query}".encode()

            async def op(c, i, target=target):
                return await c.request(b"GET", target)

            for _ in range(100):
                await conn.request(b"GET", target)
            m = await closed_loop(conns, n, op, Measurement(
                f"page of 100, {where}: {label} ({size})", "page"), None)
            out.append(m)

    # Every task, 1,000 at a time, against one unpaged list.
    for label, limit in (("walk all tasks by 1000", 1000), ("one unpaged GET /api/tasks", 0)):
        m = Measurement(f"{label} ({size})", "walk")
        for _ in range(5):
            started = time.perf_counter()
            cursor, count = None, 0
            while True:
                path = "/api/tasks" + (f"?limit={limit}" if limit else "") \
                    + (f"&cursor={cursor}" if cursor else "")
                body, cursor = await _get(conn, path)
                count += 1
                if cursor is None:
                    break
            m.latencies.append(time.perf_counter() - started)
            m.ops += 1
        m.notes.append(f"{count} request(s)")
        out.append(m)
    close_pool(conns)
    return out


async def patch_workload(url: str, ids: dict, n: int, label: str, seed: int) -> Measurement:
    conns = await open_pool(Target.from_url(url), 8)
    tasks = orjson.loads((await _get(conns[0], f"/api/tasks?projectId={ids['bulk']}"))[0])
    rng = random.Random(seed)
    bodies = [(rng.choice(tasks)["id"], orjson.dumps(
        {"status": rng.choice(["pending", "in_progress", "completed"])})) for _ in range(n)]

    async def op(conn, i):
        tid, body = bodies[i]
        return await conn.request(b"PATCH", f"/api/tasks/{tid}".encode(), body)

    m = await closed_loop(conns, n, op, Measurement(label, "patch"), None)
    close_pool(conns)
    return m


async def make_paged(url: str, ids: dict) -> None:
    """Ask for one page of every list the page workloads use (the sorted lists then exist)."""
    conns = await open_pool(Target.from_url(url), 1)
    for status in ("pending", "in_progress", "completed"):
        await _get(conns[0], f"/api/tasks?projectId={ids['bulk']}&status={status}&limit=10")
        await _get(conns[0], f"/api/tasks?status={status}&limit=10")
    await _get(conns[0], f"/api/tasks?projectId={ids['bulk']}&limit=10")
    await _get(conns[0], "/api/tasks?limit=10")
    close_pool(conns)


def _row(m: Measurement) -> dict:
    return {"workload": m.name, "ops": m.ops, "ops_per_s": round(m.ops_per_s or 0, 1),
            "p50_ms": round(m.p(0.5) or 0, 3), "p99_ms": round(m.p(0.99) or 0, 3),
            "errors": m.errors, "notes": m.notes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__)
    parser.add_argument("--sizes", default="1000,50000", help="task counts (comma-separated)")
    parser.add_argument("--quick", action="store_true", help="fewer requests per workload")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    n = 300 if args.quick else 2000
    rows: list[dict] = []
    for tasks in (int(s) for s in args.sizes.split(",")):
        size = f"{tasks // 1000}k tasks"
        tmp = Path(tempfile.mkdtemp(prefix="maestro-pages-bench-"))
        ids = write_board(tmp / "data", tasks, tasks // 5, projects=50)
        shutil.copytree(tmp / "data", tmp / "twin")
        plain = Server(data_dir=tmp / "twin").start()
        srv = Server(data_dir=tmp / "data").start()
        try:
            rows += [_row(m) for m in asyncio.run(page_workloads(srv.url, ids, n, size))]
            asyncio.run(make_paged(srv.url, ids))
            # Rounds interleaved on two servers holding the same board: one never paged.
            rounds: dict[str, list[Measurement]] = {"nothing paged": [], "lists paged": []}
            for r in range(4):
                for label, server in (("nothing paged", plain), ("lists paged", srv)):
                    m = asyncio.run(patch_workload(server.url, ids, n // 2,
                                                   f"patch task, {label} ({size})", seed=r))
                    if r:  # the first round warms both up
                        rounds[label].append(m)
            for label, measured in rounds.items():
                merged = Measurement(measured[0].name, "patch")
                for m in measured:
                    merged.ops += m.ops
                    merged.seconds += m.seconds
                    merged.latencies += m.latencies
                rows.append(_row(merged))
        finally:
            srv.stop()
            plain.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps({"rows": rows}, indent=2))
    else:
        print(f"{'workload':58} {'ops':>6} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}  notes")
        for r in rows:
            print(f"{r['workload']:58} {r['ops']:>6} {r['ops_per_s']:>9} {r['p50_ms']:>8} "
                  f"{r['p99_ms']:>8}  {'; '.join(r['notes'])}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
