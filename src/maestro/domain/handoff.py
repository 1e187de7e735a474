"""Handoff along dependency edges (SPEC §15.4): what a task's dependents and the agents spawned
for it learn about upstream work. Pure functions of plain lookups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .graph import dependency_ids

Lookup = Callable[[str], "dict | None"]
COMPLETION_TYPE = "task_completed"  # session timeline entry of `maestro report complete` (E2)


def last_completion_report(task: dict, get_session: Lookup) -> str | None:
    """The message of the latest `task_completed` entry a session of `task` wrote about it:
    one naming the task, or, without a task id, one of a session linked only to this task or
    whose tasks include it."""
    best: tuple[Any, str] | None = None
    task_id = task.get("id")
    session_ids = task.get("sessionIds")
    for sid in session_ids if isinstance(session_ids, list) else ():
        session = get_session(sid) if isinstance(sid, str) else None
        timeline = session.get("timeline") if session is not None else None
        if not isinstance(timeline, list):
            continue
        linked = session.get("taskIds") if isinstance(session.get("taskIds"), list) else []
        for entry in reversed(timeline):
            if not isinstance(entry, dict) or entry.get("type") != COMPLETION_TYPE:
                continue
            message = entry.get("message")
            about = entry.get("taskId")
            if not isinstance(message, str) or not message:
                continue
            if about == task_id or (about is None and task_id in linked):
                stamp = entry.get("timestamp")
                stamp = stamp if isinstance(stamp, (int, float)) else 0
                if best is None or stamp > best[0]:
                    best = (stamp, message)
                break
    return best[1] if best is not None else None


def handoff_message(upstream: dict, report: str | None) -> str:
    """The timeline message a dependent gets when `upstream` completes."""
    title = upstream.get("title") if isinstance(upstream.get("title"), str) else ""
    head = f'Dependency {upstream.get("id")} "{title}" completed'
    return f"{head}. Report: {report}" if report else f"{head} (no completion report)."


def dependency_briefs(task: dict, get_task: Lookup, get_session: Lookup) -> list[dict]:
    """Title, status and last completion report of each dependency of `task` (a missing one
    says so), for the manifest and prompt of an agent spawned for it."""
    out = []
    for dep in dependency_ids(task):
        upstream = get_task(dep)
        if upstream is None:
            out.append({"id": dep, "title": "", "status": "missing", "lastReport": None})
            continue
        out.append({"id": dep,
                    "title": upstream.get("title") if isinstance(upstream.get("title"), str)
                    else "",
                    "status": upstream.get("status"),
                    "lastReport": last_completion_report(upstream, get_session)})
    return out
