"""A workload for crash tests: several threads drive a real server with concurrent writes and
remember exactly what it acknowledged; after a `kill -9` and a restart, `check_recovered` reads
the data directory back, file by file, and holds it against that record.

What "acknowledged" promises (SPEC §0.2, issue 2): every change answered with 2xx is there
after the restart, in that state or a later one. Tasks are only ever added to here and their
timelines only grow, so "at least the acknowledged state" is a subset check on timeline entries.
A session is driven by one thread at a time, so after a crash it is in the state of its last
acknowledged change or in that of the one request that was in flight when the server died."""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ABSENT = "absent"  # a session that does not exist (never created, or deleted)
ENTITY_FOLDERS = ("projects", "tasks", "sessions")


@dataclass
class SessionFate:
    """What a session may look like after a crash: `acked` (its last acknowledged state: a
    list of task ids or ABSENT) or `pending` (the state its in-flight request would leave)."""

    acked: list[str] | str
    pending: list[str] | str | None = None

    def allowed(self) -> list:
        return [self.acked] + ([self.pending] if self.pending is not None else [])


@dataclass
class Acknowledged:
    """Everything the server acknowledged over all cycles."""

    projects: set[str] = field(default_factory=set)
    tasks: dict[str, str] = field(default_factory=dict)  # task id -> project id
    messages: dict[str, set[str]] = field(default_factory=dict)  # task id -> timeline messages
    started: dict[str, set[str]] = field(default_factory=dict)  # task id -> linked session ids
    sessions: dict[str, SessionFate] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    unexpected: list[str] = field(default_factory=list)
    acked_requests: int = 0

    def task_pool(self) -> list[str]:
        with self.lock:
            return list(self.tasks)


class Worker(threading.Thread):
    """One client: a random mix of the writes a team of agents makes, until the server dies."""

    def __init__(self, name: str, url: str, acked: Acknowledged, sessions: list[str],
                 rng: random.Random):
        super().__init__(name=name, daemon=True)
        self.url = url
        self.acked = acked
        self.own_sessions = sessions  # sessions only this worker touches
        self.rng = rng
        self.counter = 0

    def run(self) -> None:
        ops = [self.create_task, self.patch_task, self.append_timeline, self.create_session,
               self.patch_session, self.delete_session, self.create_project]
        weights = [3, 4, 4, 2, 2, 1, 0.2]
        with httpx.Client(base_url=self.url, timeout=10.0, trust_env=False) as client:
            self.client = client
            while True:
                op = self.rng.choices(ops, weights)[0]
                try:
                    op()
                except httpx.TransportError:
                    return  # the server is gone: the request in flight has an unknown outcome
                except AssertionError as exc:
                    with self.acked.lock:
                        self.acked.unexpected.append(f"{self.name}: {exc}")
                    return

    # ------------------------------------------------------------------ helpers
    def marker(self) -> str:
        self.counter += 1
        return f"{self.name}-{self.counter}-{self.rng.randrange(10**6)}"

    def expect(self, resp: httpx.Response, status: int) -> dict:
        assert resp.status_code == status, \
            f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text}"
        with self.acked.lock:
            self.acked.acked_requests += 1
        return resp.json()

    def some_tasks(self, low: int, high: int) -> list[str]:
        pool = self.acked.task_pool()
        return self.rng.sample(pool, min(len(pool), self.rng.randint(low, high)))

    # ------------------------------------------------------------------ operations
    def create_project(self) -> None:
        body = self.expect(self.client.post("/api/projects", json={"name": self.marker()}), 201)
        with self.acked.lock:
            self.acked.projects.add(body["id"])

    def create_task(self) -> None:
        with self.acked.lock:
            project_id = self.rng.choice(sorted(self.acked.projects))
        body = self.expect(self.client.post("/api/tasks", json={
            "projectId": project_id, "title": self.marker(), "description": "Ünïcode ✓"}), 201)
        with self.acked.lock:
            self.acked.tasks[body["id"]] = project_id
            self.acked.messages[body["id"]] = set()
            self.acked.started[body["id"]] = set()

    def patch_task(self) -> None:
        pool = self.acked.task_pool()
        if not pool:
            return self.create_task()
        task_id, message = self.rng.choice(pool), self.marker()
        self.expect(self.client.patch(f"/api/tasks/{task_id}", json={
            "title": message, "status": self.rng.choice(["pending", "in_progress", "blocked"]),
            "timeline": [{"type": "update", "message": message}]}), 200)
        with self.acked.lock:
            self.acked.messages[task_id].add(message)

    def append_timeline(self) -> None:
        pool = self.acked.task_pool()
        if not pool:
            return self.create_task()
        task_id, message = self.rng.choice(pool), self.marker()
        self.expect(self.client.post(f"/api/tasks/{task_id}/timeline",
                                     json={"message": message, "type": "milestone"}), 200)
        with self.acked.lock:
            self.acked.messages[task_id].add(message)

    def create_session(self) -> None:
        task_ids = self.some_tasks(2, 4)
        if not task_ids:
            return self.create_task()
        session_id = f"s-{self.marker()}"
        with self.acked.lock:
            project_id = self.acked.tasks[task_ids[0]]
            self.acked.sessions[session_id] = SessionFate(ABSENT, list(task_ids))
        body = self.expect(self.client.post("/api/sessions", json={
            "id": session_id, "projectId": project_id, "taskIds": task_ids}), 201)
        assert body["taskIds"] == task_ids, body
        with self.acked.lock:
            self.acked.sessions[session_id] = SessionFate(list(task_ids))
            for task_id in task_ids:
                self.acked.started[task_id].add(session_id)
        self.own_sessions.append(session_id)

    def patch_session(self) -> None:
        if not self.own_sessions:
            return self.create_session()
        session_id = self.rng.choice(self.own_sessions)
        task_ids = self.some_tasks(0, 4)
        fate = self.acked.sessions[session_id]
        with self.acked.lock:
            fate.pending = list(task_ids)
        body = self.expect(self.client.patch(f"/api/sessions/{session_id}",
                                             json={"taskIds": task_ids}), 200)
        assert body["taskIds"] == task_ids, body
        with self.acked.lock:
            added = set(task_ids) - set(fate.acked)
            fate.acked, fate.pending = list(task_ids), None
            for task_id in added:
                self.acked.started[task_id].add(session_id)

    def delete_session(self) -> None:
        if not self.own_sessions:
            return self.create_session()
        session_id = self.rng.choice(self.own_sessions)
        fate = self.acked.sessions[session_id]
        with self.acked.lock:
            fate.pending = ABSENT
        self.expect(self.client.delete(f"/api/sessions/{session_id}"), 200)
        with self.acked.lock:
            fate.acked, fate.pending = ABSENT, None
        self.own_sessions.remove(session_id)


