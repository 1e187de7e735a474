"""Readiness of SPEC §15.2, computed from plain lookups (never stored).

A task is ready when its status is `pending`, every dependency exists and is `completed`, no
ancestor is `blocked` or has an unmet dependency, and it has no live claim. Ready work is ordered
by priority (high, medium, low), then `createdAt`, then `id`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .graph import dependency_ids, parent_id

Lookup = Callable[[str], "dict | None"]

PRIORITY_RANK = {"high": 0, "medium": 1, "low": 2}


@dataclass(slots=True)
class Assessment:
    """Why a task is or is not ready (the body of GET /api/tasks/:id/readiness)."""

    task_id: str
    status: Any
    blocked_by: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    blocked_ancestors: list[str] = field(default_factory=list)
    claim: dict | None = None

    @property
    def held(self) -> bool:
        """Held back by dependencies or ancestors (whatever its status and claim)."""
        return bool(self.blocked_by or self.missing or self.blocked_ancestors)

    @property
    def ready(self) -> bool:
        return self.status == "pending" and not self.held and self.claim is None

    @property
    def blocked(self) -> bool:
        """A pending task held back by dependencies or ancestors (`?blocked=true`)."""
        return self.status == "pending" and self.held

    def body(self) -> dict:
        return {"taskId": self.task_id, "ready": self.ready, "blockedBy": self.blocked_by,
                "missingDependencies": self.missing,
                "blockedAncestors": self.blocked_ancestors, "claim": self.claim}


def live_claim(task: dict | None, now: int) -> dict | None:
    """The task's claim if its lease has not run out at `now` (ms), else None."""
    if task is None:
        return None
    claim = task.get("claim")
    if not isinstance(claim, dict):
        return None
    expires = claim.get("leaseExpiresAt")
    if not isinstance(expires, (int, float)) or isinstance(expires, bool) or expires <= now:
        return None
    return claim


def unmet(task: dict, get: Lookup) -> tuple[list[str], list[str]]:
    """(existing dependencies not `completed`, dependencies that do not exist) of `task`."""
    waiting: list[str] = []
    missing: list[str] = []
    for dep in dependency_ids(task):
        upstream = get(dep)
        if upstream is None:
            missing.append(dep)
        elif upstream.get("status") != "completed":
            waiting.append(dep)
    return waiting, missing


def assess(task_id: str, get: Lookup, now: int) -> Assessment | None:
    """The readiness of task `task_id` at `now`, or None when it does not exist."""
    task = get(task_id)
    if task is None:
        return None
    result = Assessment(task_id, task.get("status"), claim=live_claim(task, now))
    waiting, missing = unmet(task, get)
    result.blocked_by.extend(waiting)
    result.missing.extend(missing)
    seen = {task_id}
    ancestor = parent_id(task)
    while ancestor is not None and ancestor not in seen:
        seen.add(ancestor)
        upper = get(ancestor)
        if upper is None:
            break
        waiting, missing = unmet(upper, get)
        if waiting or missing or upper.get("status") == "blocked":
            result.blocked_ancestors.append(ancestor)
            result.blocked_by.extend(w for w in waiting if w not in result.blocked_by)
            result.missing.extend(m for m in missing if m not in result.missing)
        ancestor = parent_id(upper)
    return result


def is_held(task: dict, get: Lookup) -> bool:
    """Whether `task` is held back by its dependencies or ancestors (short-circuiting
    `assess(...).held`, for the indexes)."""
    seen: set[str] = set()
    current: dict | None = task
    while current is not None:
        tid = current.get("id")
        if tid in seen:
            break
        seen.add(tid)
        for dep in dependency_ids(current):
            upstream = get(dep)
            if upstream is None or upstream.get("status") != "completed":
                return True
        if current is not task and current.get("status") == "blocked":
            return True
        parent = parent_id(current)
        current = get(parent) if parent is not None else None
    return False


def order_key(task: dict) -> tuple:
    """Priority (high, medium, low, anything else), then `createdAt`, then `id`."""
    created = task.get("createdAt")
    if not isinstance(created, (int, float)) or isinstance(created, bool):
        created = 0
    return (PRIORITY_RANK.get(task.get("priority"), 3), created, task["id"])


def _select(task_ids: Iterable[str], get: Lookup, now: int, wanted: str) -> list[str]:
    """The tasks of `task_ids` whose assessment has `wanted` set, in §15.2 order."""
    found = [get(tid) for tid in task_ids
             if (a := assess(tid, get, now)) is not None and getattr(a, wanted)]
    return [t["id"] for t in sorted(found, key=order_key)]


def ready_ids(task_ids: Iterable[str], get: Lookup, now: int) -> list[str]:
    """The ready ones of `task_ids`, in §15.2 order (a brute force for checks and tests)."""
    return _select(task_ids, get, now, "ready")


def blocked_ids(task_ids: Iterable[str], get: Lookup, now: int) -> list[str]:
    """The blocked ones of `task_ids` (pending, held back), in §15.2 order."""
    return _select(task_ids, get, now, "blocked")


def has_unfinished_children(children: Iterable[str], get: Lookup) -> bool:
    """Whether any of `children` (ids) exists and is not `completed` (claim-next skips such
    a task: its work is in its children)."""
    for cid in children:
        child = get(cid)
        if child is not None and child.get("status") != "completed":
            return True
    return False
