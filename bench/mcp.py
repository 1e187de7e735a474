"""`python -m bench.mcp`: what `/mcp` costs the REST API, on two servers it starts itself.

- `GET /api/tasks/:id`, 32 connections, on a server whose `/mcp` was never used (the MCP
  machinery is not even loaded) and on one whose `/mcp` was loaded and is idle, rounds
  interleaved: the REST hot path must not notice the endpoint;
- the same on the second server while 4 clients call `task_get` over `/mcp` in a loop (one
  JSON-RPC POST each, protocol 2025-11-25, stateless), with those calls' own rate and latency:
  what sharing the machine's CPU with tool calls costs;
- the server's RSS before and after `/mcp` was loaded, and how long the first call waited.

Prints a table (or `--json`). Never part of the test suite; run it on a quiet machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

import orjson

from .client import Measurement, Target, close_pool, closed_loop, open_pool, process_rss_mb
from .coordination import Server, _call, _row

MCP_HEADERS = (b"Accept: application/json, text/event-stream\r\n"
               b"MCP-Protocol-Version: 2025-11-25\r\n")


def mcp_target(url: str) -> Target:
    base = Target.from_url(url)
    return Target(base.host, base.port, base.base_path, base.fixed_headers + MCP_HEADERS)


def tool_call(n: int, name: str, arguments: dict) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                         "params": {"name": name, "arguments": arguments}})


async def seed(url: str, tasks: int) -> list[str]:
    conns = await open_pool(Target.from_url(url), 16)
    pid = (await _call(conns[0], "POST", "/api/projects", {"name": "bench"}))["id"]

    async def batch(conn, count):
        return [(await _call(conn, "POST", "/api/tasks", {"projectId": pid,
                                                          "title": f"t{i}"}))["id"]
                for i in range(count)]

    parts = await asyncio.gather(*(batch(c, tasks // len(conns)) for c in conns))
    close_pool(conns)
    return [t for part in parts for t in part]


async def rest_reads(url: str, ids: list[str], n: int, label: str) -> Measurement:
    conns = await open_pool(Target.from_url(url), 32)
    rng = random.Random(7)
    paths = [f"/api/tasks/{rng.choice(ids)}".encode() for _ in range(n)]

    async def get(conn, i):
        return await conn.request(b"GET", paths[i])

    for i in range(200):  # warm-up
        await conns[i % 32].request(b"GET", paths[i])
    m = await closed_loop(conns, n, get, Measurement(label, "get_by_id"), None)
    close_pool(conns)
    return m


async def first_call(url: str, task_id: str) -> float:
    conns = await open_pool(mcp_target(url), 1)
    t0 = time.perf_counter()
    status, body = await conns[0].request(b"POST", b"/mcp",
                                          tool_call(1, "task_get", {"task_id": task_id}))
    close_pool(conns)
    if status != 200 or b'"isError":true' in body:
        raise RuntimeError(f"/mcp answered {status}: {body[:300]!r}")
    return time.perf_counter() - t0


async def with_tool_calls(url: str, ids: list[str], n: int) -> tuple[Measurement, Measurement]:
    """REST reads while 4 connections call task_get over /mcp until the reads are done."""
    mcp_conns = await open_pool(mcp_target(url), 4)
    calls = Measurement("task_get over /mcp (4 clients), meanwhile", "mcp_call")
    done = asyncio.Event()
    rng = random.Random(9)

    async def caller(conn):
        i = 0
        while not done.is_set():
            body = tool_call(i, "task_get", {"task_id": rng.choice(ids)})
            t0 = time.perf_counter()
            status, answer = await conn.request(b"POST", b"/mcp", body)
            calls.latencies.append(time.perf_counter() - t0)
            calls.ops += 1
            if status != 200 or b'"isError":true' in answer:
                calls.errors += 1
            i += 1

    start = time.perf_counter()
    tasks = [asyncio.create_task(caller(c)) for c in mcp_conns]
    reads = await rest_reads(url, ids, n, "GET /api/tasks/:id during /mcp tool calls")
    done.set()
    await asyncio.gather(*tasks)
    calls.seconds = time.perf_counter() - start
    calls.concurrency = 4
    close_pool(mcp_conns)
    return reads, calls


def merged(name: str, ms: list[Measurement]) -> Measurement:
    out = Measurement(name, ms[0].key, concurrency=ms[0].concurrency)
    for m in ms:
        out.latencies += m.latencies
        out.ops += m.ops
        out.seconds += m.seconds
        out.errors += m.errors
    return out


async def run(tasks: int, n: int, rounds: int) -> dict:
    cold, warm = Server().start(), Server().start()
    try:
        ids = {s.url: await seed(s.url, tasks) for s in (cold, warm)}
        rss_before = process_rss_mb(warm.proc.pid)
        first = await first_call(warm.url, ids[warm.url][0])
        rss_after = process_rss_mb(warm.proc.pid)
        untouched, loaded = [], []
        for _ in range(rounds):
            untouched.append(await rest_reads(cold.url, ids[cold.url], n, "untouched"))
            loaded.append(await rest_reads(warm.url, ids[warm.url], n, "loaded"))
        busy, calls = await with_tool_calls(warm.url, ids[warm.url], n)
        rows = [merged("GET /api/tasks/:id, /mcp never used (not loaded)", untouched),
                merged("GET /api/tasks/:id, /mcp loaded and idle", loaded), busy, calls]
        return {"tasks": tasks, "rows": [_row(m) for m in rows],
                "first_mcp_call_s": round(first, 3),
                "server_rss_mb": {"before_mcp": round(rss_before or 0, 1),
                                  "after_mcp": round(rss_after or 0, 1)}}
    finally:
        cold.stop()
        warm.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mcp", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--ops", type=int, default=20000, help="reads per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.tasks, args.ops, args.rounds))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'workload':58} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for row in result["rows"]:
        print(f"{row['workload']:58} {row['ops_per_s']:>9.0f} {row['p50_ms']:>8.3f} "
              f"{row['p99_ms']:>8.3f} {row['errors']:>6}")
    print(f"first /mcp call (loads the MCP machinery): {result['first_mcp_call_s']} s; server "
          f"RSS {result['server_rss_mb']['before_mcp']} -> "
          f"{result['server_rss_mb']['after_mcp']} MB")


if __name__ == "__main__":
    main()
