"""`python -m bench.append`: what an append costs as the entity it goes to grows.

Agents append all day: session events (`POST /api/sessions/:id/events`, one per edited file),
session timeline entries and task timeline entries (`POST /api/tasks/:id/timeline`). This
benchmark appends to empty entities and to entities that already hold 10k entries (seeded with
a few large PATCHes), with 32 concurrent keep-alive connections and with one, and measures an
unrelated GET while 32 clients append to one big session. Like `python -m bench` it drives a
running server and starts nothing itself; a fresh data directory per run keeps it comparable.

With `--pid`, the CPU of the server and of its store process (its child) is reported per
append, and what the store process wrote per append (journal and entity files, from
/proc/PID/io)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from pathlib import Path

import orjson

from .client import (
    HttpConnection,
    Measurement,
    Meter,
    Target,
    close_pool,
    closed_loop,
    open_pool,
    process_cpu_seconds,
    process_rss_mb,
)

SEED_CHUNK = 2_000  # entries per seeding PATCH (~300 KB body, under the 1 MiB limit)


@dataclasses.dataclass(frozen=True)
class Plan:
    entries: int  # entries in a "big" entity
    entities: int  # entities appended to in the spread workloads (one per connection)
    ops: int  # appends per concurrent workload
    ops_one: int  # appends per one-client workload
    gets: int  # minimum GETs in the unrelated-GET workload


FULL = Plan(entries=10_000, entities=32, ops=4_000, ops_one=600, gets=2_000)
QUICK = Plan(entries=10_000, entities=8, ops=1_000, ops_one=200, gets=500)


def child_pids(pid: int | None) -> list[int]:
    """Direct children of `pid` (the store process), from /proc."""
    if pid is None:
        return []
    found: list[int] = []
    try:  # listed by the thread that started it (the store opens in a worker thread)
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return found


def written_bytes(pids: list[int]) -> int | None:
    """Bytes the processes passed to write calls so far (`wchar` of /proc/PID/io): for the
    store process, the journal and the entity files."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io", "rb") as f:
                for line in f:
                    if line.startswith(b"wchar:"):
                        total += int(line.split()[1])
        except OSError:
            return None
    return total


