"""Every domain rule of Maestro: defaults, timestamps, hierarchy, task<->session links, events.

Adapters (HTTP, WebSocket, CLI, launcher) call these methods with parsed JSON bodies; the methods
validate everything first, then change memory through a `Tx`, and return once the change is
durable and its events are published. Reads are served from memory and its indexes.

Two pictures of the data are kept in memory, holding the same (immutable) entity objects: the
working state, which every mutation reads and changes at once so that the next one builds on
it, and the committed view, which the committer brings up to date only once a batch is durable.
Everything that answers a reader (GET, lists, rights checks, the launcher) sees the committed
view, so a change that is refused by the store (a full disk) was never visible to anyone.
`self.state` is the working state while a mutation's `apply` runs (it runs synchronously, with
no await inside) and the committed view everywhere else."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from . import jsonio
from . import validate as v
from .commit import Committer, Tx, settle_memory, tune_collector
from .coordination import Coordination
from .entities import as_list as _list
from .entities import bump as _bump
from .entities import fill_session_event, fill_timeline_entry, migrate_session, migrate_task, \
    session_event, timeline_entry
from .entities import with_changes as _with
from .errors import ApiError, not_found, project_not_found, session_not_found, task_not_found, \
    validation
from .events import EventBus
from .identity import REVOKED_FIELD, may_hold_token
from .ids import is_valid_client_id, make_id, now_ms
from .listing import Listing, session_filter, task_filter
from .plan import Planning
from .ready_index import ReadyIndex
from .state import State
from .store.base import LoadResult, Store
from .workspace.options import project_settings
from .workspace.records import WorkspaceRecords

log = logging.getLogger("maestro.service")

FINAL_SESSION_STATUSES = ("completed", "failed")
# Largest compact JSON of one appended entry (session event, session or task timeline entry);
# the server sets it from MAESTRO_MAX_ENTRY_BYTES.
MAX_ENTRY_BYTES = 64 * 1024


def _is_active(session: dict) -> bool:
    return session.get("status") not in FINAL_SESSION_STATUSES


class Service(Listing, Coordination, WorkspaceRecords, Planning):
    def __init__(self, store: Store, bus: EventBus | None = None):
        self.store = store
        self.bus = bus or EventBus()
        self.view = State()
        self.working = State(twin=self.view)
        self._applying = False
        # Readiness indexes follow each picture: mutations (a claim's check and grant) read
        # the working one, readers (`?ready=true`) the committed one.
        self._ready_working = ReadyIndex(self.working.tasks)
        self._ready_view = ReadyIndex(self.view.tasks, track_expiries=False, lazy=True)
        for index in (self._ready_working, self._ready_view):
            index.attach()
        self.lock = asyncio.Lock()
        self.committer: Committer | None = None
        self.started_monotonic = time.monotonic()
        self.load_result = LoadResult()
        self.hostname = socket.gethostname()
        self.platform = sys.platform
        self.max_entry_bytes = MAX_ENTRY_BYTES
        # Extra parts of GET /health: name -> function returning its body (e.g. workspaces).
        self.health_sections: dict[str, Callable[[], Any]] = {}

    @property
    def state(self) -> State:
        """The working state inside a mutation's `apply`, the committed view elsewhere."""
        return self.working if self._applying else self.view

    @property
    def ready_index(self) -> ReadyIndex:
        """The readiness indexes of `state` (the committed view's brought up to date)."""
        if self._applying:
            return self._ready_working
        self._ready_view.catch_up()
        return self._ready_view

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        tune_collector()  # before loading: no full collections while 50k entities arrive
        result = await asyncio.to_thread(self.store.open)
        self.load_result = result
        self._load(result)
        settle_memory(full=True)
        self.committer = Committer(self.store, self.bus, self.lock, state=self.working,
                                   view=self.view)
        self.committer.start()
        self.start_sweeper()

    def _load(self, result: LoadResult) -> None:
        tasks = [migrate_task(t) for t in result.tasks]
        sessions = [migrate_session(s) for s in result.sessions]
        for state, index in ((self.working, self._ready_working),
                             (self.view, self._ready_view)):
            for p in result.projects:
                state.projects.put(p)
            index.suspended = True  # built once below, not task by task
            for t in tasks:
                state.tasks.put(t)
            index.suspended = False
            index.rebuild()
            for s in sessions:
                state.sessions.put(s)
        repaired = self._repair_links()
        if repaired:
            result.notes.append(f"repaired {repaired} one-sided task/session link(s) in memory")
        log.info("loaded %d project(s), %d task(s), %d session(s)", len(self.state.projects),
                 len(self.state.tasks), len(self.state.sessions))

    def _repair_links(self) -> int:
        """Count one-sided links found at start-up (the journal keeps ours two-sided; a
        directory edited by hand or written by the original may not be). Left as found: the
        original's data is preserved verbatim; counted for the log."""
        count = 0
        for s in self.state.sessions.rows.values():
            for tid in _list(s.get("taskIds")):
                t = self.state.tasks.get(tid)
                if t is not None and s["id"] not in _list(t.get("sessionIds")):
                    count += 1
        if count:
            log.warning("data directory holds %d one-sided task/session link(s)", count)
        return count

    async def stop(self) -> None:
        await self.stop_sweeper()
        if self.committer is not None:
            async with self.lock:  # no new mutation gets in after this point
                pass
            await self.committer.close()
        self.store.detach_loop()
        await asyncio.to_thread(self.store.close)

    # ------------------------------------------------------------ mutation plumbing
    async def _mutate(self, fn: Callable[[Tx], Any]) -> Any:
        async with self.lock:
            tx = Tx(self.working)
            self._applying = True
            try:
                result = fn(tx)
                if tx.changed:
                    check = getattr(self.store, "check_op", None)
                    ops = tx.ops()
                    if check is not None:
                        for op in ops:
                            try:
                                check(op)
                            except ValueError as exc:
                                raise validation(str(exc)) from None
            except BaseException:
                tx.rollback()
                raise
            finally:
                self._applying = False
            assert self.committer is not None, "service not started"
            if not tx.changed:
                if not tx.events:
                    return result
                # Events of a change that wrote nothing still wait for the changes before
                # them, so a listener never hears of something not yet committed.
                fut = self.committer.after_pending(tx)
            else:
                fut = self.committer.submit(tx)
        if fut is not None:
            await fut
        return result

    async def flush_files(self) -> None:
        """Return once every entity file holds what was committed so far (files of big
        entities otherwise catch up within seconds): for readers of DATA_DIR (SPEC §5.5)."""
        if self.committer is not None:
            await self.committer.flush()

    # ------------------------------------------------------------ health
    def health(self) -> dict:
        storage = self.store.health()
        storage["notes"] = list(self.load_result.notes)
        if self.committer is not None:
            storage["commits"] = self.committer.stats()
        body = {
            "status": "ok",
            "timestamp": now_ms(),
            "uptime": time.monotonic() - self.started_monotonic,
            "storage": storage,
            "counts": {"projects": len(self.state.projects), "tasks": len(self.state.tasks),
                       "sessions": len(self.state.sessions)},
        }
        for name, section in self.health_sections.items():
            body[name] = section()
        return body

    # ------------------------------------------------------------ projects
    def list_projects(self) -> list[dict]:
        return self.state.projects.ordered()

    def get_project(self, project_id: str) -> dict:
        p = self.state.projects.get(project_id)
        if p is None:
            raise project_not_found(project_id)
        return p

    async def create_project(self, body: dict) -> dict:
        name = v.string(body, "name", required_message="name is required",
                        nonblank_message="name is required", max_len=v.MAX_TEXT)
        working_dir = v.string(body, "workingDir") or ""
        description = v.string(body, "description") or ""
        workspace = project_settings(body)

        def apply(tx: Tx) -> dict:
            now = now_ms()
            project = {"id": make_id("proj", now), "name": name.strip(), "workingDir": working_dir,
                       "description": description, **workspace, "createdAt": now,
                       "updatedAt": now}
            tx.put("project", project)
            tx.emit("project:created", project)
            return project

        return await self._mutate(apply)

    async def update_project(self, project_id: str, body: dict) -> dict:
        name = v.string(body, "name", nonblank_message="name cannot be empty", max_len=v.MAX_TEXT)
        working_dir = v.string(body, "workingDir")
        description = v.string(body, "description")
        workspace = project_settings(body)

        def apply(tx: Tx) -> dict:
            old = self.get_project(project_id)
            changes: dict[str, Any] = dict(workspace)
            if name is not None:
                changes["name"] = name.strip()
            if working_dir is not None:
                changes["workingDir"] = working_dir
            if description is not None:
                changes["description"] = description
            changes["updatedAt"] = _bump(old.get("updatedAt"))
            project = tx.put("project", _with(old, **changes))
            tx.emit("project:updated", project)
            return project

        return await self._mutate(apply)

    async def delete_project(self, project_id: str, cascade: bool = False) -> dict:
        """§7.2.5: refused while the project has tasks or sessions, unless `cascade`: then its
        sessions (their agent tokens die with them, and the launcher stops their agents),
        its tasks (children before parents) and the project go in one change."""
        def apply(tx: Tx) -> dict:
            self.get_project(project_id)
            if cascade:
                return self._delete_project_tree(tx, project_id)
            n_tasks = len(self.state.tasks.indexes["projectId"].get(project_id))
            if n_tasks:
                raise ApiError(400, "PROJECT_HAS_DEPENDENCIES",
                               f"Cannot delete project with {n_tasks} existing task(s)",
                               {"projectId": project_id, "tasks": n_tasks})
            n_sessions = len(self.state.sessions.indexes["projectId"].get(project_id))
            if n_sessions:
                raise ApiError(400, "PROJECT_HAS_DEPENDENCIES",
                               f"Cannot delete project with {n_sessions} existing session(s)",
                               {"projectId": project_id, "sessions": n_sessions})
            tx.delete("project", project_id)
            tx.emit("project:deleted", {"id": project_id})
            return {"success": True, "id": project_id}

        return await self._mutate(apply)

    def _delete_project_tree(self, tx: Tx, project_id: str) -> dict:
        sessions = [s["id"] for s in self.state.sessions.query({"projectId": project_id})]
        for sid in sessions:
            self._delete_session_in_tx(tx, sid)
        task_ids = [t["id"] for t in self.state.tasks.query({"projectId": project_id})]
        doomed = set(task_ids)

        def depth(tid: str) -> int:  # levels above `tid` inside this project
            seen, level = {tid}, 0
            parent = self.state.tasks.get(tid).get("parentId")
            while parent in doomed and parent not in seen:
                seen.add(parent)
                level += 1
                parent = self.state.tasks.get(parent).get("parentId")
            return level

        ordered = sorted(task_ids, key=depth, reverse=True)  # children before their parents
        for tid in ordered:
            self._delete_one_task(tx, tid, doomed)
        tx.delete("project", project_id)
        tx.emit("project:deleted", {"id": project_id})
        return {"success": True, "id": project_id,
                "deleted": {"sessions": sessions, "tasks": ordered}}

    # ------------------------------------------------------------ tasks
    def list_tasks(self, project_id: str | None = None, status: str | None = None,
                   parent_id: str | None = None) -> list[dict]:
        return self.state.tasks.query(task_filter(project_id, status, parent_id))

    def get_task(self, task_id: str) -> dict:
        t = self.state.tasks.get(task_id)
        if t is None:
            raise task_not_found(task_id)
        return t

    def task_children(self, task_id: str) -> list[dict]:
        self.get_task(task_id)
        return self.state.tasks.query({"parentId": task_id})

    async def create_task(self, body: dict) -> dict:
        project_id = v.string(body, "projectId", required_message="projectId is required",
                              nonblank_message="projectId is required")
        v.ident(project_id, "projectId")
        title = v.string(body, "title", required_message="title is required",
                         nonblank_message="title is required", max_len=v.MAX_TEXT)
        priority = v.enum(body, "priority", v.TASK_PRIORITIES) or "medium"
        description = v.string(body, "description") or ""
        initial_prompt = v.string(body, "initialPrompt") or ""
        skill_ids = v.string_list(body, "skillIds") or []
        parent_id = body.get("parentId")
        if parent_id is not None:
            v.ident(parent_id, "parentId")
        parent_id = parent_id or None
        wanted = v.string_list(body, "dependencies", ids=True) or []

        def apply(tx: Tx) -> dict:
            if self.state.projects.get(project_id) is None:
                raise project_not_found(project_id)
            if parent_id is not None and self.state.tasks.get(parent_id) is None:
                raise task_not_found(parent_id, "Parent task not found")
            # A new task has no incoming edges: its dependencies cannot close a cycle.
            dependencies = self._checked_dependencies(None, project_id, wanted, [])
            now = now_ms()
            task = {
                "id": make_id("task", now), "projectId": project_id, "parentId": parent_id,
                "title": title.strip(), "description": description,
                "initialPrompt": initial_prompt, "status": "pending", "priority": priority,
                "sessionIds": [], "skillIds": list(skill_ids), "agentIds": [],
                "dependencies": dependencies,
                "timeline": [{"id": make_id("evt", now), "type": "created", "timestamp": now,
                              "message": "Task created"}],
                "createdAt": now, "updatedAt": now, "startedAt": None, "completedAt": None,
            }
            tx.put("task", task)
            tx.emit("task:created", task)
            return task

        return await self._mutate(apply)

    def _is_descendant(self, candidate: str, ancestor: str) -> bool:
        """True if `candidate` is `ancestor` or lies below it in the hierarchy."""
        seen = set()
        stack = [ancestor]
        while stack:
            current = stack.pop()
            if current == candidate:
                return True
            if current in seen:
                continue
            seen.add(current)
            stack.extend(self.state.tasks.indexes["parentId"].get(current))
        return False

    async def update_task(self, task_id: str, body: dict, *, actor: str | None = None,
                          claim_token: int | None = None) -> dict:
        """PATCH /api/tasks/:id. `actor` is the session of an agent identity (None: the user);
        `claim_token` the X-Maestro-Claim-Token the writer presents (fencing, §15.3)."""
        from_session = body.get("updateSource") == "session"
        title = v.string(body, "title", nonblank_message="title cannot be empty",
                         max_len=v.MAX_TEXT)
        description = v.string(body, "description")
        status = v.enum(body, "status", v.TASK_STATUSES)
        priority = v.enum(body, "priority", v.TASK_PRIORITIES)
        session_status = v.enum(body, "sessionStatus", v.SESSION_TASK_STATUSES)
        has_parent = "parentId" in body
        parent_id = body.get("parentId")
        if parent_id is not None:
            v.ident(parent_id, "parentId")
        session_ids = v.string_list(body, "sessionIds", ids=True)
        skill_ids = v.string_list(body, "skillIds")
        agent_ids = v.string_list(body, "agentIds")
        timeline = v.object_list(body, "timeline")
        new_events = [timeline_entry(e) for e in timeline] if timeline else []
        wanted = v.string_list(body, "dependencies", ids=True)
        reporter = actor
        if from_session:  # E3: a session reports its own view; only sessionStatus applies
            title = description = status = priority = None
            has_parent = False
            session_ids = skill_ids = agent_ids = wanted = None
            new_events = []
            said = body.get("sessionId")
            if reporter is None and isinstance(said, str) and said:
                reporter = v.ident(said, "sessionId")

        def apply(tx: Tx) -> dict:
            old = self.get_task(task_id)
            self.fence(old, reporter, claim_token)
            if has_parent and parent_id is not None:
                if self.state.tasks.get(parent_id) is None:
                    raise task_not_found(parent_id, "Parent task not found")
                if self._is_descendant(parent_id, task_id):
                    raise validation("A task cannot be its own parent or the child of one of its "
                                     "descendants", {"taskId": task_id, "parentId": parent_id})
            dependencies = None
            if wanted is not None:
                dependencies = self._checked_dependencies(
                    old, old.get("projectId"), wanted, _list(old.get("dependencies")))
            now = _bump(old.get("updatedAt"))
            task = dict(old)
            if dependencies is not None:
                task["dependencies"] = dependencies
            if title is not None:
                task["title"] = title.strip()
            if description is not None:
                task["description"] = description
            if status is not None:
                task["status"] = status
                if status == "in_progress" and task.get("startedAt") is None:
                    task["startedAt"] = now
                if status == "completed" and task.get("completedAt") is None:
                    task["completedAt"] = now
            if priority is not None:
                task["priority"] = priority
            if has_parent:
                task["parentId"] = parent_id
            if has_parent or dependencies is not None:
                self._refuse_cycle(task, self._new_edges(old, task))
            if skill_ids is not None:
                task["skillIds"] = list(skill_ids)
            if agent_ids is not None:
                task["agentIds"] = list(agent_ids)
            if session_status is not None:
                task["sessionStatus"] = session_status
                # Who reported it: when that session ends, the board is set right (§15.5).
                if reporter is not None:
                    task["sessionStatusBy"] = reporter
                else:
                    task.pop("sessionStatusBy", None)
            ended_claim = None
            if status in ("pending", "completed") and isinstance(task.get("claim"), dict):
                ended_claim = task["claim"]  # completing or reopening a task ends its claim
                task["claim"] = None
            if new_events:
                entries = [fill_timeline_entry(e) for e in new_events]
                for entry in entries:
                    self._check_entry(entry, "Timeline entry")
                task["timeline"] = tx.extend(old.get("timeline"), entries)
            task["updatedAt"] = now
            tx.put("task", task)
            link_events = self._sync_task_sessions(tx, task_id, session_ids) \
                if session_ids is not None else []
            final = self.state.tasks.get(task_id)
            if ended_claim is not None:
                tx.emit("task:claim_released", {"taskId": task_id,
                                                "sessionId": ended_claim.get("sessionId"),
                                                "token": ended_claim.get("token")})
            tx.emit("task:updated", final)
            for kind, sid in link_events:
                tx.emit(f"session:task_{kind}", {"sessionId": sid, "taskId": task_id})
                tx.emit(f"task:session_{kind}", {"taskId": task_id, "sessionId": sid})
                tx.emit("session:updated", self.state.sessions.get(sid))
            if status == "completed" and old.get("status") != "completed":
                self._handoff(tx, task_id)
            return final

        return await self._mutate(apply)

    def _sync_task_sessions(self, tx: Tx, task_id: str, wanted: list[str]) \
            -> list[tuple[str, str]]:
        """PATCH task `sessionIds`: the new full list, kept in sync on both sides (the data-model
        document: "storage layer handles bidirectional updates"), mirroring PATCH session
        `taskIds`. Unknown new sessions are refused; vanished ones are just dropped."""
        wanted = v.dedupe(wanted)
        current = _list(self.state.tasks.get(task_id).get("sessionIds"))
        for sid in wanted:
            if sid not in current and self.state.sessions.get(sid) is None:
                raise session_not_found(sid)
        changes: list[tuple[str, str]] = []
        for sid in current:
            if sid in wanted:
                continue
            if self.state.sessions.get(sid) is None:
                cur = self.state.tasks.get(task_id)
                tx.put("task", _with(cur, sessionIds=[s for s in _list(cur["sessionIds"])
                                                      if s != sid]))
                continue
            self._unlink(tx, sid, task_id)
            changes.append(("removed", sid))
        for sid in wanted:
            if sid in current:
                continue
            self._link(tx, sid, task_id)
            changes.append(("added", sid))
        cur = self.state.tasks.get(task_id)
        if _list(cur.get("sessionIds")) != wanted:
            tx.put("task", _with(cur, sessionIds=list(wanted)))
        return changes

    async def add_timeline_event(self, task_id: str, body: dict, *, actor: str | None = None,
                                 claim_token: int | None = None) -> dict:
        message = v.string(body, "message", required_message="message is required")
        if message == "":
            raise validation("message is required")
        type_ = v.enum(body, "type", v.TIMELINE_TYPES) or "update"
        session_id = v.string(body, "sessionId")
        if session_id is not None:
            v.ident(session_id, "sessionId")

        def apply(tx: Tx) -> dict:
            old = self.get_task(task_id)
            self.fence(old, actor, claim_token)
            now = _bump(old.get("updatedAt"))
            entry = {"id": make_id("evt", now), "type": type_, "timestamp": now,
                     "message": message}
            if session_id is not None:
                entry["sessionId"] = session_id
            self._check_entry(entry, "Timeline entry")
            task = _with(old, timeline=tx.extend(old.get("timeline"), [entry]), updatedAt=now)
            tx.put("task", task)
            tx.emit("task:updated", task)
            return task

        return await self._mutate(apply)

    async def delete_task(self, task_id: str, cascade: bool = False) -> dict:
        """§7.3.6: refused for a task with children unless `cascade` (the whole subtree,
        deepest first); each deleted task is unlinked from its sessions, dropped from the
        dependencies naming it and loses its claim."""
        def apply(tx: Tx) -> dict:
            self.get_task(task_id)
            children = self.state.tasks.indexes["parentId"].get(task_id)
            if children and not cascade:
                raise ApiError(400, "TASK_HAS_CHILDREN",
                               f"Cannot delete task with {len(children)} child task(s)",
                               {"taskId": task_id, "children": len(children)})
            doomed = self._subtree_deepest_first(task_id)
            gone = set(doomed)
            for tid in doomed:
                self._delete_one_task(tx, tid, gone)
            result: dict[str, Any] = {"success": True, "id": task_id}
            if cascade:
                result["deleted"] = doomed
            return result

        return await self._mutate(apply)

    def _subtree_deepest_first(self, task_id: str) -> list[str]:
        """`task_id` and its descendants, every task after all of its descendants."""
        children = self.state.tasks.indexes["parentId"]
        order: list[str] = []
        seen = {task_id}
        stack = [(task_id, False)]
        while stack:
            tid, expanded = stack.pop()
            if expanded:
                order.append(tid)
                continue
            stack.append((tid, True))
            for cid in reversed(list(children.get(tid))):
                if cid not in seen:
                    seen.add(cid)
                    stack.append((cid, False))
        return order

    def _delete_one_task(self, tx: Tx, task_id: str, gone: set[str]) -> None:
        task = self.state.tasks.get(task_id)
        for sid in _list(task.get("sessionIds")):
            if self.state.sessions.get(sid) is not None and self._unlink(tx, sid, task_id):
                self._emit_pair(tx, "removed", sid, task_id)
        self._drop_dependency_on(tx, task_id, gone)
        if isinstance(self.state.tasks.get(task_id).get("claim"), dict):
            self._end_claim(tx, task_id, "task:claim_released", None)
        tx.delete("task", task_id)
        tx.emit("task:deleted", {"id": task_id})

    # ------------------------------------------------------------ sessions
    def list_sessions(self, project_id: str | None = None, task_id: str | None = None,
                      status: str | None = None, active: str | None = None) -> list[dict]:
        return self.state.sessions.query(*session_filter(project_id, task_id, status, active))

    def get_session(self, session_id: str) -> dict:
        s = self.state.sessions.get(session_id)
        if s is None:
            raise session_not_found(session_id)
        return s

    def _link(self, tx: Tx, session_id: str, task_id: str) -> bool:
        """§8 link: both sides, `session_started` on the task when it gains the session."""
        session = self.state.sessions.get(session_id)
        task = self.state.tasks.get(task_id)
        changed = False
        task_ids = _list(session.get("taskIds"))
        if task_id not in task_ids:
            tx.put("session", _with(session, taskIds=task_ids + [task_id],
                                    lastActivity=_bump(session.get("lastActivity"))))
            changed = True
        return self._add_session_to_task(tx, session_id, task) or changed

    @staticmethod
    def _add_session_to_task(tx: Tx, session_id: str, task: dict) -> bool:
        """The task's half of a link: the session id and a `session_started` entry."""
        session_ids = _list(task.get("sessionIds"))
        if session_id in session_ids:
            return False
        now = _bump(task.get("updatedAt"))
        entry = {"id": make_id("evt", now), "type": "session_started", "timestamp": now,
                 "sessionId": session_id}
        tx.put("task", _with(task, sessionIds=session_ids + [session_id],
                             timeline=tx.extend(task.get("timeline"), [entry]), updatedAt=now))
        return True

    def _unlink(self, tx: Tx, session_id: str, task_id: str, *, session_gone: bool = False) \
            -> bool:
        """§8 unlink: both sides, `session_ended` on the task if either side had the link."""
        task = self.state.tasks.get(task_id)
        session = None if session_gone else self.state.sessions.get(session_id)
        had = False
        if session is not None:
            task_ids = _list(session.get("taskIds"))
            if task_id in task_ids:
                had = True
                tx.put("session", _with(session, taskIds=[t for t in task_ids if t != task_id],
                                        lastActivity=_bump(session.get("lastActivity"))))
        elif session_gone:
            had = True
        if task is not None:
            session_ids = _list(task.get("sessionIds"))
            in_task = session_id in session_ids
            if in_task or had:
                now = _bump(task.get("updatedAt"))
                entry = {"id": make_id("evt", now), "type": "session_ended", "timestamp": now,
                         "sessionId": session_id}
                tx.put("task", _with(task,
                                     sessionIds=[s for s in session_ids if s != session_id],
                                     timeline=tx.extend(task.get("timeline"), [entry]),
                                     updatedAt=now))
                had = True
        return had

    def validate_new_session(self, body: dict) -> dict:
        """Checks of POST /api/sessions that need no state; returns the normalised fields."""
        task_ids = body.get("taskIds")
        if task_ids is None and "taskIds" not in body and isinstance(body.get("taskId"), str):
            task_ids = [body["taskId"]]
        if task_ids is None:
            raise validation("taskIds is required")
        task_ids = v.string_list({"taskIds": task_ids}, "taskIds", ids=True)
        project_id = v.string(body, "projectId", required_message="projectId is required",
                              nonblank_message="projectId is required")
        v.ident(project_id, "projectId")
        sid = body.get("id")
        if sid is not None:
            if not isinstance(sid, str) or not is_valid_client_id(sid):
                raise validation("id must match ^[A-Za-z0-9_-]{1,128}$", {"field": "id"})
        name = v.string(body, "name", max_len=v.MAX_TEXT)
        agent_id = v.string(body, "agentId")
        status = v.enum(body, "status", v.SESSION_STATUSES) or "running"
        env = v.str_map(body, "env")
        metadata = v.obj(body, "metadata")
        strategy = v.enum(body, "strategy", v.STRATEGIES)
        return {"taskIds": v.dedupe(task_ids), "projectId": project_id, "id": sid,
                "name": name, "agentId": agent_id, "status": status, "env": env or {},
                "metadata": metadata, "strategy": strategy}

    def new_session_in_tx(self, tx: Tx, f: dict, *, missing_task: Callable[[str], ApiError]
                          = task_not_found, created_events: list | None = None) -> dict:
        """Create the session of `f` (from validate_new_session) and link its tasks."""
        if self.state.projects.get(f["projectId"]) is None:
            raise project_not_found(f["projectId"])
        for tid in f["taskIds"]:
            if self.state.tasks.get(tid) is None:
                raise missing_task(tid)
        sid = f["id"] or make_id("sess")
        if self.state.sessions.get(sid) is not None:
            raise validation(f"Session {sid} already exists", {"sessionId": sid})
        now = now_ms()
        # Linked in one go: the session is written once, each task once (§8 link).
        linked = list(dict.fromkeys(f["taskIds"]))
        session: dict[str, Any] = {"id": sid, "projectId": f["projectId"], "taskIds": linked,
                                   "name": f["name"] if f["name"] is not None
                                   else "Unnamed Session"}
        if f["agentId"] is not None:
            session["agentId"] = f["agentId"]
        session.update({"status": f["status"], "env": dict(f["env"]), "events": []})
        if f["metadata"] is not None:
            session["metadata"] = f["metadata"]
        if f.get("strategy") is not None:
            session["strategy"] = f["strategy"]
        if f.get("workspace") is not None:  # spawn: where the agent works (a worktree, or not)
            session["workspace"] = f["workspace"]
        session.update({"startedAt": now, "lastActivity": now,
                        "completedAt": None,
                        "hostname": self.hostname, "platform": self.platform})
        tx.put("session", session)
        for event in created_events or []:
            if event.project_id is None:
                event.project_id = f["projectId"]
            tx.events.append(event)
        tx.emit("session:created", session)
        tasks = self.state.tasks
        for tid in linked:
            self._add_session_to_task(tx, sid, tasks.get(tid))
        for tid in f["taskIds"]:
            tx.emit("task:session_added", {"taskId": tid, "sessionId": sid})
            tx.emit("task:updated", tasks.get(tid))
        return session

    async def create_session(self, body: dict) -> dict:
        fields = self.validate_new_session(body)
        return await self._mutate(lambda tx: self.new_session_in_tx(tx, fields))

    async def update_session(self, session_id: str, body: dict, *, stopped: bool = False,
                             end: dict | None = None) -> dict:
        """PATCH /api/sessions/:id. `stopped`: the launcher ends a session it stopped (its
        tasks are treated as failed whatever the status, §15.5). `end`: how its agent ended
        (`endReason`, `endMessage`), kept in the session's metadata when this ends it."""
        status = v.enum(body, "status", v.SESSION_STATUSES)
        agent_id = v.string(body, "agentId")
        task_ids = v.string_list(body, "taskIds", ids=True)
        events = v.object_list(body, "events")
        new_events = [session_event(e) for e in events] if events else []
        env = v.str_map(body, "env")

        def apply(tx: Tx) -> dict:
            old = self.get_session(session_id)
            wanted = v.dedupe(task_ids) if task_ids is not None else None
            current = _list(old.get("taskIds"))
            if wanted is not None:
                for tid in wanted:
                    if tid not in current and self.state.tasks.get(tid) is None:
                        raise task_not_found(tid)
            now = _bump(old.get("lastActivity"))
            session = dict(old)
            if status is not None:
                session["status"] = status
                if status in FINAL_SESSION_STATUSES and session.get("completedAt") is None:
                    session["completedAt"] = now
                if status in FINAL_SESSION_STATUSES and may_hold_token(session) \
                        and not session.get(REVOKED_FIELD):
                    # Written with the end itself: no crash or reopening revives the token.
                    session[REVOKED_FIELD] = now
            if agent_id is not None:
                session["agentId"] = agent_id
            if new_events:
                entries = [fill_session_event(e) for e in new_events]
                for entry in entries:
                    self._check_entry(entry, "Session event")
                session["events"] = tx.extend(old.get("events"), entries)
            if env is not None:
                merged = dict(old.get("env") or {}) if isinstance(old.get("env"), dict) else {}
                merged.update(env)
                session["env"] = merged
            if end and status in FINAL_SESSION_STATUSES and _is_active(old):
                meta = old.get("metadata")
                session["metadata"] = {**(meta if isinstance(meta, dict) else {}), **end}
            session["lastActivity"] = now
            tx.put("session", session)
            link_events: list[tuple[str, str, str]] = []
            if wanted is not None:
                for tid in current:
                    if tid in wanted:
                        continue
                    if self.state.tasks.get(tid) is None:
                        cur = self.state.sessions.get(session_id)
                        tx.put("session", _with(cur, taskIds=[t for t in _list(cur["taskIds"])
                                                              if t != tid]))
                        continue
                    self._unlink(tx, session_id, tid)
                    link_events.append(("removed", tid, session_id))
                for tid in wanted:
                    if tid in current:
                        continue
                    self._link(tx, session_id, tid)
                    link_events.append(("added", tid, session_id))
                cur = self.state.sessions.get(session_id)
                if cur.get("taskIds") != wanted:
                    tx.put("session", _with(cur, taskIds=list(wanted)))
            final = self.state.sessions.get(session_id)
            tx.emit("session:updated", final)
            for kind, tid, sid in link_events:
                pair = {"sessionId": sid, "taskId": tid}
                tx.emit(f"session:task_{kind}", pair)
                tx.emit(f"task:session_{kind}", {"taskId": tid, "sessionId": sid})
                tx.emit("task:updated", self.state.tasks.get(tid))
            if status in FINAL_SESSION_STATUSES and _is_active(old):
                self._session_ended(tx, session_id, "stopped" if stopped else status)
            return final

        return await self._mutate(apply)

    async def delete_session(self, session_id: str) -> dict:
        def apply(tx: Tx) -> dict:
            self._delete_session_in_tx(tx, session_id)
            return {"success": True, "id": session_id}

        return await self._mutate(apply)

    def _delete_session_in_tx(self, tx: Tx, session_id: str) -> None:
        """§7.4.5: remove the session, unlinking its tasks; its claims and reports end."""
        session = self.get_session(session_id)
        tx.delete("session", session_id)
        tx.emit("session:deleted", {"id": session_id})
        for tid in _list(session.get("taskIds")):
            if self.state.tasks.get(tid) is None:
                continue
            self._unlink(tx, session_id, tid, session_gone=True)
            tx.emit("task:session_removed", {"taskId": tid, "sessionId": session_id})
            tx.emit("task:updated", self.state.tasks.get(tid))
        self._session_ended(tx, session_id, "deleted")

    def _pair(self, session_id: str, task_id: str) -> None:
        if self.state.sessions.get(session_id) is None:
            raise not_found("NOT_FOUND", "Session not found", {"sessionId": session_id})
        if self.state.tasks.get(task_id) is None:
            raise not_found("NOT_FOUND", "Task not found", {"taskId": task_id})

    async def add_task_to_session(self, session_id: str, task_id: str) -> dict:
        def apply(tx: Tx) -> dict:
            self._pair(session_id, task_id)
            if self._link(tx, session_id, task_id):
                self._emit_pair(tx, "added", session_id, task_id)
            return self.state.sessions.get(session_id)

        return await self._mutate(apply)

    async def remove_task_from_session(self, session_id: str, task_id: str) -> dict:
        def apply(tx: Tx) -> dict:
            self._pair(session_id, task_id)
            if self._unlink(tx, session_id, task_id):
                self._emit_pair(tx, "removed", session_id, task_id)
            return self.state.sessions.get(session_id)

        return await self._mutate(apply)

    def _emit_pair(self, tx: Tx, kind: str, session_id: str, task_id: str) -> None:
        # Both sides may not have changed (a one-sided link is repaired): bump both so each
        # side's update event describes a real change.
        session = self.state.sessions.get(session_id)
        task = self.state.tasks.get(task_id)
        tx.emit(f"session:task_{kind}", {"sessionId": session_id, "taskId": task_id})
        tx.emit(f"task:session_{kind}", {"taskId": task_id, "sessionId": session_id})
        tx.emit("session:updated", session)
        tx.emit("task:updated", task)

    # ------------------------------------------------------------ extensions E1, E2
    async def add_session_event(self, session_id: str, body: dict) -> dict:
        if not isinstance(body.get("type"), str) or not body["type"]:
            raise validation("type is required")
        entry = {"type": body["type"]}
        if "data" in body:
            entry["data"] = v.shallow(body["data"], "data")

        def apply(tx: Tx) -> dict:
            old = self.get_session(session_id)
            now = _bump(old.get("lastActivity"))
            event = {"id": make_id("evt", now), "timestamp": now, **entry}
            self._check_entry(event, "Session event")
            session = _with(old, events=tx.extend(old.get("events"), [event]),
                            lastActivity=now)
            tx.put("session", session)
            tx.emit("session:updated", session)
            return session

        return await self._mutate(apply)

    async def add_session_timeline(self, session_id: str, body: dict) -> dict:
        message = v.string(body, "message", required_message="message is required",
                           nonblank_message="message is required")
        type_ = v.string(body, "type") or "progress"
        task_id = v.string(body, "taskId")
        if task_id is not None:
            v.ident(task_id, "taskId")
        metadata = v.shallow(body.get("metadata"), "metadata")

        def apply(tx: Tx) -> dict:
            old = self.get_session(session_id)
            now = _bump(old.get("lastActivity"))
            entry: dict[str, Any] = {"id": make_id("evt", now), "type": type_, "timestamp": now,
                                     "message": message}
            if task_id is not None:
                entry["taskId"] = task_id
            if metadata is not None:
                entry["metadata"] = metadata
            self._check_entry(entry, "Timeline entry")
            session = _with(old, timeline=tx.extend(old.get("timeline"), [entry]),
                            lastActivity=now)
            tx.put("session", session)
            tx.emit("session:updated", session)
            return session

        return await self._mutate(apply)

    def _check_entry(self, entry: dict, what: str) -> None:
        """413 for an appended entry whose JSON exceeds max_entry_bytes: every append is
        kept for good (journal, file, every answer and event about the entity), so one entry
        may not be arbitrarily large."""
        size = len(jsonio.dumps(entry))
        if size > self.max_entry_bytes:
            raise ApiError(413, "VALIDATION_ERROR",
                           f"{what} too large: {size} bytes of JSON, the limit is "
                           f"{self.max_entry_bytes} bytes per entry (MAESTRO_MAX_ENTRY_BYTES)",
                           {"size": size, "limit": self.max_entry_bytes})


# ------------------------------------------------------------------ helpers
def _event(type_: str, data, project_id: str | None = None):
    from .events import Event
    return Event(type_, data, project_id=project_id)
