"""Links between tasks and sessions (SPEC §8): `session.taskIds` and `task.sessionIds` name each
other, and each change writes both sides, with `session_started` / `session_ended` on the
task's timeline. One sync serves both full-list writes (PATCH session `taskIds`, PATCH task
`sessionIds`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..domain.links import require_new_targets, require_pair
from ..domain.timeline import entry as timeline_entry_at
from ..entities import as_list as _list
from ..entities import bump as _bump
from ..entities import with_changes as _with
from ..errors import ApiError
from ..write_lead import forwardable

if TYPE_CHECKING:
    from ..commit import Tx
    from ..state import Table

Side = str  # "session" (its taskIds) or "task" (its sessionIds)


class Links:
    """Part of the Service: uses its `state` and `_mutate`."""

    def _side(self, side: Side) -> tuple[Table, str, Table]:
        """(the table of `side`, its link field, the table of the other side)."""
        if side == "session":
            return self.state.sessions, "taskIds", self.state.tasks
        return self.state.tasks, "sessionIds", self.state.sessions

    def _link(self, tx: Tx, session_id: str, task_id: str) -> bool:
        """§8 link: both sides, `session_started` on the task when it gains the session."""
        session = self.state.sessions.get(session_id)
        task = self.state.tasks.get(task_id)
        changed = False
        task_ids = _list(session.get("taskIds"))
        if task_id not in task_ids:
            tx.put("session", _with(session, taskIds=tx.extend(task_ids, [task_id]),
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
        entry = timeline_entry_at(now, "session_started", sessionId=session_id)
        tx.put("task", _with(task, sessionIds=tx.extend(session_ids, [session_id]),
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
                entry = timeline_entry_at(now, "session_ended", sessionId=session_id)
                tx.put("task", _with(task,
                                     sessionIds=[s for s in session_ids if s != session_id],
                                     timeline=tx.extend(task.get("timeline"), [entry]),
                                     updatedAt=now))
                had = True
        return had

    def _check_link_targets(self, side: Side, owner_id: str, wanted: list[str],
                            missing: Callable[[str], ApiError]) -> None:
        """Refuse a full new link list of `owner_id` naming an unknown entity not linked yet."""
        mine, field, theirs = self._side(side)
        require_new_targets(_list(mine.get(owner_id).get(field)), wanted, theirs.get, missing)

    def _sync_links(self, tx: Tx, side: Side, owner_id: str, wanted: list[str]) \
            -> list[tuple[str, str]]:
        """Make `wanted` (checked, without duplicates) the full link list of `owner_id`,
        linking and unlinking on both sides; linked entities that are gone are just dropped.
        Returns `(added|removed, other id)` for each link that changed."""
        mine, field, theirs = self._side(side)

        def pair(other: str) -> tuple[str, str]:  # (session id, task id)
            return (owner_id, other) if side == "session" else (other, owner_id)

        current = _list(mine.get(owner_id).get(field))
        changes: list[tuple[str, str]] = []
        for other in current:
            if other in wanted:
                continue
            if theirs.get(other) is None:
                cur = mine.get(owner_id)
                tx.put(side, _with(cur, **{field: [o for o in _list(cur[field]) if o != other]}))
                continue
            self._unlink(tx, *pair(other))
            changes.append(("removed", other))
        for other in wanted:
            if other in current:
                continue
            self._link(tx, *pair(other))
            changes.append(("added", other))
        cur = mine.get(owner_id)
        if cur.get(field) != wanted:
            tx.put(side, _with(cur, **{field: list(wanted)}))
        return changes

    @forwardable
    async def add_task_to_session(self, session_id: str, task_id: str) -> dict:
        return await self._change_pair(session_id, task_id, self._link, "added")

    @forwardable
    async def remove_task_from_session(self, session_id: str, task_id: str) -> dict:
        return await self._change_pair(session_id, task_id, self._unlink, "removed")

    async def _change_pair(self, session_id: str, task_id: str, change, kind: str) -> dict:
        """The session after `change` (link or unlink) of it and the task, both of which must
        exist; the events of `kind` only when something changed (idempotent)."""

        def apply(tx: Tx) -> dict:
            require_pair(session_id, task_id, self.state.sessions.get, self.state.tasks.get)
            if change(tx, session_id, task_id):
                self._emit_pair(tx, kind, session_id, task_id)
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
