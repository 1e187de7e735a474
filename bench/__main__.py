"""`python -m bench`: drive a running server with the benchmark workloads and print the figures.

It starts nothing itself: point it at a server that is already listening (ideally one with an
empty data directory, since the run creates up to 50k tasks through the API)."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sys
import time
from pathlib import Path

import orjson

from . import report
from .client import Target
from .workloads import FULL, QUICK, Bench, wait_until_up

GROUPS = ("list", "read", "write", "ws", "disk")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark a running Maestro server (or the original server) over HTTP and "
                    "WebSocket: ops/s and p50/p99 latency per workload, server RSS and CPU "
                    "(--pid), on-disk consistency (--data-dir).",
        epilog="Example: DATA_DIR=$(mktemp -d)/data PORT=3000 maestro serve & "
               "python -m bench --url http://127.0.0.1:3000 --pid $! --data-dir $DATA_DIR")
    parser.add_argument("--url", default="http://127.0.0.1:3000",
                        help="base URL of the running server (default %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="everything scaled down (2k tasks, 200 WebSocket clients); "
                             "under a minute")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of the table")
    parser.add_argument("--save", type=Path, metavar="FILE",
                        help="also write the JSON document to FILE")
    parser.add_argument("--pid", type=int,
                        help="server process id: report its RSS (VmRSS) and CPU time")
    parser.add_argument("--data-dir", type=Path,
                        help="the server's DATA_DIR: check files against GET after concurrent "
                             "bursts, and look for torn files")
    parser.add_argument("--concurrency", type=int, default=32,
                        help="concurrent keep-alive connections for the throughput workloads "
                             "(default %(default)s)")
    parser.add_argument("--token", default=os.environ.get("MAESTRO_TOKEN"),
                        help="bearer token, when the server requires one "
                             "(default: $MAESTRO_TOKEN)")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of {','.join(GROUPS)} "
                             "(task creation always runs)")
    parser.add_argument("--ws-deflate", action="store_true",
                        help="WebSocket clients offer permessage-deflate, as browsers do")
    parser.add_argument("--ws-gap-ms", type=float, default=0.0,
                        help="pause between the fan-out PATCHes (default: none, each PATCH "
                             "follows the previous answer)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for task choice")
    parser.add_argument("--wait", type=float, default=10.0,
                        help="seconds to wait for GET /health to answer (default %(default)s)")
    parser.add_argument("--no-uvloop", action="store_true",
                        help="use the default asyncio event loop in the client")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    args.only = only_groups(parser, args.only, GROUPS) or None
    if args.data_dir is not None and not (args.data_dir / "tasks").is_dir():
        parser.error(f"--data-dir {args.data_dir} has no tasks/ folder: not a server DATA_DIR")
    if args.pid is not None and not Path(f"/proc/{args.pid}").exists():
        parser.error(f"--pid {args.pid}: no such process")
    return args


def only_groups(parser: argparse.ArgumentParser, text: str, groups) -> set[str]:
    """The groups named by a comma-separated `--only` (an unknown one is a usage error)."""
    only = {g.strip() for g in text.split(",") if g.strip()}
    unknown = only - set(groups)
    if unknown:
        parser.error(f"unknown --only group(s): {', '.join(sorted(unknown))}")
    return only


def _raise_fd_limit() -> None:
    """1,000 WebSocket clients plus the HTTP pool need more than the usual 1,024 files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _loop_name(use_uvloop: bool) -> str:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            return "asyncio"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    return "asyncio"


async def _main(args: argparse.Namespace, loop_name: str) -> int:
    target = Target.from_url(args.url, args.token)

    def progress(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    await wait_until_up(target, args.wait)
    plan = QUICK if args.quick else FULL
    bench = Bench(target, plan, args.concurrency, args.pid, args.data_dir, token=args.token,
                  ws_deflate=args.ws_deflate, ws_gap_ms=args.ws_gap_ms, seed=args.seed,
                  progress=progress)
    bench.info.update({
        "url": args.url, "mode": "quick" if args.quick else "full",
        "concurrency": args.concurrency, "client_loop": loop_name,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "server_pid": args.pid, "data_dir": str(args.data_dir) if args.data_dir else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_at_start": round(os.getloadavg()[0], 2),
    })
    progress(f"benchmarking {args.url} ({bench.info['mode']} run, {args.concurrency} "
             f"connections, client loop {loop_name})")
    try:
        await bench.run(args.only)
    finally:
        await bench.close()
    bench.info["loadavg_at_end"] = round(os.getloadavg()[0], 2)
    doc = report.document(bench.results, bench.memory, bench.consistency, bench.info)
    encoded = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"
    if args.save is not None:
        args.save.write_text(encoded)
    if args.json:
        sys.stdout.write(encoded)
    else:
        print(report.markdown(bench.results, bench.memory, bench.consistency, bench.info))
    failed = sum(m.errors for m in bench.results)
    bad_disk = bench.consistency and "skipped" not in bench.consistency and (
        bench.consistency["file_never_equals_get"] or bench.consistency["torn_files"]
        or bench.consistency["torn_reads"])
    return 1 if failed or bad_disk else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _raise_fd_limit()
    loop_name = _loop_name(not args.no_uvloop)
    try:
        return asyncio.run(_main(args, loop_name))
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
