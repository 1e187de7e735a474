"""Helpers shared by the black-box API tests: an HTTP client, polling until something holds, a
WebSocket collector with a ping/pong barrier, snapshots of the data directory, and checks of the
entity files against what the API returns."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from servers import ServerProcess
from websockets.sync.client import connect

JSON_TYPE = "application/json; charset=utf-8"
# Files that belong to the store's own machinery, not to the original's layout.
# The store's own files: the journal (and the previous one while a checkpoint syncs it in the
# background) and the data-directory lock.
MACHINERY_FILES = {"journal", "journal.old", ".maestro.lock"}

PROJECT_KEYS = {"id", "name", "workingDir", "description", "createdAt", "updatedAt"}
TASK_KEYS = {"id", "projectId", "parentId", "title", "description", "initialPrompt", "status",
             "priority", "sessionIds", "skillIds", "agentIds", "dependencies", "timeline",
             "createdAt", "updatedAt", "startedAt", "completedAt"}
SESSION_KEYS = {"id", "projectId", "taskIds", "name", "status", "env", "events", "startedAt",
                "lastActivity", "completedAt", "hostname", "platform"}
ERROR_KEYS = {"error", "code", "message", "details", "statusCode"}

ID_RE = {kind: re.compile(rf"^{prefix}_\d{{13}}_[0-9a-z]{{1,9}}$")
         for kind, prefix in (("project", "proj"), ("task", "task"), ("session", "sess"),
                              ("event", "evt"))}


# ------------------------------------------------------------------ servers and clients
def http_client(srv: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=30.0, trust_env=False)


def write_then_kill(srv: ServerProcess, action: Callable[[httpx.Client], Any],
                    attempts: int = 5) -> Any:
    """Start `srv`, run `action(api)` and `kill -9` the server at once, while the journal still
    holds the changes (a checkpoint waits for 1 s of idleness). Returns what `action` returned."""
    journal = srv.data_dir / "journal"
    for _ in range(attempts):
        srv.start()
        with http_client(srv) as api:
            result = action(api)
        srv.kill()
        if journal.stat().st_size:
            return result
    raise AssertionError("a checkpoint emptied the journal before the kill every time")


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def wait_for_item(take: Callable[[float], Any], predicate: Callable[[Any], Any],
                  timeout: float, seen: list | None = None, what: str = "item") -> Any:
    """Take items one by one (`take(seconds)` waits at most that long for the next one and
    raises `queue.Empty` when none came) until one satisfies `predicate`; returns it. Every
    item taken is appended to `seen`; fail after `timeout` seconds."""
    seen = [] if seen is None else seen
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            item = take(left)
        except queue.Empty:
            continue
        seen.append(item)
        if predicate(item):
            return item
    raise AssertionError(f"no matching {what} within {timeout}s; saw: {seen}")


# ------------------------------------------------------------------ responses
def ok(resp: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a successful response, after checking status and content type."""
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: " \
        f"expected {status}, got {resp.status_code}: {resp.text}"
    assert resp.headers["content-type"] == JSON_TYPE
    return resp.json()


def assert_error(resp: httpx.Response, status: int, code: str,
                 message: str | None = None) -> dict:
    """Check the error body of SPEC §6.1; returns it."""
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: " \
        f"expected {status}, got {resp.status_code}: {resp.text}"
    assert resp.headers["content-type"] == JSON_TYPE
    body = resp.json()
    assert isinstance(body, dict)
    assert body["error"] is True
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= ERROR_KEYS, body
    if message is not None:
        assert body["message"] == message, body
    return body


def assert_documented(document: dict, resp: httpx.Response, method: str, path: str) -> Any:
    """The answer's status is one /openapi.json gives for `method path`, and its body matches
    the schema given for that status; returns the body."""
    import jsonschema

    op = document["paths"][path][method.lower()]
    spec = op["responses"].get(str(resp.status_code))
    assert spec is not None, f"{method} {path} answered undocumented {resp.status_code}: " \
        f"{resp.text}"
    schema = spec["content"]["application/json"]["schema"]
    body = resp.json()
    jsonschema.validate(body, {**schema, "components": document["components"]})
    return body


# ------------------------------------------------------------------ entity factories
def new_project(api: httpx.Client, **fields) -> dict:
    body = {"name": "Project", **fields}
    return ok(api.post("/api/projects", json=body), 201)


def new_task(api: httpx.Client, project_id: str, **fields) -> dict:
    body = {"projectId": project_id, "title": "Task", **fields}
    return ok(api.post("/api/tasks", json=body), 201)


def new_session(api: httpx.Client, project_id: str, task_ids: list[str] | None = None,
                **fields) -> dict:
    body = {"projectId": project_id, "taskIds": task_ids or [], **fields}
    return ok(api.post("/api/sessions", json=body), 201)


def get(api: httpx.Client, kind: str, eid: str) -> dict:
    return ok(api.get(f"/api/{kind}s/{eid}"))


# ------------------------------------------------------------------ files on disk
def entity_path(data_dir: Path, kind: str, entity: dict) -> Path:
    if kind == "task":
        return data_dir / "tasks" / entity["projectId"] / f"{entity['id']}.json"
    return data_dir / f"{kind}s" / f"{entity['id']}.json"


