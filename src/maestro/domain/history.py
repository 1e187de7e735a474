"""A task's history: its own timeline merged with what its sessions reported about it.

Agents report through their session's timeline (extension E2: `report progress`, `task
complete`, status changes), naming the task in `taskId`; the task's own timeline holds what was
written to the task (created, session started or ended, notes, blockers). One rule for everyone
who shows the history: the `GET /api/tasks/:id/history` endpoint (the dashboard) and `maestro
task show` both call `merged_history`."""

from __future__ import annotations

from collections.abc import Iterable


def _time(entry: dict) -> int | float:
    stamp = entry.get("timestamp")
    return stamp if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) else 0


def merged_history(task: dict, sessions: Iterable[dict]) -> list[dict]:
    """The task's timeline plus the timeline entries of `sessions` that name the task, oldest
    first (entries of the same moment: the task's first, then each session's in the order
    given). Each entry: `timestamp`, `type`, `message`, `sessionId`, `source` (`task` or
    `session`) and the entry's `id`; members without a value are left out."""
    task_id = task.get("id")
    entries = [{"id": e.get("id"), "timestamp": e.get("timestamp"), "type": e.get("type"),
                "message": e.get("message"), "sessionId": e.get("sessionId"), "source": "task"}
               for e in task.get("timeline") or [] if isinstance(e, dict)]
    for session in sessions:
        for e in session.get("timeline") or []:
            if isinstance(e, dict) and e.get("taskId") == task_id:
                entries.append({"id": e.get("id"), "timestamp": e.get("timestamp"),
                                "type": e.get("type"), "message": e.get("message"),
                                "sessionId": session.get("id"), "source": "session"})
    entries.sort(key=_time)
    return [{k: v for k, v in e.items() if v is not None} for e in entries]