class AppendBench:
    """One run: the entities it made, the connections and the figures."""

    def __init__(self, target: Target, plan: Plan, concurrency: int, pid: int | None,
                 minimal: bool, progress):
        self.target = target
        self.minimal_target = dataclasses.replace(
            target, fixed_headers=target.fixed_headers + b"Prefer: return=minimal\r\n")
        self.plan = plan
        self.concurrency = concurrency
        self.pid = pid
        self.minimal = minimal
        self.progress = progress
        self.results: list[Measurement] = []
        self.info: dict = {}
        self.one: HttpConnection | None = None
        self.project = ""

    async def _call(self, method: bytes, path: str, body=None):
        data = None if body is None else orjson.dumps(body)
        status, answer = await self.one.request(method, path.encode(), data)
        if status >= 400:
            raise RuntimeError(f"{method.decode()} {path} -> {status}: {answer[:300]!r}")
        return orjson.loads(answer) if answer else {}

    def _add(self, m: Measurement) -> Measurement:
        self.results.append(m)
        self.progress(f"{m.name}: {m.ops_per_s or 0:,.0f} ops/s, p50 {m.p(0.5) or 0:.2f} ms, "
                      f"p99 {m.p(0.99) or 0:.2f} ms" + (f", {m.errors} errors" if m.errors else ""))
        return m

    async def settle(self) -> None:
        """Wait for the server and its store process to be idle (a checkpoint of the last
        workload must not be billed to the next)."""
        if self.pid is None:
            await asyncio.sleep(1.5)
            return
        pids = [self.pid, *child_pids(self.pid)]

        def cpu() -> float:
            return sum(process_cpu_seconds(p) or 0.0 for p in pids)

        quiet, before = 0, cpu()
        deadline = time.monotonic() + 30
        while quiet < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            now = cpu()
            quiet = quiet + 1 if now - before < 0.02 else 0
            before = now

    # ------------------------------------------------------------------ set-up
    async def setup(self) -> None:
        self.one = HttpConnection(self.target)
        project = await self._call(b"POST", "/api/projects",
                                   {"name": f"append bench {int(time.time())}",
                                    "workingDir": "/tmp"})
        self.project = project["id"]
        self.probe = (await self._call(b"POST", "/api/tasks",
                                       {"projectId": self.project, "title": "GET probe"}))["id"]

    async def new_sessions(self, n: int) -> list[str]:
        task = await self._call(b"POST", "/api/tasks",
                                {"projectId": self.project, "title": "session anchor"})
        out = []
        for _ in range(n):
            s = await self._call(b"POST", "/api/sessions",
                                 {"projectId": self.project, "taskIds": [task["id"]]})
            out.append(s["id"])
        return out

    async def new_tasks(self, n: int) -> list[str]:
        out = []
        for i in range(n):
            t = await self._call(b"POST", "/api/tasks",
                                 {"projectId": self.project, "title": f"timeline target {i}"})
            out.append(t["id"])
        return out

    async def seed_sessions(self, ids: list[str], entries: int) -> None:
        """Give each session `entries` events (PATCH with `events`, SEED_CHUNK at a time)."""
        for sid in ids:
            for start in range(0, entries, SEED_CHUNK):
                chunk = [{"type": "file_modified",
                          "data": {"file": f"src/app/module_{start + k}.py",
                                   "timestamp": "2025-01-01T00:00:00.000Z"}}
                         for k in range(min(SEED_CHUNK, entries - start))]
                await self._call(b"PATCH", f"/api/sessions/{sid}", {"events": chunk})

    async def seed_tasks(self, ids: list[str], entries: int) -> None:
        for tid in ids:
            for start in range(0, entries, SEED_CHUNK):
                chunk = [{"type": "update", "message": f"seeded step {start + k} done"}
                         for k in range(min(SEED_CHUNK, entries - start))]
                await self._call(b"PATCH", f"/api/tasks/{tid}", {"timeline": chunk})

    # ------------------------------------------------------------------ workloads
    async def appends(self, name: str, key: str, paths: list[bytes], body: bytes, n: int,
                      connections: int, minimal: bool = False) -> Measurement:
        """`n` appends spread round-robin over `paths`, on `connections` connections."""
        target = self.minimal_target if minimal else self.target
        conns = await open_pool(target, connections)
        sizes: list[int] = []

        async def op(conn: HttpConnection, i: int):
            return await conn.request(b"POST", paths[i % len(paths)], body % i)

        def keep(i: int, status: int, answer: bytes) -> None:
            if len(sizes) < 50:
                sizes.append(len(answer))

        children = child_pids(self.pid)
        helper0 = sum(process_cpu_seconds(p) or 0.0 for p in children)
        written0 = written_bytes(children)
        m = Measurement(name + (" [Prefer: return=minimal]" if minimal else ""),
                        key + ("_minimal" if minimal else ""))
        try:
            await closed_loop(conns, n, op, m, self.pid, keep)
        finally:
            close_pool(conns)
        # Work the store defers (a checkpoint once idle) is billed to this workload too.
        await asyncio.sleep(1.5)
        await self.settle()
        helper = sum(process_cpu_seconds(p) or 0.0 for p in children) - helper0
        written1 = written_bytes(children)
        if sizes:
            m.notes.append(f"answer {sum(sizes) / len(sizes) / 1e3:,.1f} kB")
        if m.server_cpu is not None:
            m.notes.append(f"server {m.server_cpu / n * 1e6:,.0f} us/append")
        if children:
            m.notes.append(f"store process {helper / n * 1e6:,.0f} us/append")
        if children and written0 is not None and written1 is not None:
            m.notes.append(f"store process wrote {(written1 - written0) / n / 1e3:,.1f} "
                           "kB/append")
        return self._add(m)

    async def get_during_appends(self, session: str, n_appends: int, minimal: bool = False
                                 ) -> tuple[Measurement, Measurement]:
        """32 clients append to one big session while one more client GETs a small task in a
        loop; the GET latencies are the figure (and the appenders' throughput)."""
        target = self.minimal_target if minimal else self.target
        conns = await open_pool(target, self.concurrency)
        getter = HttpConnection(self.target)
        path = f"/api/sessions/{session}/events".encode()
        probe = f"/api/tasks/{self.probe}".encode()
        body = b'{"type":"file_modified","data":{"file":"src/busy_%d.py"}}'
        suffix = " [Prefer: return=minimal]" if minimal else ""
        gets = Measurement(f"GET a small task while {self.concurrency} clients append to one "
                           f"{self.plan.entries // 1000}k-event session{suffix}",
                           "get_during_appends" + ("_minimal" if minimal else ""))
        appends = Measurement(f"  the {self.concurrency} appenders meanwhile{suffix}",
                              "appends_under_get" + ("_minimal" if minimal else ""))
        done = asyncio.Event()
        await getter.request(b"GET", probe)  # connected before the clock starts

        async def get_loop() -> None:
            perf = time.perf_counter
            while not done.is_set() or len(gets.latencies) < self.plan.gets:
                t0 = perf()
                status, answer = await getter.request(b"GET", probe)
                gets.latencies.append(perf() - t0)
                if status >= 400:
                    gets.errors += 1
                await asyncio.sleep(0.001)  # a reader polling, not a flood

        async def op(conn: HttpConnection, i: int):
            return await conn.request(b"POST", path, body % i)

        try:
            with Meter(self.pid) as meter:
                reader = asyncio.create_task(get_loop())
                await closed_loop(conns, n_appends, op, appends, self.pid)
                done.set()
                await reader
            meter.fill(gets)
            gets.ops = len(gets.latencies)
        finally:
            close_pool(conns)
            getter.close()
        gets.concurrency = 1
        worst = max(gets.latencies, default=0.0) * 1000
        gets.notes.append(f"{gets.ops:,} GETs, one every ~1 ms; slowest {worst:.1f} ms")
        self._add(gets)
        self._add(appends)
        return gets, appends

    # ------------------------------------------------------------------ the run
    async def run(self) -> None:
        plan = self.plan
        c = self.concurrency
        await self.setup()
        big_k = f"{plan.entries // 1000}k"
        self.progress(f"creating {plan.entities} sessions and {plan.entities} tasks")
        big_sessions = await self.new_sessions(plan.entities)
        big_tasks = await self.new_tasks(plan.entities)
        self.progress(f"seeding {plan.entities} sessions and {plan.entities} tasks with "
                      f"{plan.entries:,} entries each")
        t0 = time.perf_counter()
        await self.seed_sessions(big_sessions, plan.entries)
        await self.seed_tasks(big_tasks, plan.entries)
        self.info["seed_seconds"] = round(time.perf_counter() - t0, 2)
        self.info["rss_after_seed_mb"] = process_rss_mb(self.pid)
        session_body = b'{"type":"file_modified","data":{"file":"src/app/edited_%d.py",' \
                       b'"timestamp":"2025-01-01T00:00:00.000Z"}}'
        timeline_body = b'{"message":"progress %d: step done","type":"update"}'

        def ev(ids: list[str]) -> list[bytes]:
            return [f"/api/sessions/{i}/events".encode() for i in ids]

        def tl(ids: list[str]) -> list[bytes]:
            return [f"/api/tasks/{i}/timeline".encode() for i in ids]

        variants = [False, True] if self.minimal else [False]
        for minimal in variants:
            # "Empty" entities are made afresh for each workload, so they stay small (each
            # ends with ops / entities entries).
            await self.settle()
            await self.appends(f"session event, empty sessions, {c} clients", "event_empty_c",
                               ev(await self.new_sessions(plan.entities)), session_body,
                               plan.ops, c, minimal)
            await self.settle()
            await self.appends(f"session event, {big_k}-event sessions, {c} clients",
                               "event_big_c", ev(big_sessions), session_body, plan.ops, c,
                               minimal)
            await self.settle()
            await self.appends("session event, empty session, 1 client", "event_empty_1",
                               ev(await self.new_sessions(1)), session_body, plan.ops_one, 1,
                               minimal)
            await self.settle()
            await self.appends(f"session event, {big_k}-event session, 1 client",
                               "event_big_1", ev(big_sessions[:1]), session_body,
                               plan.ops_one, 1, minimal)
            await self.settle()
            await self.appends(f"task timeline, empty tasks, {c} clients", "timeline_empty_c",
                               tl(await self.new_tasks(plan.entities)), timeline_body,
                               plan.ops, c, minimal)
            await self.settle()
            await self.appends(f"task timeline, {big_k}-entry tasks, {c} clients",
                               "timeline_big_c", tl(big_tasks), timeline_body, plan.ops, c,
                               minimal)
            await self.settle()
            await self.get_during_appends(big_sessions[0], plan.ops, minimal)
        self.info["rss_at_end_mb"] = process_rss_mb(self.pid)

    async def close(self) -> None:
        if self.one is not None:
            self.one.close()


