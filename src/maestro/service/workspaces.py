"""The Service's one mutation for workspaces: writing `session.workspace` (its state after a
merge or a clean-up, the files it changes and its overlaps with other sessions), with the events
and task timeline entries that go with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..domain.timeline import entry as timeline_entry
from ..entities import as_list, bump, with_changes

if TYPE_CHECKING:
    from ..commit import Tx
    from ..state import State


class WorkspaceRecords:
    """Part of the Service: uses its `state` and `_mutate`."""

    state: State

    async def record_workspaces(self, updates: dict[str, dict[str, Any]], *,
                                events: list[tuple[str, dict]] = (),
                                timeline: dict[str, str] | None = None,
                                active_only: bool = False) -> dict[str, dict]:
        """Merge `updates[session id]` into each session's `workspace` (a key set to None is
        removed) and return the sessions as stored. `events` go out first, in order (e.g.
        `session:merged`), then `session:updated` for each session that changed; `timeline`
        maps a session to a message appended to the timeline of each of its tasks. Sessions
        that are gone, or have no workspace, are skipped. With `active_only` (findings of a
        scan that may predate a merge or clean-up), a workspace no longer `active` only has
        its overlaps cleared."""
        def apply(tx: Tx) -> dict[str, dict]:
            for name, data in events:
                tx.emit(name, data)
            out: dict[str, dict] = {}
            for sid, changes in updates.items():
                session = self.state.sessions.get(sid)
                if session is None or not isinstance(session.get("workspace"), dict):
                    continue
                old = session["workspace"]
                if active_only and old.get("state") != "active":
                    changes = {"overlaps": []} if old.get("overlaps") else {}
                new = {k: v for k, v in {**old, **changes}.items() if v is not None}
                if new != old:
                    session = tx.put("session", with_changes(
                        session, workspace=new, lastActivity=bump(session.get("lastActivity"))))
                    tx.emit("session:updated", session)
                out[sid] = session
                message = (timeline or {}).get(sid)
                if message:
                    self._note_on_tasks(tx, session, message)
            return out

        return await self._mutate(apply)

    def _note_on_tasks(self, tx: Tx, session: dict, message: str) -> None:
        for tid in as_list(session.get("taskIds")):
            task = self.state.tasks.get(tid)
            if task is None:
                continue
            now = bump(task.get("updatedAt"))
            entry = timeline_entry(now, "update", message, sessionId=session["id"])
            final = tx.put("task", with_changes(task, timeline=as_list(task.get("timeline"))
                                                + [entry], updatedAt=now))
            tx.emit("task:updated", final)
