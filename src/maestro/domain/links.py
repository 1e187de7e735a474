"""Rules of the links between tasks and sessions (SPEC §8: `task.sessionIds` and
`session.taskIds` name each other) and of dependency edges between tasks of one project.
Plain functions of lookups: `get_task(id)` / `get_session(id)` return an entity or None."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import ApiError, not_found, task_not_found, validation
from .graph import dependency_ids

Lookup = Callable[[str], "dict | None"]


def as_ids(value) -> list:
    """A link list as stored (a foreign file may hold anything there)."""
    return list(value) if isinstance(value, list) else []


def require_new_targets(current: list[str], wanted: list[str], get: Lookup,
                        missing: Callable[[str], ApiError]) -> None:
    """A full new link list `wanted`: every id not linked yet names an existing entity
    (ids already linked may name ones that are gone: they are just dropped)."""
    for other in wanted:
        if other not in current and get(other) is None:
            raise missing(other)


def require_pair(session_id: str, task_id: str, get_session: Lookup, get_task: Lookup) -> None:
    """Both ends of POST/DELETE /api/sessions/:id/tasks/:taskId exist (404 NOT_FOUND)."""
    if get_session(session_id) is None:
        raise not_found("NOT_FOUND", "Session not found", {"sessionId": session_id})
    if get_task(task_id) is None:
        raise not_found("NOT_FOUND", "Task not found", {"taskId": task_id})


def one_sided_links(sessions: Iterable[dict], get_task: Lookup) -> int:
    """How many session→task links have no task→session counterpart."""
    count = 0
    for s in sessions:
        for tid in as_ids(s.get("taskIds")):
            t = get_task(tid)
            if t is not None and s["id"] not in as_ids(t.get("sessionIds")):
                count += 1
    return count


def checked_dependencies(own: str | None, project_id: str, wanted: list[str],
                         current: list[str], get_task: Lookup) -> list[str]:
    """`wanted` without duplicates, each new id an existing task of the same project and
    not the task `own` itself (ids already held may name tasks that are gone, §15.1)."""
    deps = list(dict.fromkeys(wanted))
    for dep in deps:
        if dep == own:
            raise validation("A task cannot depend on itself",
                             {"taskId": own, "field": "dependencies"})
        if dep in current:
            continue
        upstream = get_task(dep)
        if upstream is None:
            raise task_not_found(dep)
        if upstream.get("projectId") != project_id:
            raise validation(f"Dependency {dep} belongs to another project",
                             {"taskId": dep, "projectId": upstream.get("projectId")})
    return deps


def new_edges(old: dict, proposed: dict) -> list[str]:
    """Targets of edges `proposed` has and `old` had not (dependencies and parent)."""
    before = set(dependency_ids(old))
    out = [d for d in dependency_ids(proposed) if d not in before]
    parent = proposed.get("parentId")
    if isinstance(parent, str) and parent and parent != old.get("parentId"):
        out.append(parent)
    return out
