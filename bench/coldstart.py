"""`python -m bench.coldstart`: how long a server takes to start on a large data directory.

Writes a data directory in the original's layout (50k tasks + 1k sessions by default, one
pretty-printed JSON file per entity, written directly), then starts the server on it several
times and measures the time from process start until GET /health answers 200, and the server's
RSS at that moment. Unlike `python -m bench`, this one starts (and stops) the server itself."""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .client import process_rss_mb

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
STATUSES = ("pending", "in_progress", "completed", "blocked")
PRIORITIES = ("low", "medium", "high")


def _id(rng: random.Random, prefix: str, ms: int) -> str:
    return f"{prefix}_{ms}_{''.join(rng.choice(ALPHABET) for _ in range(9))}"


def _write(path: Path, value: dict) -> None:
    # The original's JSON.stringify(value, null, 2): literal non-ASCII, no final newline.
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")


def write_data_dir(root: Path, tasks: int, sessions: int, projects: int, seed: int = 7) -> dict:
    """A data directory like one the original server leaves behind after long use."""
    rng = random.Random(seed)
    base_ms = 1_700_000_000_000
    for sub in ("projects", "tasks", "sessions"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    project_ids = []
    for n in range(projects):
        ms = base_ms + n
        pid = _id(rng, "proj", ms)
        project_ids.append(pid)
        _write(root / "projects" / f"{pid}.json",
               {"id": pid, "name": f"Project {n}", "workingDir": f"/home/dev/project-{n}",
                "description": f"Benchmark project {n}", "createdAt": ms, "updatedAt": ms})
        (root / "tasks" / pid).mkdir(exist_ok=True)
    task_records: list[dict] = []
    for n in range(tasks):
        ms = base_ms + 1_000 + n * 10
        status = STATUSES[n % 4]
        tid = _id(rng, "task", ms)
        parent = task_records[n - 1]["id"] if n % 10 and n % 5 == 0 else None
        task_records.append({
            "id": tid, "projectId": project_ids[n % projects], "parentId": parent,
            "title": f"Task {n}: implement part {n % 97} of the feature",
            "description": "Make the change, add tests, keep the API stable.",
            "initialPrompt": "", "status": status, "priority": PRIORITIES[n % 3],
            "sessionIds": [], "skillIds": [], "agentIds": [], "dependencies": [],
            "timeline": [{"id": _id(rng, "evt", ms), "type": "created", "timestamp": ms,
                          "message": "Task created"}],
            "createdAt": ms, "updatedAt": ms,
            "startedAt": ms + 5 if status in ("in_progress", "completed") else None,
            "completedAt": ms + 9 if status == "completed" else None,
        })
    session_count = 0
    for n in range(sessions):
        ms = base_ms + 2_000_000 + n * 10
        sid = _id(rng, "sess", ms)
        linked = [task_records[(5 * n + k) % tasks] for k in range(5)] if tasks else []
        for task in linked:
            task["sessionIds"].append(sid)
            task["timeline"].append({"id": _id(rng, "evt", ms), "type": "session_started",
                                     "timestamp": ms, "sessionId": sid})
            task["updatedAt"] = ms
        done = n % 3 == 0
        _write(root / "sessions" / f"{sid}.json", {
            "id": sid, "projectId": linked[0]["projectId"] if linked else project_ids[0],
            "taskIds": [t["id"] for t in linked], "name": f"Worker {n}",
            "status": "completed" if done else "running", "env": {}, "events": [],
            "metadata": {"skills": ["maestro-worker"], "spawnSource": "manual",
                         "role": "worker"},
            "startedAt": ms, "lastActivity": ms, "completedAt": ms + 100 if done else None,
            "hostname": "bench-host", "platform": "linux"})
        session_count += 1
    size = 0
    for task in task_records:
        path = root / "tasks" / task["projectId"] / f"{task['id']}.json"
        _write(path, task)
        size += path.stat().st_size
    return {"projects": projects, "tasks": tasks, "sessions": session_count,
            "task_bytes": size, "first_project": project_ids[0] if project_ids else None}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """One blocking HTTP/1.1 GET; None when nothing answers yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Connection: close\r\n\r\n".encode())
            chunks = []
            while True:
                data = s.recv(1 << 16)
                if not data:
                    break
                chunks.append(data)
    except OSError:
        return None
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    if len(head) < 12:
        return None
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return int(head[9:12]), body


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = body.find(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2:end + 2 + size])
        pos = end + 2 + size + 2


def start_once(command: list[str], data_dir: Path, session_dir: Path, timeout_s: float,
               expect_project: str | None) -> dict:
    """Start the server, time it until /health answers, read its RSS, stop it."""
    with tempfile.TemporaryFile() as log:
        return _timed_start(command, data_dir, session_dir, timeout_s, expect_project, log)


def _timed_start(command: list[str], data_dir: Path, session_dir: Path, timeout_s: float,
                 expect_project: str | None, log) -> dict:
    port = _free_port()
    env = dict(os.environ, DATA_DIR=str(data_dir), SESSION_DIR=str(session_dir),
               PORT=str(port), LOG_LEVEL="warn")
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        ready = None
        deadline = t0 + timeout_s
        while time.perf_counter() < deadline:
            answer = _get(port, "/health", timeout=timeout_s)
            if answer is not None and answer[0] == 200:
                ready = time.perf_counter() - t0
                break
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        result: dict = {"seconds_to_health": round(ready, 3) if ready is not None else None,
                        "rss_mb_at_health": _round(process_rss_mb(proc.pid))}
        if ready is None:
            log.seek(0)
            result["log_tail"] = log.read()[-2000:].decode(errors="replace")
            return result
        if expect_project:
            answer = _get(port, f"/api/tasks?projectId={expect_project}", timeout=60)
            if answer is not None and answer[0] == 200:
                result["tasks_in_first_project"] = len(json.loads(answer[1]))
        health = _get(port, "/health")
        if health is not None and health[0] == 200:
            counts = json.loads(health[1]).get("counts")
            if counts:
                result["counts"] = counts
        result["rss_mb_after_first_list"] = _round(process_rss_mb(proc.pid))
        return result
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.coldstart",
        description="Time a server's start-up on a large data directory in the original's "
                    "layout (until GET /health answers) and report its RSS.")
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--sessions", type=int, default=1_000)
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="starts to time (default 3)")
    parser.add_argument("--dir", type=Path,
                        help="keep the generated data directory here (reused when it already "
                             "holds one); default: a temporary directory, removed afterwards")
    parser.add_argument("--command", default=f"{shlex.quote(sys.executable)} -m maestro serve",
                        help="server command; gets DATA_DIR, SESSION_DIR, PORT in its "
                             "environment (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    command = shlex.split(args.command)
    work = Path(tempfile.mkdtemp(prefix="maestro-coldstart-"))
    root = args.dir or work
    data_dir = root / "data"
    try:
        t0 = time.perf_counter()
        marker = data_dir / "bench-coldstart.layout"
        if marker.is_file():
            layout = json.loads(marker.read_text())
        else:
            if data_dir.exists() and any(data_dir.iterdir()):
                parser.error(f"{data_dir} exists and was not written by this tool")
            layout = write_data_dir(data_dir, args.tasks, args.sessions, args.projects)
            marker.write_text(json.dumps(layout))
        layout["seconds_to_write"] = round(time.perf_counter() - t0, 1)
        print(f"data directory {data_dir}: {layout['tasks']:,} tasks "
              f"({layout['task_bytes'] / 1e6:.0f} MB), {layout['sessions']:,} sessions, "
              f"{layout['projects']} projects", file=sys.stderr)
        empty_dir = work / "empty"
        empty = start_once(command, empty_dir / "data", empty_dir / "sessions", args.timeout,
                           None)
        runs = []
        for n in range(args.runs):
            run = start_once(command, data_dir, root / "sessions", args.timeout,
                             layout["first_project"])
            runs.append(run)
            print(f"start {n + 1}: {run['seconds_to_health']} s to /health, RSS "
                  f"{run['rss_mb_at_health']} MB", file=sys.stderr)
        times = [r["seconds_to_health"] for r in runs if r["seconds_to_health"] is not None]
        summary = {
            "command": command, "layout": layout, "empty_start": empty, "runs": runs,
            "median_seconds_to_health": round(statistics.median(times), 3) if times else None,
        }
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            _print_table(summary)
        return 0 if len(times) == len(runs) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _print_table(summary: dict) -> None:
    layout = summary["layout"]
    print("| start | seconds to /health | RSS at /health (MB) | RSS after one list (MB) |")
    print("| --- | ---: | ---: | ---: |")
    empty = summary["empty_start"]
    print(f"| empty data directory | {empty['seconds_to_health']} | "
          f"{empty['rss_mb_at_health']} | {empty.get('rss_mb_after_first_list', '-')} |")
    for n, run in enumerate(summary["runs"], 1):
        print(f"| {layout['tasks']:,} tasks + {layout['sessions']:,} sessions, run {n} | "
              f"{run['seconds_to_health']} | {run['rss_mb_at_health']} | "
              f"{run.get('rss_mb_after_first_list', '-')} |")
    print()
    print(f"Median: {summary['median_seconds_to_health']} s (original: ~7.9 s; target <= 2 s). "
          "Run 1 reads the files from disk when they have left the page cache; later runs "
          "find them cached.")
    first = summary["runs"][0] if summary["runs"] else {}
    if "tasks_in_first_project" in first:
        print(f"Loaded: {first['tasks_in_first_project']:,} tasks in the first project "
              f"(expected {layout['tasks'] // layout['projects']:,})"
              + (f"; /health counts {first['counts']}" if "counts" in first else "") + ".")
    for run in summary["runs"]:
        if "log_tail" in run:
            print("A start failed; server output:\n" + run["log_tail"])
            break


if __name__ == "__main__":
    sys.exit(main())