# ---------------------------------------------------------------------- reading the disk
def read_entities(data_dir: Path) -> dict[str, dict[str, dict]]:
    """Every entity file of the data directory, parsed; fails on a file that does not parse
    (a torn write) or whose name is not its id."""
    out: dict[str, dict[str, dict]] = {"project": {}, "task": {}, "session": {}}
    files = [("project", p) for p in (data_dir / "projects").glob("*.json")]
    files += [("task", p) for p in (data_dir / "tasks").glob("*/*.json")]
    files += [("task", p) for p in (data_dir / "tasks").glob("*.json")]
    files += [("session", p) for p in (data_dir / "sessions").glob("*.json")]
    for kind, path in files:
        raw = path.read_bytes()
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise AssertionError(f"torn or corrupt file {path}: {exc}: {raw[:80]!r}") from None
        assert isinstance(value, dict) and path.name == f"{value['id']}.json", path
        assert value["id"] not in out[kind], f"{kind} {value['id']} stored twice"
        out[kind][value["id"]] = value
    return out


def leftover_temp_files(data_dir: Path) -> list[Path]:
    """Files in the entity folders that are not `*.json` entity files."""
    found = []
    for folder in ENTITY_FOLDERS:
        for path in (data_dir / folder).rglob("*"):
            if path.is_file() and not path.name.endswith(".json"):
                found.append(path)
    return found


def link_violations(entities: dict[str, dict[str, dict]]) -> list[str]:
    """Pairs breaking SPEC §8: taskId ∈ session.taskIds ⇔ sessionId ∈ task.sessionIds."""
    tasks, sessions = entities["task"], entities["session"]
    bad = []
    for s in sessions.values():
        for tid in s["taskIds"]:
            if tid in tasks and s["id"] not in tasks[tid]["sessionIds"]:
                bad.append(f"session {s['id']} lists task {tid}, which does not list it")
    for t in tasks.values():
        for sid in t["sessionIds"]:
            if sid in sessions and t["id"] not in sessions[sid]["taskIds"]:
                bad.append(f"task {t['id']} lists session {sid}, which does not list it")
    return bad


def check_recovered(entities: dict[str, dict[str, dict]], acked: Acknowledged) -> None:
    """Every acknowledged change is in `entities` (read from disk after a restart); settles
    the fate of sessions whose last request had an unknown outcome."""
    assert not acked.unexpected, acked.unexpected
    missing_projects = acked.projects - set(entities["project"])
    assert not missing_projects, f"acknowledged projects lost: {missing_projects}"
    for task_id, project_id in acked.tasks.items():
        task = entities["task"].get(task_id)
        assert task is not None, f"acknowledged task {task_id} lost"
        assert task["projectId"] == project_id
        messages = {e.get("message") for e in task["timeline"]}
        lost = acked.messages[task_id] - messages
        assert not lost, f"task {task_id} lost acknowledged timeline entries {lost}"
        started = {e.get("sessionId") for e in task["timeline"]
                   if e["type"] == "session_started"}
        unlinked = acked.started[task_id] - started
        assert not unlinked, f"task {task_id} lost acknowledged session links {unlinked}"
    for session_id, fate in acked.sessions.items():
        session = entities["session"].get(session_id)
        state = ABSENT if session is None else session["taskIds"]
        assert state in fate.allowed(), \
            f"session {session_id} is {state}, expected one of {fate.allowed()}"
        fate.acked, fate.pending = state, None
    violations = link_violations(entities)
    assert not violations, violations[:10]
