"""The workloads of the benchmark, run in one sequence against a running server.

The server grows through the API as the run goes on: list filters are measured at three sizes
(full run: 1k, 10k, 50k tasks), the write workloads at the middle size, and everything that
needs a large store at the largest. A probe project holds exactly 10 `in_progress` tasks, so
`?projectId&status` always answers 10 tasks however many the server holds, the way a dashboard
asks for "what is running in this project"."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from .client import (
    HttpConnection,
    HttpError,
    Measurement,
    Meter,
    Target,
    close_pool,
    closed_loop,
    open_pool,
    process_cpu_seconds,
    process_rss_mb,
)
from .consistency import bursts_on_one_task
from .fanout import fanout

STATUSES = (b"pending", b"in_progress", b"blocked", b"completed")
PRIORITIES = (b"low", b"medium", b"high")
BULK_PROJECTS = 10
PROBE_MATCHES = 10


@dataclass(frozen=True)
class Plan:
    """How much of each workload a run does."""

    levels: tuple[int, int, int]  # total tasks at which the list filters are measured
    gets: int
    patches: int
    burst_patches: int
    sessions: int
    timeline: int
    list_one_client: int
    list_concurrent: int
    list_all: int
    ws_clients: tuple[int, ...]
    ws_patches: int
    consistency_rounds: int
    consistency_ops: int


FULL = Plan(levels=(1_000, 10_000, 50_000), gets=60_000, patches=10_000, burst_patches=10_000,
            sessions=3_000, timeline=10_000, list_one_client=3_000, list_concurrent=20_000,
            list_all=15, ws_clients=(50, 1_000), ws_patches=200, consistency_rounds=10,
            consistency_ops=640)
QUICK = Plan(levels=(500, 1_000, 2_000), gets=8_000, patches=3_000, burst_patches=2_000,
             sessions=600, timeline=3_000, list_one_client=500, list_concurrent=3_000,
             list_all=5, ws_clients=(50, 200), ws_patches=200, consistency_rounds=3,
             consistency_ops=320)


def _k(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}"


class Bench:
    """One benchmark run: the connections, what the run created, and the figures."""

    def __init__(self, target: Target, plan: Plan, concurrency: int, server_pid: int | None,
                 data_dir: Path | None, *, token: str | None = None, ws_deflate: bool = False,
                 ws_gap_ms: float = 0.0, seed: int = 1, progress=None):
        self.target = target
        self.plan = plan
        self.concurrency = concurrency
        self.pid = server_pid
        self.data_dir = data_dir
        self.token = token
        self.ws_deflate = ws_deflate
        self.ws_gap_ms = ws_gap_ms
        self.rng = random.Random(seed)
        self.progress = progress or (lambda text: None)
        self.results: list[Measurement] = []
        self.memory: dict[str, float | None] = {}
        self.consistency: dict | None = None
        self.info: dict = {}
        self.conns: list[HttpConnection] = []
        self.one: HttpConnection | None = None
        self.total_tasks = 0
        self.bulk_projects: list[str] = []
        self.bulk_ids: list[str] = []
        self.probe_project = ""

    # ------------------------------------------------------------------ helpers
    async def _call(self, method: bytes, path: str, body=None) -> dict | list:
        data = None if body is None else orjson.dumps(body)
        status, answer = await self.one.request(method, path.encode(), data)
        if status >= 400:
            raise RuntimeError(f"{method.decode()} {path} -> {status}: {answer[:300]!r}")
        return orjson.loads(answer) if answer else {}

    def _add(self, m: Measurement) -> Measurement:
        self.results.append(m)
        p50, p99, rate = m.p(0.5), m.p(0.99), m.ops_per_s
        self.progress(f"{m.name}: {rate or 0:,.0f} ops/s, p50 {p50 or 0:.2f} ms, "
                      f"p99 {p99 or 0:.2f} ms" + (f", {m.errors} errors" if m.errors else ""))
        return m

    def _rss(self, label: str) -> None:
        self.memory[label] = process_rss_mb(self.pid)

    async def settle(self, max_s: float = 30.0) -> None:
        """Wait until the server is idle again (below 10% of a core for half a second), so
        background work of one workload (file writes, a checkpoint) is not billed to the next."""
        if self.pid is None:
            await asyncio.sleep(1.0)
            return
        deadline = time.monotonic() + max_s
        quiet = 0
        before = process_cpu_seconds(self.pid)
        while quiet < 2 and time.monotonic() < deadline and before is not None:
            await asyncio.sleep(0.25)
            now = process_cpu_seconds(self.pid)
            if now is None:
                return
            quiet = quiet + 1 if now - before < 0.025 else 0
            before = now

    async def _count_tasks(self) -> int:
        health = await self._call(b"GET", "/health")
        counts = health.get("counts") if isinstance(health, dict) else None
        if isinstance(counts, dict) and isinstance(counts.get("tasks"), int):
            return counts["tasks"]
        return len(await self._call(b"GET", "/api/tasks"))

    # ------------------------------------------------------------------ set-up
    async def setup(self) -> None:
        self.conns = await open_pool(self.target, self.concurrency)
        self.one = HttpConnection(self.target)
        self.total_tasks = await self._count_tasks()
        self.info["tasks_at_start"] = self.total_tasks
        self._rss(f"at start ({self.total_tasks:,} tasks)")
        run = f"{int(time.time())}"
        for n in range(BULK_PROJECTS):
            p = await self._call(b"POST", "/api/projects",
                                 {"name": f"bench {run} bulk {n}", "workingDir": "/tmp"})
            self.bulk_projects.append(p["id"])
        probe = await self._call(b"POST", "/api/projects",
                                 {"name": f"bench {run} probe", "workingDir": "/tmp"})
        self.probe_project = probe["id"]
        for n in range(2 * PROBE_MATCHES):
            t = await self._call(b"POST", "/api/tasks",
                                 {"projectId": self.probe_project, "title": f"probe {n}"})
            if n < PROBE_MATCHES:
                await self._call(b"PATCH", f"/api/tasks/{t['id']}", {"status": "in_progress"})
        self.total_tasks += 2 * PROBE_MATCHES

    async def close(self) -> None:
        close_pool(self.conns)
        if self.one is not None:
            self.one.close()

    # ------------------------------------------------------------------ workloads
    async def create_tasks(self, until: int, name: str, key: str) -> Measurement | None:
        """Create tasks concurrently (spread over the bulk projects) until the server holds
        `until` tasks."""
        count = until - self.total_tasks
        if count <= 0:
            return None
        projects = [p.encode() for p in self.bulk_projects]
        prios = PRIORITIES
        created = self.bulk_ids

        async def op(conn: HttpConnection, i: int):
            body = b'{"projectId":"%s","title":"Bench task %d","description":"Created by the ' \
                   b'benchmark","priority":"%s"}' % (projects[i % len(projects)], i,
                                                      prios[i % 3])
            return await conn.request(b"POST", b"/api/tasks", body)

        def keep(i: int, status: int, body: bytes) -> None:
            created.append(orjson.loads(body)["id"])

        m = await closed_loop(self.conns, count, op, Measurement(name, key), self.pid, keep)
        self.total_tasks += count - m.errors
        self._add(m)
        await self.settle()
        return m

    async def _ids(self) -> list[str]:
        if not self.bulk_ids:  # a server seeded before this run: use its own tasks
            tasks = await self._call(b"GET", "/api/tasks")
            self.bulk_ids = [t["id"] for t in tasks if t.get("projectId") != self.probe_project]
        return self.bulk_ids

    async def get_by_id(self, n: int) -> Measurement:
        ids = await self._ids()
        paths = [f"/api/tasks/{i}".encode() for i in ids]
        picks = [self.rng.randrange(len(paths)) for _ in range(n)]

        async def op(conn: HttpConnection, i: int):
            return await conn.request(b"GET", paths[picks[i]])

        m = Measurement(f"get task by id ({_k(self.total_tasks)} tasks)",
                        f"get_task_{self.total_tasks}")
        return self._add(await closed_loop(self.conns, n, op, m, self.pid))

    async def patch_random(self, n: int) -> Measurement:
        ids = await self._ids()
        paths = [f"/api/tasks/{i}".encode() for i in ids]
        picks = [self.rng.randrange(len(paths)) for _ in range(n)]

        async def op(conn: HttpConnection, i: int):
            body = b'{"status":"%s","priority":"%s"}' % (STATUSES[i % 4], PRIORITIES[i % 3])
            return await conn.request(b"PATCH", paths[picks[i]], body)

        m = Measurement("patch task (random tasks)", "patch_random")
        return self._add(await closed_loop(self.conns, n, op, m, self.pid))

    async def patch_burst(self, n: int) -> Measurement:
        task = await self._call(b"POST", "/api/tasks",
                                {"projectId": self.bulk_projects[0], "title": "burst target"})
        self.total_tasks += 1
        path = f"/api/tasks/{task['id']}".encode()

        async def op(conn: HttpConnection, i: int):
            body = b'{"description":"burst %d","status":"%s"}' % (i, STATUSES[i % 4])
            return await conn.request(b"PATCH", path, body)

        m = Measurement(f"patch task (bursts on one task, {self.concurrency} at once)",
                        "patch_one_task")
        return self._add(await closed_loop(self.conns, n, op, m, self.pid))

    async def create_sessions(self, n: int) -> Measurement:
        ids = list(await self._ids())
        self.rng.shuffle(ids)
        encoded = [i.encode() for i in ids]
        project = self.bulk_projects[0].encode()

        async def op(conn: HttpConnection, i: int):
            base = 5 * i
            linked = b'","'.join(encoded[(base + k) % len(encoded)] for k in range(5))
            body = b'{"projectId":"%s","name":"bench session %d","taskIds":["%s"]}' % (
                project, i, linked)
            return await conn.request(b"POST", b"/api/sessions", body)

        m = Measurement("create session linking 5 tasks", "create_session")
        return self._add(await closed_loop(self.conns, n, op, m, self.pid))

    async def append_timeline(self, n: int) -> Measurement:
        ids = await self._ids()
        paths = [f"/api/tasks/{i}/timeline".encode() for i in ids]
        picks = [self.rng.randrange(len(paths)) for _ in range(n)]

        async def op(conn: HttpConnection, i: int):
            body = b'{"message":"progress %d: step done","type":"update"}' % i
            return await conn.request(b"POST", paths[picks[i]], body)

        m = Measurement("append to a timeline", "timeline_append")
        return self._add(await closed_loop(self.conns, n, op, m, self.pid))

    async def list_filtered(self, n: int, concurrent: bool) -> Measurement:
        path = f"/api/tasks?projectId={self.probe_project}&status=in_progress".encode()
        conns = self.conns if concurrent else [self.one]
        status, body = await self.one.request(b"GET", path)
        found = len(orjson.loads(body)) if status == 200 else -1

        async def op(conn: HttpConnection, i: int):
            return await conn.request(b"GET", path)

        who = f"{len(conns)} concurrent" if concurrent else "one client"
        m = Measurement(f"list ?projectId&status at {_k(self.total_tasks)} tasks, {who}",
                        f"list_filtered_{self.total_tasks}_c{len(conns)}")
        m.notes.append(f"{found} tasks, {len(body):,} B per answer")
        return self._add(await closed_loop(conns, n, op, m, self.pid))

    async def list_all(self, n: int) -> Measurement:
        status, body = await self.one.request(b"GET", b"/api/tasks")
        size = len(body)
        count = len(orjson.loads(body)) if status == 200 else -1
        del body

        async def op(conn: HttpConnection, i: int):
            return await conn.request(b"GET", b"/api/tasks")

        m = Measurement(f"list all {_k(self.total_tasks)} tasks, one client",
                        f"list_all_{self.total_tasks}")
        m.notes.append(f"{count:,} tasks, {size / 1e6:.1f} MB per answer")
        return self._add(await closed_loop([self.one], n, op, m, self.pid))

    async def websocket_fanout(self, clients: int) -> Measurement:
        task = await self._call(b"POST", "/api/tasks",
                                {"projectId": self.bulk_projects[-1], "title": "fan-out target"})
        self.total_tasks += 1
        m = await fanout(self.target, self.one, task["id"], clients, self.plan.ws_patches,
                         self.pid, deflate=self.ws_deflate, token=self.token,
                         gap_ms=self.ws_gap_ms)
        if self.ws_deflate:
            m.name += " (permessage-deflate)"
        return self._add(m)

    async def consistency_check(self) -> Measurement | None:
        if self.data_dir is None:
            self.consistency = {"skipped": "no --data-dir given"}
            return None
        m, self.consistency = await bursts_on_one_task(
            self.conns, self.data_dir, self.bulk_projects[0], self.plan.consistency_rounds,
            self.plan.consistency_ops, self.pid)
        self.total_tasks += 1
        return self._add(m)

    # ------------------------------------------------------------------ the run
    async def run(self, only: set[str] | None = None) -> None:
        """Every workload in order; `only` limits the run to some groups (see GROUPS)."""
        plan = self.plan

        def want(group: str) -> bool:
            return only is None or group in only

        small, middle, large = plan.levels
        await self.setup()
        with Meter(self.pid) as total:
            await self.create_tasks(small, f"create task (seed to {_k(small)})", "seed_small")
            if want("list"):
                await self.list_filtered(plan.list_one_client, concurrent=False)
            await self.create_tasks(middle, f"create task ({_k(small)} -> {_k(middle)})",
                                    "create_task")
            self._rss(f"at {self.total_tasks:,} tasks")
            if want("list"):
                await self.list_filtered(plan.list_one_client, concurrent=False)
            if want("read"):
                await self.get_by_id(plan.gets)
            if want("write"):
                await self.patch_random(plan.patches)
                await self.patch_burst(plan.burst_patches)
                await self.create_sessions(plan.sessions)
                await self.append_timeline(plan.timeline)
            await self.create_tasks(large, f"create task ({_k(middle)} -> {_k(large)})",
                                    "seed_large")
            self._rss(f"at {self.total_tasks:,} tasks")
            if want("list"):
                await self.list_filtered(plan.list_one_client, concurrent=False)
                await self.list_filtered(plan.list_concurrent, concurrent=True)
            if want("read"):
                await self.get_by_id(plan.gets)
            if want("list"):
                await self.list_all(plan.list_all)
            self._rss(f"after list all ({self.total_tasks:,} tasks)")
            if want("ws"):
                for clients in plan.ws_clients:
                    await self.settle()
                    await self.websocket_fanout(clients)
            if want("disk"):
                await self.settle()
                await self.consistency_check()
            self._rss(f"at the end ({self.total_tasks:,} tasks)")
        self.info["total_seconds"] = round(total.seconds, 2)
        self.info["total_client_cpu_s"] = round(total.client_cpu, 2)
        self.info["total_server_cpu_s"] = None if total.server_cpu is None \
            else round(total.server_cpu, 2)
        self.info["tasks_at_end"] = self.total_tasks


async def wait_until_up(target: Target, timeout_s: float) -> None:
    """Poll GET /health until it answers 200."""
    deadline = time.monotonic() + timeout_s
    conn = HttpConnection(target)
    last = "no answer"
    try:
        while True:
            try:
                status, body = await conn.request(b"GET", b"/health")
                if status == 200:
                    return
                if status in (401, 403, 421):
                    answer = body[:200].decode(errors="replace")
                    raise RuntimeError(f"GET /health -> {status} {answer} (a token is passed "
                                       "with --token or MAESTRO_TOKEN)")
                last = f"status {status}"
            except (OSError, HttpError, ValueError):
                conn.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{last} from {target.host}:{target.port}/health")
            await asyncio.sleep(0.05)
    finally:
        conn.close()
