"""The task hierarchy (parentId): parent existence, the rule that a task is never below itself,
and orders for deleting a subtree. Plain functions of lookups: `get(id)` returns a task or None,
`children(id)` the ids of a task's children."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..errors import task_not_found, validation

Lookup = Callable[[str], "dict | None"]
Children = Callable[[str], Iterable[str]]


def require_parent(parent_id: str, get: Lookup) -> None:
    """404 TASK_NOT_FOUND when the named parent does not exist."""
    if get(parent_id) is None:
        raise task_not_found(parent_id, "Parent task not found")


def is_descendant(candidate: str, ancestor: str, children: Children) -> bool:
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
        stack.extend(children(current))
    return False


def check_new_parent(task_id: str, parent_id: str, get: Lookup, children: Children) -> None:
    """A task moved under `parent_id`: the parent exists and is neither the task nor below it."""
    require_parent(parent_id, get)
    if is_descendant(parent_id, task_id, children):
        raise validation("A task cannot be its own parent or the child of one of its "
                         "descendants", {"taskId": task_id, "parentId": parent_id})


def subtree_deepest_first(task_id: str, children: Children) -> list[str]:
    """`task_id` and its descendants, every task after all of its descendants."""
    order: list[str] = []
    seen = {task_id}
    stack = [(task_id, False)]
    while stack:
        tid, expanded = stack.pop()
        if expanded:
            order.append(tid)
            continue
        stack.append((tid, True))
        for cid in reversed(list(children(tid))):
            if cid not in seen:
                seen.add(cid)
                stack.append((cid, False))
    return order


def children_first(task_ids: list[str], get: Lookup) -> list[str]:
    """`task_ids` (the tasks of one project) ordered so that every child comes before its
    parent: deepest first by the number of levels above each task inside the set."""
    doomed = set(task_ids)

    def depth(tid: str) -> int:
        seen, level = {tid}, 0
        parent = get(tid).get("parentId")
        while parent in doomed and parent not in seen:
            seen.add(parent)
            level += 1
            parent = get(parent).get("parentId")
        return level

    return sorted(task_ids, key=depth, reverse=True)
