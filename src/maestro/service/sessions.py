"""Sessions (SPEC §7.4): list, read, create (linking its tasks), update (status, events, env,
its full task list), delete, and the appends of extensions E1 and E2."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import validate as v
from ..domain.timeline import entry as timeline_entry_at
from ..entities import as_list as _list
from ..entities import bump as _bump
from ..entities import fill_session_event, session_event
from ..entities import with_changes as _with
from ..errors import ApiError, project_not_found, session_not_found, task_not_found, \
    validation
from ..identity import REVOKED_FIELD, may_hold_token
from ..ids import is_valid_client_id, make_id, now_ms
from ..listing import session_filter

if TYPE_CHECKING:
    from ..commit import Tx

FINAL_SESSION_STATUSES = ("completed", "failed")


def _is_active(session: dict) -> bool:
    return session.get("status") not in FINAL_SESSION_STATUSES


class Sessions:
    """Part of the Service: uses its `state`, `_mutate`, links and coordination rules."""

    def list_sessions(self, project_id: str | None = None, task_id: str | None = None,
                      status: str | None = None, active: str | None = None) -> list[dict]:
        return self.state.sessions.query(*session_filter(project_id, task_id, status, active))

    def get_session(self, session_id: str) -> dict:
        s = self.state.sessions.get(session_id)
        if s is None:
            raise session_not_found(session_id)
        return s

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
            if wanted is not None:
                self._check_link_targets("session", session_id, wanted, task_not_found)
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
            link_events = self._sync_links(tx, "session", session_id, wanted) \
                if wanted is not None else []
            final = self.state.sessions.get(session_id)
            tx.emit("session:updated", final)
            for kind, tid in link_events:
                tx.emit(f"session:task_{kind}", {"sessionId": session_id, "taskId": tid})
                tx.emit(f"task:session_{kind}", {"taskId": tid, "sessionId": session_id})
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
            entry = timeline_entry_at(now, type_, message, taskId=task_id, metadata=metadata)
            self._check_entry(entry, "Timeline entry")
            session = _with(old, timeline=tx.extend(old.get("timeline"), [entry]),
                            lastActivity=now)
            tx.put("session", session)
            tx.emit("session:updated", session)
            return session

        return await self._mutate(apply)
