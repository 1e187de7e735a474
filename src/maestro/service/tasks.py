"""Tasks (SPEC §7.3): list, read, create, update (with its hierarchy, dependency and link
rules), timeline notes and delete (one task or its subtree)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..domain.hierarchy import check_new_parent, require_parent, subtree_deepest_first
from ..domain.timeline import entry as timeline_entry_at
from ..entities import as_list as _list
from ..entities import bump as _bump
from ..entities import fill_timeline_entry, timeline_entry
from ..entities import with_changes as _with
from ..errors import ApiError, project_not_found, session_not_found, task_not_found
from ..ids import make_id, now_ms
from ..listing import task_filter
from .. import models as shape
from ..shapes import checker
from ..validate import dedupe, ident
from ..vocabulary import CLAIM_ENDING_STATUSES, DEFAULT_PRIORITY, DEFAULT_TIMELINE_TYPE
from ..write_lead import forwardable

if TYPE_CHECKING:
    from ..commit import Tx

_check_create = checker(shape.CreateTask)
_check_update = checker(shape.UpdateTask)
_check_note = checker(shape.AddTimeline)


class Tasks:
    """Part of the Service: uses its `state`, `_mutate`, links and coordination rules."""

    def list_tasks(self, project_id: str | None = None, status: str | None = None,
                   parent_id: str | None = None) -> list[dict]:
        return self.state.tasks.query(task_filter(project_id, status, parent_id))

    def get_task_or_none(self, task_id: str) -> dict | None:
        """The task, or None when there is none (never raises)."""
        return self.state.tasks.get(task_id)

    def get_task(self, task_id: str) -> dict:
        t = self.state.tasks.get(task_id)
        if t is None:
            raise task_not_found(task_id)
        return t

    def task_children(self, task_id: str) -> list[dict]:
        self.get_task(task_id)
        return self.state.tasks.query({"parentId": task_id})

    @forwardable
    async def create_task(self, body: dict) -> dict:
        _check_create(body)
        project_id, title = body["projectId"], body["title"]
        priority = body.get("priority") or DEFAULT_PRIORITY
        description = body.get("description") or ""
        initial_prompt = body.get("initialPrompt") or ""
        skill_ids = body.get("skillIds") or []
        parent_id = body.get("parentId") or None
        wanted = body.get("dependencies") or []

        def apply(tx: Tx) -> dict:
            if self.state.projects.get(project_id) is None:
                raise project_not_found(project_id)
            if parent_id is not None:
                require_parent(parent_id, self.state.tasks.get)
            # A new task has no incoming edges: its dependencies cannot close a cycle.
            dependencies = self._checked_dependencies(None, project_id, wanted, [])
            now = now_ms()
            task = {
                "id": make_id("task", now), "projectId": project_id, "parentId": parent_id,
                "title": title.strip(), "description": description,
                "initialPrompt": initial_prompt, "status": "pending", "priority": priority,
                "sessionIds": [], "skillIds": list(skill_ids), "agentIds": [],
                "dependencies": dependencies,
                "timeline": [timeline_entry_at(now, "created", "Task created")],
                "createdAt": now, "updatedAt": now, "startedAt": None, "completedAt": None,
            }
            tx.put("task", task)
            tx.emit("task:created", task)
            return task

        return await self._mutate(apply)

    @forwardable
    async def update_task(self, task_id: str, body: dict, *, actor: str | None = None,
                          claim_token: int | None = None) -> dict:
        """PATCH /api/tasks/:id. `actor` is the session of an agent identity (None: the user);
        `claim_token` the X-Maestro-Claim-Token the writer presents (fencing, §15.3)."""
        _check_update(body)
        from_session = body.get("updateSource") == "session"
        title = body.get("title")
        description = body.get("description")
        status = body.get("status")
        priority = body.get("priority")
        session_status = body.get("sessionStatus")
        has_parent = "parentId" in body
        parent_id = body.get("parentId")
        session_ids = body.get("sessionIds")
        skill_ids = body.get("skillIds")
        agent_ids = body.get("agentIds")
        timeline = body.get("timeline")
        new_events = [timeline_entry(e) for e in timeline] if timeline else []
        wanted = body.get("dependencies")
        reporter = actor
        if from_session:  # E3: a session reports its own view; only sessionStatus applies
            title = description = status = priority = None
            has_parent = False
            session_ids = skill_ids = agent_ids = wanted = None
            new_events = []
            said = body.get("sessionId")
            if reporter is None and isinstance(said, str) and said:
                reporter = ident(said, "sessionId")

        def apply(tx: Tx) -> dict:
            old = self.get_task(task_id)
            self.fence(old, reporter, claim_token)
            if has_parent and parent_id is not None:
                check_new_parent(task_id, parent_id, self.state.tasks.get,
                                 self.state.tasks.indexes["parentId"].get)
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
            if status in CLAIM_ENDING_STATUSES and isinstance(task.get("claim"), dict):
                ended_claim = task["claim"]  # completing or reopening a task ends its claim
                task["claim"] = None
            if new_events:
                entries = [fill_timeline_entry(e) for e in new_events]
                for entry in entries:
                    self._check_entry(entry, "Timeline entry")
                task["timeline"] = tx.extend(old.get("timeline"), entries)
            task["updatedAt"] = now
            tx.put("task", task)
            link_events = []
            if session_ids is not None:
                # PATCH task `sessionIds`: the new full list, kept in sync on both sides (the
                # data-model document: "storage layer handles bidirectional updates").
                wanted_sessions = dedupe(session_ids)
                self._check_link_targets("task", task_id, wanted_sessions, session_not_found)
                link_events = self._sync_links(tx, "task", task_id, wanted_sessions)
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

    @forwardable
    async def add_timeline_event(self, task_id: str, body: dict, *, actor: str | None = None,
                                 claim_token: int | None = None) -> dict:
        _check_note(body)
        message = body["message"]
        type_ = body.get("type") or DEFAULT_TIMELINE_TYPE
        session_id = body.get("sessionId")

        def apply(tx: Tx) -> dict:
            old = self.get_task(task_id)
            self.fence(old, actor, claim_token)
            now = _bump(old.get("updatedAt"))
            entry = timeline_entry_at(now, type_, message, sessionId=session_id)
            self._check_entry(entry, "Timeline entry")
            task = _with(old, timeline=tx.extend(old.get("timeline"), [entry]), updatedAt=now)
            tx.put("task", task)
            tx.emit("task:updated", task)
            return task

        return await self._mutate(apply)

    @forwardable
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
            doomed = subtree_deepest_first(task_id, self.state.tasks.indexes["parentId"].get)
            gone = set(doomed)
            for tid in doomed:
                self._delete_one_task(tx, tid, gone)
            result: dict[str, Any] = {"success": True, "id": task_id}
            if cascade:
                result["deleted"] = doomed
            return result

        return await self._mutate(apply)

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
