"""On-disk consistency under concurrent writes to one task (needs the server's DATA_DIR).

Each round fires a burst of concurrent PATCHes and timeline appends at one task while a reader
thread keeps reading that task's file, the way another tool (the original CLI, an editor, git)
would. After the burst the file must equal what GET returns, and no read may ever have seen a
half-written file. Finally every *.json file of the data directory must parse."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import orjson

from .client import HttpConnection, Measurement, closed_loop

STATUSES = (b"pending", b"in_progress", b"blocked", b"completed")
PRIORITIES = (b"low", b"medium", b"high")


class _FileReader(threading.Thread):
    """Reads one file in a loop and counts reads that are missing or do not parse."""

    def __init__(self, path: Path):
        super().__init__(daemon=True, name="bench-file-reader")
        self.path = path
        self.stop = threading.Event()
        self.reads = self.torn = self.missing = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                self.missing += 1
            else:
                self.reads += 1
                try:
                    orjson.loads(data)
                except orjson.JSONDecodeError:
                    self.torn += 1
            time.sleep(0.0005)


def scan_json_files(data_dir: Path) -> dict:
    """Parse every *.json below `data_dir` (quarantine excluded); count the ones that fail."""
    files = torn = temp = 0
    torn_examples: list[str] = []
    for root, dirs, names in os.walk(data_dir):
        if "quarantine" in dirs:
            dirs.remove("quarantine")
        for name in names:
            if name.endswith(".tmp"):
                temp += 1
                continue
            if not name.endswith(".json"):
                continue
            files += 1
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    value = orjson.loads(f.read())
                whole = isinstance(value, dict)
            except (OSError, ValueError):
                whole = False
            if not whole:
                torn += 1
                if len(torn_examples) < 5:
                    torn_examples.append(os.path.relpath(path, data_dir))
    return {"json_files": files, "torn_files": torn, "temp_files": temp,
            "torn_examples": torn_examples}


def _read_json(path: Path):
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


async def bursts_on_one_task(conns: list[HttpConnection], data_dir: Path, project_id: str,
                             rounds: int, ops_per_round: int, server_pid: int | None
                             ) -> tuple[Measurement, dict]:
    """Concurrent bursts on one task, then compare its file with GET; scan the directory."""
    first = conns[0]
    status, body = await first.request(
        b"POST", b"/api/tasks",
        orjson.dumps({"projectId": project_id, "title": "consistency probe"}))
    if status != 201:
        raise RuntimeError(f"could not create the probe task: {status} {body[:200]!r}")
    task_id = orjson.loads(body)["id"]
    path = data_dir / "tasks" / project_id / f"{task_id}.json"
    if _read_json(path) is None:
        await asyncio.sleep(1.0)
    if _read_json(path) is None:
        raise RuntimeError(f"{path} does not appear after creating the task: is --data-dir "
                           "the server's DATA_DIR?")
    task_path = f"/api/tasks/{task_id}".encode()
    timeline_path = task_path + b"/timeline"
    m = Measurement(f"patch + timeline bursts on one task ({rounds} rounds)",
                    "consistency_bursts")
    equal_now = equal_later = never = 0
    worst_lag = 0.0
    reader = _FileReader(path)
    reader.start()
    try:
        for r in range(rounds):
            tag = b"%d" % r

            async def operation(conn: HttpConnection, i: int, tag=tag):
                if i % 4 == 3:
                    return await conn.request(
                        b"POST", timeline_path,
                        b'{"message":"burst %s-%d","type":"update"}' % (tag, i))
                return await conn.request(
                    b"PATCH", task_path,
                    b'{"description":"burst %s-%d","status":"%s","priority":"%s"}'
                    % (tag, i, STATUSES[i % 4], PRIORITIES[i % 3]))

            part = Measurement("", "")
            await closed_loop(conns, ops_per_round, operation, part, server_pid)
            m.latencies += part.latencies
            m.ops += part.ops
            m.seconds += part.seconds
            m.client_cpu += part.client_cpu
            if part.server_cpu is not None:
                m.server_cpu = (m.server_cpu or 0.0) + part.server_cpu
            if part.other_cpu is not None:
                m.other_cpu = (m.other_cpu or 0.0) + part.other_cpu
            m.errors += part.errors
            m.first_error = m.first_error or part.first_error
            status, body = await first.request(b"GET", task_path)
            served = orjson.loads(body)
            if _read_json(path) == served:
                equal_now += 1
                continue
            t0 = time.perf_counter()
            deadline = t0 + 5.0
            while time.perf_counter() < deadline:
                await asyncio.sleep(0.01)
                if _read_json(path) == served:
                    equal_later += 1
                    worst_lag = max(worst_lag, time.perf_counter() - t0)
                    break
            else:
                never += 1
    finally:
        reader.stop.set()
        reader.join()
    m.concurrency = len(conns)
    scan = await asyncio.to_thread(scan_json_files, data_dir)
    result = {
        "rounds": rounds, "ops_per_round": ops_per_round,
        "file_equals_get_immediately": equal_now, "file_equals_get_later": equal_later,
        "file_never_equals_get": never, "worst_lag_s": round(worst_lag, 3),
        "concurrent_reads": reader.reads, "torn_reads": reader.torn,
        "missing_reads": reader.missing, **scan,
    }
    m.notes.append(f"file == GET after {equal_now}/{rounds} bursts"
                   + (f" (+{equal_later} within {worst_lag:.2f} s)" if equal_later else "")
                   + f"; torn reads {reader.torn}/{reader.reads}, missing {reader.missing}"
                   + f"; torn files {scan['torn_files']}/{scan['json_files']:,}")
    m.extra = result
    return m, result
