"""`python -m bench.coordination`: the coordination workloads of SPEC §15, on servers it starts
itself (a temporary data directory, or a fresh schema of `--database-url`):

- ready list: `GET /api/tasks?ready=true&projectId=P` on a server holding 50k tasks with 10k
  dependency edges (written as a data directory before the start), for a probe project whose
  answer is ~20 tasks and for a 1,000-task project;
- claim-next: 64 sessions on 64 connections claiming 2,000 ready tasks until none is left,
  counting double grants, on the file store and (with `--database-url`) on PostgreSQL;
- create and patch tasks with dependencies against the same without, rounds interleaved.

Prints a table (or `--json`). Never part of the test suite; run it on a quiet machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import orjson

from .client import HttpConnection, Measurement, Target, close_pool, closed_loop, open_pool

ROOT = Path(__file__).resolve().parent.parent
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


# ---------------------------------------------------------------------------- servers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CpuCap:
    """A CPU budget for one server and the processes it starts (its store helper): a cgroup of
    its own with a CFS quota of `cores` (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`).
    Several replicas, each with its own budget, stand in for replicas on machines of their own
    on one machine whose PostgreSQL and client are left uncapped."""

    def __init__(self, name: str, cores: float):
        self.cores = cores
        v2 = Path("/sys/fs/cgroup")
        v1 = Path("/sys/fs/cgroup/cpu")
        leaf = f"maestro-bench-{name}-{os.getpid()}"
        controllers = v2 / "cgroup.controllers"
        if controllers.exists() and "cpu" in controllers.read_text().split():
            self.path = v2 / leaf
            self.path.mkdir()
            (self.path / "cpu.max").write_text(f"{int(cores * 100_000)} 100000")
        elif (v1 / "cpu.cfs_quota_us").exists():
            self.path = v1 / leaf
            self.path.mkdir()
            (self.path / "cpu.cfs_period_us").write_text("100000")
            (self.path / "cpu.cfs_quota_us").write_text(str(int(cores * 100_000)))
        else:
            raise RuntimeError("no writable cgroup CPU controller (cgroup v2 cpu.max or v1 "
                               "cpu.cfs_quota_us) on this machine: --replica-cpu needs one")

    def enter(self) -> None:
        """Move the calling process into the budget (its children follow)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def throttled_seconds(self) -> float:
        """How long the budget held its processes back so far."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_usec":
                return int(value) / 1e6
            if key == "throttled_time":
                return int(value) / 1e9
        return 0.0

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)  # its processes are still exiting


class Server:
    """A `maestro serve` subprocess on a temporary directory (and optional database)."""

    def __init__(self, env: dict | None = None, data_dir: Path | None = None,
                 cpu: CpuCap | None = None):
        self.cpu = cpu
        self.tmp = Path(tempfile.mkdtemp(prefix="maestro-coord-bench-"))
        self.data_dir = data_dir or self.tmp / "data"
        self.port = _free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
        self.env.update({"PORT": str(self.port), "HOST": "127.0.0.1",
                         "DATA_DIR": str(self.data_dir), "SESSION_DIR": str(self.tmp / "s"),
                         "LOG_LEVEL": "warn", "MAESTRO_LAUNCHER": "ui"})
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "Server":
        self.log = open(self.tmp / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "maestro", "serve"], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                     preexec_fn=self.cpu.enter if self.cpu else None)
        deadline = time.monotonic() + timeout
        import httpx
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.tmp / "server.log").read_text()[-2000:])
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(60)
        self.log.close()
        if self.cpu is not None:
            self.cpu.remove()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _id(rng: random.Random, prefix: str, ms: int) -> str:
    return f"{prefix}_{ms}_{''.join(rng.choice(ALPHABET) for _ in range(9))}"


def write_board(root: Path, tasks: int, edges: int, projects: int, seed: int = 11) -> dict:
    """A data directory of `tasks` tasks in `projects` projects plus a 100-task probe project,
    `edges` dependency edges (towards earlier tasks of the same project: acyclic) and a mix
    of statuses. Returns the probe and one bulk project id."""
    rng = random.Random(seed)
    base = 1_700_000_000_000
    (root / "projects").mkdir(parents=True)
    (root / "sessions").mkdir()
    ids_by_project: dict[str, list[str]] = {}
    project_ids = []
    for p in range(projects + 1):
        pid = _id(rng, "proj", base + p)
        project_ids.append(pid)
        ids_by_project[pid] = []
        (root / "projects" / f"{pid}.json").write_text(json.dumps(
            {"id": pid, "name": f"P{p}", "workingDir": "", "description": "",
             "createdAt": base + p, "updatedAt": base + p}, indent=2))
    probe = project_ids[0]
    counts = {probe: 100}
    rest = tasks - 100
    for pid in project_ids[1:]:
        counts[pid] = rest // projects
    deps_of: dict[str, list[str]] = {}
    statuses: dict[str, str] = {}
    order = []
    ms = base + 1000
    for pid, n in counts.items():
        for _ in range(n):
            ms += 1
            tid = _id(rng, "task", ms)
            ids_by_project[pid].append(tid)
            deps_of[tid] = []
            statuses[tid] = rng.choices(["pending", "completed", "in_progress"],
                                        [70, 20, 10])[0]
            order.append((pid, tid, ms))
    probe_edges = 30
    for i in range(edges):
        pid = probe if i < probe_edges else rng.choice(project_ids[1:])
        members = ids_by_project[pid]
        j = rng.randrange(1, len(members))
        upstream = members[rng.randrange(j)]
        if upstream not in deps_of[members[j]]:
            deps_of[members[j]].append(upstream)
    for pid, tid, created in order:
        folder = root / "tasks" / pid
        folder.mkdir(parents=True, exist_ok=True)
        task = {"id": tid, "projectId": pid, "parentId": None, "title": f"Task {tid[-4:]}",
                "description": "", "initialPrompt": "", "status": statuses[tid],
                "priority": rng.choice(["low", "medium", "high"]), "sessionIds": [],
                "skillIds": [], "agentIds": [], "dependencies": deps_of[tid],
                "timeline": [{"id": _id(rng, "evt", created), "type": "created",
                              "timestamp": created, "message": "Task created"}],
                "createdAt": created, "updatedAt": created, "startedAt": None,
                "completedAt": None}
        (folder / f"{tid}.json").write_bytes(orjson.dumps(task, option=orjson.OPT_INDENT_2))
    return {"probe": probe, "bulk": project_ids[1], "bulk_size": counts[project_ids[1]]}


# ---------------------------------------------------------------------------- workloads
async def _call(conn: HttpConnection, method: str, path: str, body=None):
    raw = orjson.dumps(body) if body is not None else None
    status, data = await conn.request(method.encode(), path.encode(), raw)
    if status >= 400:
        raise RuntimeError(f"{method} {path}: {status} {data[:200]!r}")
    return orjson.loads(data)


async def ready_list(url: str, project: str, n: int, label: str) -> Measurement:
    conns = await open_pool(Target.from_url(url), 1)
    path = f"/api/tasks?ready=true&projectId={project}".encode()
    answer = await _call(conns[0], "GET", path.decode())

    async def op(conn, i):
        return await conn.request(b"GET", path)

    for _ in range(200):  # warm-up
        await conns[0].request(b"GET", path)
    m = await closed_loop(conns, n, op, Measurement(label, "ready_list"), None)
    m.notes.append(f"{len(answer)} ready tasks in the answer")
    close_pool(conns)
    return m


async def claim_next(url: str, tasks: int, sessions: int, label: str) -> tuple[Measurement, int]:
    """Claims/s of `sessions` concurrent sessions over `tasks` ready tasks; double grants."""
    target = Target.from_url(url)
    setup = await open_pool(target, 16)
    pid = (await _call(setup[0], "POST", "/api/projects", {"name": "claims"}))["id"]

    async def make(conn, count, kind):
        out = []
        for i in range(count):
            if kind == "task":
                out.append((await _call(conn, "POST", "/api/tasks",
                                        {"projectId": pid, "title": f"t{i}"}))["id"])
            else:
                out.append((await _call(conn, "POST", "/api/sessions",
                                        {"projectId": pid, "taskIds": []}))["id"])
        return out

    per = tasks // len(setup)
    await asyncio.gather(*(make(c, per, "task") for c in setup))
    sids = [s for part in await asyncio.gather(*(make(c, sessions // len(setup), "session")
                                                 for c in setup)) for s in part]
    close_pool(setup)
    conns = await open_pool(target, len(sids))
    granted: list[str] = []
    latencies: list[float] = []
    m = Measurement(label, "claim_next")
    from .client import Meter

    async def worker(conn, sid):
        path = f"/api/projects/{pid}/claim-next".encode()
        body = orjson.dumps({"sessionId": sid})
        while True:
            t0 = time.perf_counter()
            status, data = await conn.request(b"POST", path, body)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                m.errors += 1
                return
            task = orjson.loads(data)["task"]
            if task is None:
                return
            granted.append(task["id"])

    with Meter(None) as meter:
        await asyncio.gather(*(worker(c, s) for c, s in zip(conns, sids)))
    meter.fill(m)
    m.latencies = latencies
    m.ops = len(granted)
    m.concurrency = len(sids)
    close_pool(conns)
    doubles = len(granted) - len(set(granted))
    m.notes.append(f"{len(granted)} grants of {per * len(setup)} tasks, {doubles} double")
    return m, doubles


async def create_patch(url: str, n: int, rounds: int) -> list[Measurement]:
    """Create and patch tasks with dependencies vs without, rounds interleaved."""
    target = Target.from_url(url)
    conns = await open_pool(target, 32)
    pid = (await _call(conns[0], "POST", "/api/projects", {"name": "deps"}))["id"]
    async def anchor_batch(conn):
        return [(await _call(conn, "POST", "/api/tasks",
                             {"projectId": pid, "title": "anchor"}))["id"] for _ in range(63)]

    # Tasks without dependencies of their own: edges towards them never close a cycle.
    anchors = [t for part in await asyncio.gather(*(anchor_batch(c) for c in conns))
               for t in part]
    rng = random.Random(3)
    results: dict[str, list[Measurement]] = {}
    made: list[str] = []

    def keep(i, status, body):
        made.append(orjson.loads(body)["id"])

    for r in range(rounds):
        for with_deps in (False, True):
            bodies = [orjson.dumps({"projectId": pid, "title": f"t{i}", **(
                {"dependencies": rng.sample(anchors, 2)} if with_deps else {})})
                for i in range(n)]

            async def create(conn, i, bodies=bodies):
                return await conn.request(b"POST", b"/api/tasks", bodies[i])

            name = "create task " + ("with 2 dependencies" if with_deps else "without")
            m = await closed_loop(conns, n, create, Measurement(name, "create"), None, keep)
            results.setdefault(name, []).append(m)
        for with_deps in (False, True):
            targets = [f"/api/tasks/{rng.choice(made)}".encode() for _ in range(n)]
            bodies = [orjson.dumps({"priority": rng.choice(["low", "medium", "high"]), **(
                {"dependencies": rng.sample(anchors, 2)} if with_deps else {})})
                for _ in range(n)]

            async def patch(conn, i, bodies=bodies, targets=targets):
                return await conn.request(b"PATCH", targets[i], bodies[i])

            name = "patch task " + ("with 2 dependencies" if with_deps else "without")
            results.setdefault(name, []).append(
                await closed_loop(conns, n, patch, Measurement(name, "patch"), None))
    close_pool(conns)
    out = []
    for name, ms in results.items():
        merged = Measurement(name, ms[0].key, concurrency=32)
        for m in ms:
            merged.latencies += m.latencies
            merged.ops += m.ops
            merged.seconds += m.seconds
            merged.errors += m.errors
        out.append(merged)
    return out


# ---------------------------------------------------------------------------- main
def source_path(tree: str) -> str:
    """The folder to put on PYTHONPATH to run the server from `tree`: a checkout of Maestro
    (its `src/`) or that `src/` itself. SystemExit when neither holds the `maestro` package
    (else the installed one would run, silently)."""
    root = Path(tree).resolve()
    for candidate in (root / "src", root):
        if (candidate / "maestro" / "__init__.py").is_file():
            return str(candidate)
    raise SystemExit(f"--maestro-src {tree}: no maestro package there or in its src/")


def _row(m: Measurement) -> dict:
    return {"workload": m.name, "ops": m.ops, "ops_per_s": round(m.ops_per_s or 0, 1),
            "p50_ms": round(m.p(0.5) or 0, 3), "p99_ms": round(m.p(0.99) or 0, 3),
            "errors": m.errors, "notes": m.notes}


def _schema_url(dsn: str) -> tuple[str, str]:
    schema = f"maestro_bench_{secrets.token_hex(4)}"
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in dsn else "?"
    return schema, dsn + sep + urllib.parse.urlencode({"options": f"-csearch_path={schema}"})


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coordination", description=__doc__)
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--edges", type=int, default=10_000)
    parser.add_argument("--database-url", default=os.environ.get("MAESTRO_BENCH_DATABASE_URL"),
                        help="PostgreSQL to measure claim-next on as well (a schema is made "
                             "and dropped)")
    parser.add_argument("--quick", action="store_true", help="smaller figures, ~1 minute")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    doubles_total = 0
    n_ready = 500 if args.quick else 3000
    n_patch = 500 if args.quick else 2000

    tmp = Path(tempfile.mkdtemp(prefix="maestro-coord-board-"))
    started = time.perf_counter()
    ids = write_board(tmp / "data", args.tasks, args.edges, projects=50)
    print(f"wrote {args.tasks} tasks, {args.edges} edges in "
          f"{time.perf_counter() - started:.1f}s", file=sys.stderr)
    srv = Server(data_dir=tmp / "data").start()
    try:
        rows.append(_row(asyncio.run(ready_list(
            srv.url, ids["probe"], n_ready,
            f"GET ?ready=true&projectId (probe project, {args.tasks // 1000}k tasks)"))))
        rows.append(_row(asyncio.run(ready_list(
            srv.url, ids["bulk"], max(100, n_ready // 10),
            f"GET ?ready=true&projectId ({ids['bulk_size']}-task project, "
            f"{args.tasks // 1000}k tasks)"))))
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    srv = Server().start()
    try:
        m, doubles = asyncio.run(claim_next(srv.url, 2000, 64, "claim-next, 64 sessions (files)"))
        rows.append(_row(m))
        doubles_total += doubles
        for m in asyncio.run(create_patch(srv.url, n_patch, 2)):
            rows.append(_row(m))
    finally:
        srv.stop()

    if args.database_url:
        schema, url = _schema_url(args.database_url)
        srv = Server(env={"DATABASE_TYPE": "postgres", "DATABASE_URL": url}).start()
        try:
            m, doubles = asyncio.run(claim_next(srv.url, 2000, 64,
                                                "claim-next, 64 sessions (postgres)"))
            rows.append(_row(m))
            doubles_total += doubles
        finally:
            srv.stop()
            _drop_schema(args.database_url, schema)

    by_name = {r["workload"]: r for r in rows}
    for kind in ("create", "patch"):
        plain = by_name.get(f"{kind} task without")
        deps = by_name.get(f"{kind} task with 2 dependencies")
        if plain and deps:
            deps["notes"].append(f"p50 {100 * (deps['p50_ms'] / plain['p50_ms'] - 1):+.1f}%, "
                                 f"ops/s {100 * (deps['ops_per_s'] / plain['ops_per_s'] - 1):+.1f}%"
                                 " vs without")
    if args.json:
        print(json.dumps({"rows": rows, "doubleGrants": doubles_total}, indent=2))
    else:
        print(f"{'workload':58} {'ops':>6} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}  notes")
        for r in rows:
            print(f"{r['workload']:58} {r['ops']:>6} {r['ops_per_s']:>9} {r['p50_ms']:>8} "
                  f"{r['p99_ms']:>8}  {'; '.join(r['notes'])}")
        print(f"double grants: {doubles_total}")
    return 1 if doubles_total or any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
