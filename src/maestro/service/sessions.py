"""Sessions (SPEC §7.4): list, read, create (linking its tasks), update (status, events, env,
its full task list), delete, and the appends of extensions E1 and E2."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..domain.timeline import entry as timeline_entry_at
from ..entities import as_list as _list
from ..entities import bump as _bump
from ..entities import fill_session_event, session_event
from ..entities import with_changes as _with
from ..errors import ApiError, project_not_found, session_not_found, task_not_found, \
    validation
from ..identity import REVOKED_FIELD, may_hold_token
from ..ids import make_id, now_ms
from ..listing import session_filter
from .. import models as shape
from ..shapes import checker
from ..validate import dedupe
from ..vocabulary import DEFAULT_SESSION_STATUS, DEFAULT_SESSION_TIMELINE_TYPE, \
    FINAL_SESSION_STATUSES
from ..write_lead import forwardable

if TYPE_CHECKING:
    from ..commit import Tx

_check_create = checker(shape.CreateSession)
_check_update = checker(shape.UpdateSession)
_check_event = checker(shape.AddSessionEvent)
_check_note = checker(shape.AddSessionTimeline)


def _is_active(session: dict) -> bool:
    return session.get("status") not in FINAL_SESSION_STATUSES


class Sessions:
    """Part of the Service: uses its `state`, `_mutate`, links and coordination rules."""

    def list_sessions(self, project_id: str | None = None, task_id: str | None = None,
                      status: str | None = None, active: str | None = None) -> list[dict]:
        return self.state.sessions.query(*session_filter(project_id, task_id, status, active))

    def get_session_or_none(self, session_id: str) -> dict | None:
        """The session, or None when there is none (never raises)."""
        return self.state.sessions.get(session_id)

    def sessions_where(self, predicate: Callable[[dict], bool] | None = None) -> list[dict]:
        """Every session (for which `predicate(session)` is true), in no particular order:
        e.g. the launcher's recovery, the sessions with a git worktree."""
        rows = list(self.state.sessions.rows.values())
        return rows if predicate is None else [s for s in rows if predicate(s)]

    def get_session(self, session_id: str) -> dict:
        s = self.state.sessions.get(session_id)
        if s is None:
            raise session_not_found(session_id)
        return s

    def validate_new_session(self, body: dict) -> dict:
        """Checks of POST /api/sessions that need no state; returns the normalised fields."""
        if "taskIds" not in body and isinstance(body.get("taskId"), str):
            body = {**body, "taskIds": [body["taskId"]]}  # an older client's single task
        _check_create(body)
        return {"taskIds": dedupe(body["taskIds"]), "projectId": body["projectId"],
                "id": body.get("id"), "name": body.get("name"), "agentId": body.get("agentId"),
                "status": body.get("status") or DEFAULT_SESSION_STATUS,
                "env": body.get("env") or {}, "metadata": body.get("metadata"),
                "strategy": body.get("strategy")}

    def _new_session_in_tx(self, tx: Tx, f: dict, *, missing_task: Callable[[str], ApiError]
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

    @forwardable
    async def create_session(self, body: dict) -> dict:
        fields = self.validate_new_session(body)
        return await self._mutate(lambda tx: self._new_session_in_tx(tx, fields))

    async def create_session_from(self, fields: dict, *, recheck: Callable[[], None] | None
                                  = None, missing_task: Callable[[str], ApiError]
                                  = task_not_found, created_events: list | None = None,
                                  on_created: Callable[[dict], None] | None = None) -> dict:
        """Create a session from fields already checked (the shape of `validate_new_session`,
        plus an optional `workspace`), e.g. by the spawn endpoint. `recheck()` runs first, under
        the mutation lock, against the state the creation sees (raising refuses it);
        `missing_task(id)` is the error for a task that does not exist; `created_events` go
        out before `session:created` (their project set to the session's when unset);
        `on_created(session)` runs in the same change, before any event is published (e.g. to
        put the session into a created event's payload)."""
        def apply(tx: Tx) -> dict:
            if recheck is not None:
                recheck()
            session = self._new_session_in_tx(tx, fields, missing_task=missing_task,
                                              created_events=created_events)
            if on_created is not None:
                on_created(session)
            return session

        return await self._mutate(apply)

    @forwardable
    async def update_session(self, session_id: str, body: dict, *, stopped: bool = False,
                             end: dict | None = None, if_active: bool = False) -> dict:
        """PATCH /api/sessions/:id. `stopped`: the launcher ends a session it stopped (its
        tasks are treated as failed whatever the status, §15.5). `end`: how its agent ended
        (`endReason`, `endMessage`), kept in the session's metadata when this ends it.
        `if_active`: change nothing (and return the session as it is) once it has ended."""
        _check_update(body)
        status = body.get("status")
        agent_id = body.get("agentId")
        task_ids = body.get("taskIds")
        events = body.get("events")
        new_events = [session_event(e) for e in events] if events else []
        env = body.get("env")

        def apply(tx: Tx) -> dict:
            old = self.get_session(session_id)
            if if_active and not _is_active(old):
                return old
            wanted = dedupe(task_ids) if task_ids is not None else None
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

    @forwardable
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
    @forwardable
    async def add_session_event(self, session_id: str, body: dict) -> dict:
        _check_event(body)
        entry = {"type": body["type"]}
        if "data" in body:
            entry["data"] = body["data"]
        return await self._append_to_session(
            session_id, "events", "Session event",
            lambda now: {"id": make_id("evt", now), "timestamp": now, **entry})

    @forwardable
    async def add_session_timeline(self, session_id: str, body: dict) -> dict:
        _check_note(body)
        message = body["message"]
        type_ = body.get("type") or DEFAULT_SESSION_TIMELINE_TYPE
        task_id = body.get("taskId")
        metadata = body.get("metadata")
        return await self._append_to_session(
            session_id, "timeline", "Timeline entry",
            lambda now: timeline_entry_at(now, type_, message, taskId=task_id,
                                          metadata=metadata))

    async def _append_to_session(self, session_id: str, key: str, what: str, make) -> dict:
        """The session with `make(now)` appended to its `key` list (`what` names it in the
        refusal of an entry too large), its activity bumped to `now`."""

        def apply(tx: Tx) -> dict:
            old = self.get_session(session_id)
            now = _bump(old.get("lastActivity"))
            entry = make(now)
            self._check_entry(entry, what)
            session = _with(old, **{key: tx.extend(old.get(key), [entry]),
                                    "lastActivity": now})
            tx.put("session", session)
            tx.emit("session:updated", session)
            return session

        return await self._mutate(apply)
