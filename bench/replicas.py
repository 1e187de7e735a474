"""`python -m bench.replicas`: several `maestro serve` replicas on one PostgreSQL schema.

It starts its own servers: replicas A and B (`DATABASE_TYPE=postgres`, the same `DATABASE_URL`
on a fresh schema of `--database-url`, dropped afterwards, each with its own `PORT` and
`MAESTRO_REPLICA_ID`) and a file-store server on a temporary directory, and measures:

1. one replica (A alone) on a fresh board of `--tasks` tasks: the write workloads of
   `python -m bench` (create task, patch random tasks, create a session linking 5 tasks,
   append to a timeline) on 32 keep-alive connections, then reads (get task by id, list
   `?projectId&status`); the file-store server runs the same sequence on a board of its own;
2. two replicas (B started on A's schema; with `--forward-writes 1`, the default on one
   machine, A leads the writes and B forwards its changes to it; with `0`, the default with
   `--replica-cpu`, B writes itself, taking turns with A): the same writes with the
   connections split 16/16 over A and B, and once more with all of them on A while B only
   follows; the replicas' `replication.conflicts` (GET /health) per write, and how long after
   the last answer both replicas stood at the same head of the shared log; at the very end,
   with B stopped, A alone once more on the board as it has grown (one replica against two
   at the same moment);
3. event delivery: one WebSocket client on B while one HTTP client PATCHes a task on A, one
   PATCH after the other, against the same with the client on A; both again while a paced
   background load writes to A and B;
4. fan-out: `--ws-clients` WebSocket clients, half on A and half on B, while one HTTP client
   sends PATCHes to A; every client must get every event.

Prints tables (or `--json`; `--save FILE`). Never part of the test suite; the figures of a
shared machine are noisy, compare runs made one right after the other."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

import orjson

from .__main__ import _loop_name, _raise_fd_limit, only_groups
from .client import (
    HttpConnection,
    Measurement,
    Target,
    close_pool,
    machine_busy_seconds,
    open_pool,
    process_cpu_seconds,
    process_rss_mb,
)
from .coordination import CpuCap, Server, _drop_schema, _schema_url, source_path
from .fanout import fanout
from .workloads import QUICK, Bench

GROUPS = ("writes", "reads", "files", "events", "fanout")
PRIORITIES = (b"low", b"medium", b"high")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("MAESTRO_BENCH_DATABASE_URL"),
                        help="PostgreSQL to use (a schema is made in it and dropped after)")
    parser.add_argument("--tasks", type=int, help="tasks seeded on the fresh board "
                        "(default 5000, --quick 1000)")
    parser.add_argument("--ops", type=int, help="operations per write workload (session "
                        "creates: half of it; default 5000, --quick 1000)")
    parser.add_argument("--reads", type=int, help="gets by id and concurrent lists per read "
                        "workload (default 20000, --quick 4000)")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="keep-alive connections of the write and read workloads "
                             "(default %(default)s; split in half over two replicas)")
    parser.add_argument("--ws-clients", type=int, help="WebSocket clients of the fan-out, "
                        "split in half over two replicas (default 2000, --quick 200)")
    parser.add_argument("--fanout-patches", type=int, default=200,
                        help="PATCHes of the fan-out (default %(default)s)")
    parser.add_argument("--event-patches", type=int, help="PATCHes per event-delivery "
                        "variant (default 500, --quick 200)")
    parser.add_argument("--background-rate", type=float, default=150.0,
                        help="writes/s sent to each replica during the loaded event-delivery "
                             "variants (default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (1k tasks, 1k ops, 200 WebSocket clients), under "
                             "2 minutes")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of {','.join(GROUPS)} (files: the "
                             "file-store server, for the reads and the writes beside the "
                             "replicas)")
    parser.add_argument("--replicas-only", action="store_true",
                        help="everything but the file-store server")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of the tables")
    parser.add_argument("--save", type=Path, metavar="FILE",
                        help="also write the JSON document to FILE")
    parser.add_argument("--replica-cpu", type=float, metavar="CORES",
                        help="give each replica (with its writer process) a CPU budget of its "
                             "own, e.g. 0.5 core (a cgroup CPU quota; needs root): replicas "
                             "as on machines of their own, PostgreSQL and the client uncapped")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the two-replica writes (16/16, then all on A) this many times "
                             "in turn; the side-by-side table then gives each config's median "
                             "and the median of the rounds' 16/16 : all-on-A ratios (a shared "
                             "machine's figures drift; pairs made one right after the other "
                             "compare best; default %(default)s)")
    parser.add_argument("--forward-writes", choices=("auto", "1", "0"),
                        help="MAESTRO_FORWARD_WRITES of both replicas: 1, B forwards its "
                             "changes to A (the write lead); 0, B writes them itself, taking "
                             "turns with A (default: what `auto` does for the replicas "
                             "measured: 0 with --replica-cpu, which stands for machines of "
                             "their own, else auto, that is 1 on this one machine)")
    parser.add_argument("--maestro-src", help="run the servers from this checkout (or its src/)")
    parser.add_argument("--no-uvloop", action="store_true",
                        help="use the default asyncio event loop in the client")
    args = parser.parse_args(argv)
    if args.forward_writes is None:
        args.forward_writes = "0" if args.replica_cpu else "auto"
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not args.database_url:
        parser.error("--database-url (or $MAESTRO_BENCH_DATABASE_URL) is required")
    quick = args.quick
    for name, full, small in (("tasks", 5000, 1000), ("ops", 5000, 1000),
                              ("reads", 20000, 4000), ("ws_clients", 2000, 200),
                              ("event_patches", 500, 200)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.concurrency < 2:
        parser.error("--concurrency must be at least 2 (it is split over two replicas)")
    if args.replica_cpu is not None:
        if not 0.05 <= args.replica_cpu <= (os.cpu_count() or 1):
            parser.error("--replica-cpu must be between 0.05 and the number of cores")
        try:  # a budget can be made here (before any server starts)
            CpuCap("check", args.replica_cpu).remove()
        except (RuntimeError, OSError) as exc:
            parser.error(f"--replica-cpu: {exc}")
    if args.ws_clients < 2:
        parser.error("--ws-clients must be at least 2")
    args.groups = only_groups(parser, args.only, GROUPS) or set(GROUPS)
    if args.replicas_only:
        args.groups.discard("files")
    return args


# ---------------------------------------------------------------------------- measuring
def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of every process named `postgres` on this machine (server and backends)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm", "rb") as f:
                if f.read().strip() != b"postgres":
                    continue
        except OSError:
            continue
        cpu = process_cpu_seconds(int(entry.name))
        if cpu is not None:
            out[int(entry.name)] = cpu
    return out


def _pg_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


class Node:
    """One server this benchmark started: its name, address and process."""

    def __init__(self, name: str, server: Server):
        self.name = name
        self.server = server
        self.target = Target.from_url(server.url)
        self.pid = server.proc.pid
        self.one = HttpConnection(self.target)

    async def health(self) -> dict:
        status, body = await self.one.request(b"GET", b"/health")
        if status != 200:
            raise RuntimeError(f"GET /health on {self.name} -> {status} {body[:200]!r}")
        return orjson.loads(body)

    async def replication(self) -> dict:
        return (await self.health()).get("replication") or {}

    def close(self) -> None:
        self.one.close()


class Run:
    """The servers, what was measured and the progress lines."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rows: dict[str, list[dict]] = {"writes": [], "reads": [], "events": [],
                                            "fanout": []}
        self.rss: dict[str, float | None] = {}
        self.problems: list[str] = []
        self.info: dict = {}
        self.nodes: list[Node] = []

    def progress(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def note_rss(self, label: str, nodes: list[Node]) -> None:
        for node in nodes:
            self.rss[f"{node.name} {label}"] = process_rss_mb(node.pid)

    async def start(self, name: str, env: dict) -> Node:
        if self.args.maestro_src:
            env = {**env, "PYTHONPATH": source_path(self.args.maestro_src)}
        t0 = time.perf_counter()
        cap = CpuCap(name, self.args.replica_cpu) if self.args.replica_cpu and \
            "DATABASE_URL" in env else None
        server = await asyncio.to_thread(Server(env=env, cpu=cap).start)
        node = Node(name, server)
        self.nodes.append(node)
        self.progress(f"{name} up on port {server.port} (pid {node.pid}) after "
                      f"{time.perf_counter() - t0:.1f} s")
        return node

    async def stop(self, node: Node) -> None:
        node.close()
        self.nodes.remove(node)
        await asyncio.to_thread(node.server.stop)

    async def settle(self, nodes: list[Node], max_s: float = 15.0) -> None:
        """Wait until the servers together use under 10% of a core for half a second."""
        deadline = time.monotonic() + max_s
        quiet = 0

        def cpu():
            return sum(process_cpu_seconds(n.pid) or 0.0 for n in nodes)

        before = cpu()
        while quiet < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            now = cpu()
            quiet = quiet + 1 if now - before < 0.025 else 0
            before = now

    async def caught_up(self, nodes: list[Node], timeout_s: float = 30.0) -> float | None:
        """Seconds until every replica has applied the same head of the shared log (None if
        they still differ after `timeout_s`)."""
        if len(nodes) < 2:
            return 0.0
        t0 = time.perf_counter()
        while True:
            heads = [(await n.replication()).get("seq") for n in nodes]
            if None not in heads and len(set(heads)) == 1:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout_s:
                self.problems.append(
                    f"replicas still at different heads of the log {timeout_s:.0f} s after a "
                    f"workload: " + ", ".join(f"{n.name} {h}" for n, h in zip(nodes, heads)))
                return None
            await asyncio.sleep(0.005)

    async def measured(self, config: str, bench: Bench, nodes: list[Node], workload,
                       postgres: bool) -> Measurement:
        """One workload of `bench` with the CPU of every server (and of PostgreSQL) from its
        start until all replicas have applied it, and the conflicts it caused."""
        await self.settle(nodes)
        conflicts0 = [(await n.replication()).get("conflicts", 0) for n in nodes] \
            if postgres else []
        cpu0 = [process_cpu_seconds(n.pid) or 0.0 for n in nodes]
        pg0 = _postgres_cpu()
        machine0 = machine_busy_seconds()
        bench.progress = lambda text: self.progress(f"{config}: {text}")
        m: Measurement = await workload()
        catch = await self.caught_up(nodes) if postgres else None
        each = [(process_cpu_seconds(n.pid) or 0.0) - c for n, c in zip(nodes, cpu0)]
        cpu = sum(each)
        pg = _pg_delta(pg0, _postgres_cpu())
        machine = (machine_busy_seconds() or 0.0) - (machine0 or 0.0)
        row = m.as_dict()
        row.update(config=config, servers=[n.name for n in nodes],
                   servers_cpu_us_per_op=round(cpu / m.ops * 1e6, 1) if m.ops else None,
                   machine_cpu_share=round(machine / m.seconds, 2) if m.seconds else None)
        if len(nodes) > 1 and m.ops:
            row["notes"].append("CPU µs/op " + ", ".join(
                f"{n.name} {used / m.ops * 1e6:,.0f}" for n, used in zip(nodes, each)))
        if postgres:
            conflicts = 0
            for n, c in zip(nodes, conflicts0):
                conflicts += (await n.replication()).get("conflicts", 0) - c
            row.update(postgres_cpu_us_per_op=round(pg / m.ops * 1e6, 1) if m.ops else None,
                       conflicts=conflicts,
                       conflicts_per_write=round(conflicts / m.ops, 4) if m.ops else None,
                       catch_up_ms=None if catch is None else round(catch * 1000, 1))
        self.rows["writes" if m.key != "read" else "reads"].append(row)
        return m

    # ------------------------------------------------------------------ workloads
    def writes(self, bench: Bench):
        """The write workloads of `python -m bench`, in its order, as (key, call) pairs."""
        ops = self.args.ops
        return [
            ("create_task",
             lambda: bench.create_tasks(bench.total_tasks + ops, "create task", "create_task")),
            ("patch_random", lambda: bench.patch_random(ops)),
            ("create_session", lambda: bench.create_sessions(ops // 2)),
            ("timeline_append", lambda: bench.append_timeline(ops)),
        ]

    async def run_writes(self, config: str, bench: Bench, nodes: list[Node],
                         postgres: bool) -> None:
        for key, call in self.writes(bench):
            async def workload(call=call):
                m = await call()
                m.key = key
                return m
            await self.measured(config, bench, nodes, workload, postgres)

    async def run_reads(self, config: str, bench: Bench, node: Node) -> None:
        a = self.args

        async def by_id():
            return await bench.get_by_id(a.reads)

        async def listed(concurrent: bool):
            return await bench.list_filtered(a.reads if concurrent else max(500, a.reads // 20),
                                             concurrent)

        for name, call in (("get task by id", by_id),
                           ("list ?projectId&status, one client", lambda: listed(False)),
                           (f"list ?projectId&status, {a.concurrency} concurrent",
                            lambda: listed(True))):
            async def workload(call=call, name=name):
                m = await call()
                m.name, m.key = name, "read"
                return m
            await self.measured(config, bench, [node], workload, False)

    async def board(self, node: Node, label: str, postgres: bool) -> Bench:
        """A Bench on `node` with a fresh board of `--tasks` tasks, then (groups permitting)
        the write and read workloads on it alone."""
        a = self.args
        bench = Bench(node.target, QUICK, a.concurrency, node.pid, None, seed=1,
                      progress=lambda text: self.progress(f"{label}: {text}"))
        await bench.setup()
        await bench.create_tasks(a.tasks, f"create task (seed to {a.tasks:,})", "seed")
        self.note_rss(f"at {bench.total_tasks:,} tasks (seeded)", [node])
        if "writes" in a.groups:
            await self.run_writes(label, bench, [node], postgres)
        if "reads" in a.groups:
            await self.run_reads(label, bench, node)
        self.note_rss(f"after the workloads of {label} ({bench.total_tasks:,} tasks)", [node])
        return bench

    async def events(self, a_node: Node, b_node: Node, bench: Bench) -> None:
        """Delivery latency of one PATCH on A to one WebSocket client, on A and on B."""
        args = self.args
        task = await bench._call(b"POST", "/api/tasks", {"projectId": bench.bulk_projects[-1],
                                                         "title": "event delivery target"})
        bench.total_tasks += 1
        await self.caught_up([a_node, b_node])
        writer = HttpConnection(a_node.target)
        ids = list(await bench._ids())
        try:
            for loaded in (False, True):
                background = Background([a_node.target, b_node.target], args.background_rate,
                                        ids) if loaded else None
                if background is not None:
                    await background.start()
                    await asyncio.sleep(1.0)
                try:
                    for where, label in ((a_node, "same replica (WS on A)"),
                                         (b_node, "cross replica (WS on B)")):
                        await (asyncio.sleep(0.3) if loaded else self.settle([a_node, b_node]))
                        m = await fanout(a_node.target, writer, task["id"], 1,
                                         args.event_patches, None, spread=[(where.target, 1)],
                                         settle_s=30.0)
                        self.event_row(m, label + (
                            f", background {2 * args.background_rate:.0f} writes/s on A+B"
                            if loaded else ", no other load"), loaded)
                finally:
                    if background is not None:
                        achieved, errors, first = await background.stop()
                        for row in self.rows["events"][-2:]:
                            row["notes"].append(f"background: {achieved:,.0f} writes/s "
                                                f"achieved, {errors} errors")
                        if errors:
                            self.problems.append(f"background writes failed {errors} times "
                                                 f"during event delivery, first: {first}")
        finally:
            writer.close()

    def event_row(self, m: Measurement, label: str, loaded: bool) -> None:
        row = m.as_dict()
        lat = sorted(m.latencies)
        lost = m.extra.get("lost", 0)
        row.update(workload=label, loaded=loaded, patches=m.extra.get("patches"),
                   lost=lost, max_ms=round(lat[-1] * 1000, 3) if lat else None)
        row["notes"] = [n for n in row["notes"] if not n.startswith("client reads")]
        if lost or m.errors:
            self.problems.append(f"event delivery {label}: {lost} event(s) lost, "
                                 f"{m.errors} PATCH errors {m.first_error or ''}")
        self.rows["events"].append(row)
        self.progress(f"{label}: p50 {m.p(0.5) or 0:.2f} ms, p99 {m.p(0.99) or 0:.2f} ms, "
                      f"max {row['max_ms'] or 0:.2f} ms, lost {lost}")

    async def fan_out(self, a_node: Node, b_node: Node, bench: Bench) -> None:
        args = self.args
        task = await bench._call(b"POST", "/api/tasks", {"projectId": bench.bulk_projects[-1],
                                                         "title": "fan-out target"})
        bench.total_tasks += 1
        await self.caught_up([a_node, b_node])
        await self.settle([a_node, b_node])
        half = args.ws_clients // 2
        writer = HttpConnection(a_node.target)
        self.progress(f"fan-out: connecting {half:,} + {args.ws_clients - half:,} WebSocket "
                      "clients")
        cpu0 = [process_cpu_seconds(n.pid) or 0.0 for n in (a_node, b_node)]
        try:
            m = await fanout(a_node.target, writer, task["id"], args.ws_clients,
                             args.fanout_patches, None,
                             spread=[(a_node.target, half), (b_node.target,
                                                             args.ws_clients - half)],
                             settle_s=60.0)
        finally:
            writer.close()
        cpu = [(process_cpu_seconds(n.pid) or 0.0) - c for n, c in zip((a_node, b_node), cpu0)]
        self.note_rss(f"after the fan-out to {args.ws_clients:,} clients", [a_node, b_node])
        row = m.as_dict()
        row["lost"] = m.extra["lost"]
        groups = m.extra.get("groups", [])
        for group, node, used in zip(groups, (a_node, b_node), cpu):
            group["replica"] = node.name
            group["server_cpu_s"] = round(used, 2)
        row["groups"] = groups
        self.rows["fanout"].append(row)
        self.progress(f"fan-out: {m.extra['delivered']:,} deliveries, lost {m.extra['lost']:,}; "
                      + "; ".join(f"{g['replica']} p50 {g['p50_ms']:.1f} ms p99 "
                                  f"{g['p99_ms']:.1f} ms" for g in groups))
        if m.extra["lost"] or m.errors or m.extra.get("disconnected"):
            self.problems.append(
                f"fan-out: {m.extra['lost']:,} (client, PATCH) pairs lost, "
                f"{m.extra.get('disconnected', 0)} clients disconnected, {m.errors} PATCH "
                f"errors {m.first_error or ''}; per replica: "
                + ", ".join(f"{g['replica']} lost {g['lost']}" for g in groups))

    # ------------------------------------------------------------------ the run
    async def main(self) -> None:
        a = self.args
        self.info.update(started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), cpus=os.cpu_count(),
                         loadavg_at_start=round(os.getloadavg()[0], 2), tasks=a.tasks,
                         ops=a.ops, reads=a.reads, concurrency=a.concurrency,
                         ws_clients=a.ws_clients, groups=sorted(a.groups),
                         mode="quick" if a.quick else "full", replica_cpu=a.replica_cpu,
                         forward_writes=a.forward_writes, rounds=a.rounds)
        t_start = time.perf_counter()
        pg_env = {"DATABASE_TYPE": "postgres",
                  "MAESTRO_MAX_CONNECTIONS": str(max(2000, a.ws_clients + 4 * a.concurrency)),
                  "MAESTRO_FORWARD_WRITES": a.forward_writes}
        schema, url = await asyncio.to_thread(_schema_url, a.database_url)
        self.info["schema"] = schema
        pg_env["DATABASE_URL"] = url
        try:
            a_node = await self.start("A", {**pg_env, "MAESTRO_REPLICA_ID": "bench-a"})
            bench = await self.board(a_node, "1 replica", True)
            if "files" in a.groups:
                f_node = await self.start("files", {"MAESTRO_MAX_CONNECTIONS": "2000"})
                try:
                    await self.board(f_node, "file store", False)
                finally:
                    await self.stop(f_node)
            if not a.groups & {"writes", "events", "fanout"}:
                return
            b_node = await self.start("B", {**pg_env, "MAESTRO_REPLICA_ID": "bench-b"})
            self.note_rss(f"with B just started ({bench.total_tasks:,} tasks)",
                          [a_node, b_node])
            await bench.close()
            half = a.concurrency // 2
            pool_a = await open_pool(a_node.target, a.concurrency)
            pool_b = await open_pool(b_node.target, a.concurrency - half)
            bench.one = HttpConnection(a_node.target)
            try:
                for _ in range(a.rounds if "writes" in a.groups else 0):
                    bench.conns = pool_a[:half] + pool_b
                    await self.run_writes(f"2 replicas, {half}/{a.concurrency - half}", bench,
                                          [a_node, b_node], True)
                    bench.conns = pool_a
                    await self.run_writes(f"2 replicas, all {a.concurrency} on A", bench,
                                          [a_node, b_node], True)
                if "writes" in a.groups:
                    self.note_rss(f"after the writes on two replicas "
                                  f"({bench.total_tasks:,} tasks)", [a_node, b_node])
                if "events" in a.groups:
                    await self.events(a_node, b_node, bench)
                if "fanout" in a.groups:
                    await self.fan_out(a_node, b_node, bench)
                health = [await n.health() for n in (a_node, b_node)]
                self.info["health_at_end"] = {
                    n.name: {"replication": h.get("replication"), "replica": h.get("replica"),
                             "writeLead": h.get("writeLead"), "counts": h.get("counts")}
                    for n, h in zip((a_node, b_node), health)}
                counts = {orjson.dumps(h.get("counts")) for h in health}
                if len(counts) > 1:
                    self.problems.append("the replicas' counts differ at the end: " + ", ".join(
                        f"{n.name} {h.get('counts')}" for n, h in zip((a_node, b_node), health)))
                if "writes" in a.groups:
                    # One replica once more, on the board as it has grown, right after the
                    # two: what two replicas gave against one at the same moment.
                    close_pool(pool_b)
                    pool_b = []
                    await self.stop(b_node)
                    bench.conns = pool_a
                    await self.run_writes("1 replica again (B stopped)", bench, [a_node], True)
            finally:
                close_pool(pool_a)
                close_pool(pool_b)
                await bench.close()
        finally:
            for node in list(self.nodes):
                await self.stop(node)
            await asyncio.to_thread(_drop_schema, a.database_url, schema)
            self.info["total_seconds"] = round(time.perf_counter() - t_start, 1)
            self.info["loadavg_at_end"] = round(os.getloadavg()[0], 2)


class Background:
    """A paced write load (PATCHes of random tasks) on every target, `rate` writes/s each."""

    def __init__(self, targets: list[Target], rate: float, ids: list[str], conns: int = 4):
        self.targets = targets
        self.rate = rate
        self.paths = [f"/api/tasks/{i}".encode() for i in ids]
        self.conns_per = conns
        self.pools: list[list[HttpConnection]] = []
        self.tasks: list[asyncio.Task] = []
        self.done = 0
        self.errors = 0
        self.first_error: str | None = None
        self.stopping = False

    async def start(self) -> None:
        self.pools = [await open_pool(t, self.conns_per) for t in self.targets]
        interval = self.conns_per / self.rate
        self.t0 = time.perf_counter()
        for pool in self.pools:
            for k, conn in enumerate(pool):
                self.tasks.append(asyncio.create_task(
                    self._worker(conn, interval, k * interval / self.conns_per,
                                 random.Random(len(self.tasks)))))

    async def _worker(self, conn: HttpConnection, interval: float, offset: float,
                      rng: random.Random) -> None:
        perf = time.perf_counter
        due = perf() + offset
        i = 0
        while not self.stopping:
            now = perf()
            if due > now:
                await asyncio.sleep(due - now)
            elif due < now - 1.0:
                due = now  # fell behind by a second: do not burst to catch up
            due += interval
            i += 1
            status, body = await conn.request(
                b"PATCH", self.paths[rng.randrange(len(self.paths))],
                b'{"priority":"%s"}' % PRIORITIES[i % 3])
            if status >= 400:
                self.errors += 1
                self.first_error = self.first_error or f"{status} {body[:200]!r}"
            else:
                self.done += 1

    async def stop(self) -> tuple[float, int, str | None]:
        self.stopping = True
        await asyncio.gather(*self.tasks, return_exceptions=True)
        seconds = time.perf_counter() - self.t0
        for pool in self.pools:
            close_pool(pool)
        return self.done / seconds, self.errors, self.first_error


# ---------------------------------------------------------------------------- report
def _n(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def markdown(doc: dict) -> str:
    out: list[str] = []
    writes = doc["writes"]
    if writes:
        out += ["Writes (closed loop; CPU per op from the start of the workload until every "
                "replica has applied it):", "",
                "| workload | servers | ops/s | p50 ms | p99 ms | servers CPU µs/op | "
                "PostgreSQL CPU µs/op | conflicts/write | catch-up ms | notes |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in writes:
            notes = list(r["notes"])
            if r["errors"]:
                notes.append(f"{r['errors']} errors, first: {r['first_error']}")
            out.append(f"| {r['workload']} | {r['config']} | {_n(r['ops_per_s'])} | "
                       f"{_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | "
                       f"{_n(r['servers_cpu_us_per_op'])} | "
                       f"{_n(r.get('postgres_cpu_us_per_op'))} | "
                       f"{_n(r.get('conflicts_per_write'), 3)} | {_n(r.get('catch_up_ms'))} | "
                       f"{'; '.join(notes)} |")
        configs = list(dict.fromkeys(r["config"] for r in writes))
        by: dict[tuple[str, str], list[dict]] = {}
        for r in writes:
            by.setdefault((r["key"], r["config"]), []).append(r)
        keys = list(dict.fromkeys(r["key"] for r in writes))
        names = {r["key"]: r["workload"] for r in writes}
        rounds = max(len(v) for v in by.values())
        split = next((c for c in configs if "/" in c), None)
        alone = next((c for c in configs if "all" in c), None)
        ratio = rounds > 1 and split and alone
        title = ("Side by side (ops/s; median of the rounds, each round's figure in brackets)"
                 if rounds > 1 else "Side by side (ops/s; conflicts per write in brackets)")
        out += ["", title + ":", "",
                "| workload | " + " | ".join(configs) + (" | 16/16 : all on A, median |"
                                                         if ratio else " |"),
                "| --- |" + " ---: |" * (len(configs) + (1 if ratio else 0))]
        for key in keys:
            cells = []
            for c in configs:
                runs = by.get((key, c))
                if not runs:
                    cells.append("-")
                    continue
                figures = [r["ops_per_s"] or 0.0 for r in runs]
                cell = _n(statistics.median(figures))
                if len(runs) > 1:
                    cell += " (" + " / ".join(_n(f) for f in figures) + ")"
                elif runs[0].get("conflicts"):
                    cell += f" ({runs[0]['conflicts_per_write']:.3f})"
                cells.append(cell)
            if ratio:
                pairs = [x["ops_per_s"] / y["ops_per_s"] for x, y in
                         zip(by.get((key, split), []), by.get((key, alone), []))
                         if x["ops_per_s"] and y["ops_per_s"]]
                cells.append(f"{statistics.median(pairs):.2f} ("
                             + " / ".join(f"{p:.2f}" for p in pairs) + ")" if pairs else "-")
            out.append(f"| {names[key]} | " + " | ".join(cells) + " |")
    if doc["reads"]:
        out += ["", "Reads:", "", "| workload | server | ops/s | p50 ms | p99 ms | "
                "server CPU µs/op | notes |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        for r in doc["reads"]:
            out.append(f"| {r['workload']} | {r['config']} | {_n(r['ops_per_s'])} | "
                       f"{_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | "
                       f"{_n(r['servers_cpu_us_per_op'])} | {'; '.join(r['notes'])} |")
    if doc["events"]:
        out += ["", "Event delivery (PATCH on A, one at a time; from just before the PATCH is "
                "written until the WebSocket client has the frame):", "",
                "| client | PATCHes | p50 ms | p99 ms | max ms | lost | notes |",
                "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in doc["events"]:
            notes = [n for n in r["notes"] if not n.startswith("ops/s")]
            out.append(f"| {r['workload']} | {r['patches']} | {_ms(r['p50_ms'])} | "
                       f"{_ms(r['p99_ms'])} | {_ms(r['max_ms'])} | {r['lost']} | "
                       f"{'; '.join(notes)} |")
    for r in doc["fanout"]:
        pairs = r["details"]["clients"] * r["details"]["patches"]
        out += ["", f"{r['workload']}, over two replicas (PATCHes on A): lost "
                f"{r['lost']:,} (client, PATCH) pairs of {pairs:,}; "
                f"p50 {_ms(r['p50_ms'])} ms, p99 {_ms(r['p99_ms'])} ms overall; "
                + "; ".join(n for n in r["notes"] if n.startswith("client reads")), "",
                "| replica | clients | delivered | lost | p50 ms | p99 ms | max ms "
                "| server CPU s |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for g in r["groups"]:
            out.append(f"| {g['replica']} | {g['clients']:,} | {g['delivered']:,} | "
                       f"{g['lost']:,} | {_ms(g['p50_ms'])} | {_ms(g['p99_ms'])} | "
                       f"{_ms(g['max_ms'])} | {_n(g['server_cpu_s'], 1)} |")
    if doc["rss_mb"]:
        out += ["", "Server RSS: " + "; ".join(f"{k}: {v:.0f} MB" for k, v in
                                                doc["rss_mb"].items() if v is not None) + "."]
    info = doc["info"]
    out.append(f"Run: {info.get('total_seconds')} s, load average "
               f"{info.get('loadavg_at_start')} at the start, {info.get('loadavg_at_end')} at "
               f"the end ({info.get('cpus')} cores shared by the client, the servers and "
               "PostgreSQL" + (f"; each replica and its writer process capped at "
                              f"{info['replica_cpu']:g} core" if info.get("replica_cpu")
                              else "") + ")" + ("; B writes itself, taking turns with A"
                                                if info.get("forward_writes") == "0" else
                                                "; B forwards its writes to A, the write lead")
               + f" (MAESTRO_FORWARD_WRITES={info.get('forward_writes')}).")
    out.append("Problems: " + ("; ".join(doc["problems"]) if doc["problems"] else "none"))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _raise_fd_limit()
    loop_name = _loop_name(not args.no_uvloop)
    run = Run(args)
    run.info["client_loop"] = loop_name
    try:
        asyncio.run(run.main())
    except KeyboardInterrupt:
        return 130
    doc = {"info": run.info, **run.rows, "rss_mb": run.rss, "problems": run.problems}
    encoded = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    if args.save is not None:
        args.save.write_text(encoded)
    if args.json:
        sys.stdout.write(encoded)
    else:
        print(markdown(doc))
    failed = any(r["errors"] for part in run.rows.values() for r in part)
    return 1 if failed or run.problems else 0


if __name__ == "__main__":
    sys.exit(main())