def markdown(results: list[Measurement], info: dict) -> str:
    lines = ["| workload | ops/s | p50 ms | p99 ms | notes |", "| --- | ---: | ---: | ---: | --- |"]
    for m in results:
        notes = list(m.notes)
        if m.errors:
            notes.append(f"{m.errors} errors, first: {m.first_error}")
        rate = m.ops_per_s
        lines.append(f"| {m.name} | {'-' if rate is None else f'{rate:,.0f}'} | "
                     f"{m.p(0.5) or 0:.2f} | {m.p(0.99) or 0:.2f} | {'; '.join(notes)} |")
    lines.append("")
    lines.append(f"Seeding took {info.get('seed_seconds')} s; server RSS after seeding "
                 f"{info.get('rss_after_seed_mb') or 0:.0f} MB, at the end "
                 f"{info.get('rss_at_end_mb') or 0:.0f} MB; load average "
                 f"{info.get('loadavg_at_start')} at start, {info.get('loadavg_at_end')} at the "
                 "end.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.append",
        description="Append to empty and to big sessions and tasks on a running server, and "
                    "time an unrelated GET while 32 clients append to one big session.",
        epilog="Example: DATA_DIR=$(mktemp -d)/data PORT=3000 maestro serve & "
               "python -m bench.append --url http://127.0.0.1:3000 --pid $!")
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--pid", type=int, help="server process id (CPU per append)")
    parser.add_argument("--token", default=os.environ.get("MAESTRO_TOKEN"))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--entries", type=int, help="entries of a big entity (default 10000)")
    parser.add_argument("--quick", action="store_true", help="fewer entities and appends")
    parser.add_argument("--minimal", action="store_true",
                        help="also run every workload with `Prefer: return=minimal`")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--save", type=Path, metavar="FILE", help="also write the JSON there")
    parser.add_argument("--no-uvloop", action="store_true")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> int:
    from .workloads import wait_until_up

    target = Target.from_url(args.url, args.token)
    await wait_until_up(target, 10.0)
    plan = QUICK if args.quick else FULL
    if args.entries:
        plan = dataclasses.replace(plan, entries=args.entries)

    def progress(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    bench = AppendBench(target, plan, args.concurrency, args.pid, args.minimal, progress)
    bench.info.update({"url": args.url, "plan": dataclasses.asdict(plan),
                       "concurrency": args.concurrency,
                       "loadavg_at_start": round(os.getloadavg()[0], 2)})
    try:
        await bench.run()
    finally:
        await bench.close()
    bench.info["loadavg_at_end"] = round(os.getloadavg()[0], 2)
    doc = {"info": bench.info, "results": [m.as_dict() for m in bench.results]}
    encoded = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    if args.save is not None:
        args.save.write_text(encoded)
    print(encoded if args.json else markdown(bench.results, bench.info))
    return 1 if any(m.errors for m in bench.results) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.no_uvloop:
        try:
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        print(f"bench.append: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