def pretty(value: Any) -> bytes:
    """The original's `JSON.stringify(value, null, 2)`: 2-space indent, literal non-ASCII, key
    order kept, no trailing newline."""
    return json.dumps(value, indent=2, ensure_ascii=False).encode()


def assert_file_matches(data_dir: Path, kind: str, entity: dict) -> None:
    """The entity file exists at its layout path and is exactly the pretty JSON of `entity`."""
    path = entity_path(data_dir, kind, entity)
    assert path.is_file(), f"missing {path}"
    data = path.read_bytes()
    assert not data.endswith(b"\n"), f"{path} ends with a newline"
    assert json.loads(data) == entity
    assert data == pretty(entity), f"{path} is not 2-space pretty JSON in GET's key order"


def assert_stored(api: httpx.Client, data_dir: Path, kind: str, eid: str) -> dict:
    """GET the entity and check its file equals it byte for byte; returns the entity."""
    entity = get(api, kind, eid)
    assert_file_matches(data_dir, kind, entity)
    return entity


def tree_snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder (None) under `root`, except the store's journal,
    lock file and spare files (blank files it makes ahead of time, never read) and server
    logs."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.name in MACHINERY_FILES or path.name.endswith(".log") \
                or ".spares" in path.relative_to(root).parts:
            continue
        try:
            out[rel] = None if path.is_dir() else path.read_bytes()
        except FileNotFoundError:  # gone since the listing: absent from this snapshot
            continue
    return out


def api_snapshot(api: httpx.Client) -> dict[str, Any]:
    return {kind: ok(api.get(f"/api/{kind}")) for kind in ("projects", "tasks", "sessions")}


class Snapshot:
    """Everything a refused request must leave alone: files under the server's temp folder
    (data and session directories) and the API's lists."""

    def __init__(self, api: httpx.Client, srv: ServerProcess):
        self.api = api
        self.srv = srv
        self.files = tree_snapshot(srv.tmp)
        self.lists = api_snapshot(api)

    def assert_unchanged(self) -> None:
        files = tree_snapshot(self.srv.tmp)
        added = sorted(set(files) - set(self.files))
        removed = sorted(set(self.files) - set(files))
        changed = sorted(k for k in files if k in self.files and files[k] != self.files[k])
        assert not (added or removed or changed), \
            f"files changed: added={added} removed={removed} changed={changed}"
        assert api_snapshot(self.api) == self.lists


def assert_link_invariant(api: httpx.Client, project_id: str | None = None) -> None:
    """taskId ∈ session.taskIds ⇔ sessionId ∈ task.sessionIds, for existing entities (§8), in
    one project or in all."""
    params = {"projectId": project_id} if project_id else {}
    tasks = {t["id"]: t for t in ok(api.get("/api/tasks", params=params))}
    sessions = {s["id"]: s for s in ok(api.get("/api/sessions", params=params))}
    for s in sessions.values():
        for tid in s["taskIds"]:
            if tid in tasks:
                assert s["id"] in tasks[tid]["sessionIds"], (s["id"], tid)
    for t in tasks.values():
        for sid in t["sessionIds"]:
            if sid in sessions:
                assert t["id"] in sessions[sid]["taskIds"], (sid, t["id"])


# ------------------------------------------------------------------ WebSocket
class WsClient:
    """A real WebSocket client reading in a background thread.

    `barrier()` sends `{"type":"ping"}` and returns every event received before the pong. As all
    events of a request are published before its HTTP response, and pongs are queued behind
    events, calling it after a response returns exactly the events of the requests since the
    previous barrier — no sleeps, no guessing."""

    def __init__(self, url: str, **kwargs):
        self._stack = contextlib.ExitStack()
        self.conn = self._stack.enter_context(connect(
            url, proxy=None, compression=None, max_size=None, max_queue=None, open_timeout=10,
            **kwargs))
        self.frames: queue.Queue = queue.Queue()
        self.closed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for message in self.conn:
                self.frames.put(message)
        except Exception:
            pass
        finally:
            self.closed.set()

    def send(self, text: str | bytes) -> None:
        self.conn.send(text)

    def next(self, timeout: float = 15.0) -> dict:
        try:
            raw = self.frames.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no WebSocket message within the deadline") from None
        return json.loads(raw)

    def collect(self, count: int, timeout: float = 30.0) -> list[dict]:
        """Exactly `count` messages, waiting at most `timeout` seconds in all."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < count:
            out.append(self.next(max(0.01, deadline - time.monotonic())))
        return out

    def barrier(self, timeout: float = 15.0) -> list[dict]:
        self.send(json.dumps({"type": "ping"}))
        deadline = time.monotonic() + timeout
        events = []
        while True:
            message = self.next(max(0.01, deadline - time.monotonic()))
            if message.get("type") == "pong":
                return events
            events.append(message)

    def close(self) -> None:
        try:
            self._stack.close()
        except Exception:
            pass
        self.reader.join(5)

    def __enter__(self) -> WsClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def event_types(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def assert_envelope(event: dict) -> None:
    """SPEC §10.2: {type, event (== type), data, timestamp (ms)}."""
    assert {"type", "event", "data"} <= set(event), event
    assert event["event"] == event["type"]
    assert isinstance(event["timestamp"], int) and not isinstance(event["timestamp"], bool)
    assert abs(event["timestamp"] - int(time.time() * 1000)) < 600_000
