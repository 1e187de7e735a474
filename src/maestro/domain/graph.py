"""The dependency graph of SPEC §15.1 and its cycle rule.

The graph has an edge X→D for every D in X.dependencies and an edge child→parent (a child
inherits its parent's dependencies). A write that gives a task new outgoing edges (dependencies
or a parent) closes a cycle exactly when the task is reachable from one of the new targets, so
the check is one search from those targets back to the task."""

from __future__ import annotations

from collections.abc import Callable, Iterable

Lookup = Callable[[str], "dict | None"]


def dependency_ids(task: dict | None) -> list[str]:
    """The string ids of `task`'s dependencies (a foreign file may hold anything there)."""
    if task is None:
        return []
    deps = task.get("dependencies")
    if not isinstance(deps, list):
        return []
    return [d for d in deps if isinstance(d, str)]


def parent_id(task: dict | None) -> str | None:
    if task is None:
        return None
    parent = task.get("parentId")
    return parent if isinstance(parent, str) and parent else None


def successors(task: dict | None) -> list[str]:
    """Outgoing edges of `task`: its dependencies, then its parent."""
    out = dependency_ids(task)
    parent = parent_id(task)
    if parent is not None:
        out.append(parent)
    return out


def find_cycle(task_id: str, new_targets: Iterable[str], get: Lookup,
               proposed: dict | None = None) -> list[str] | None:
    """The cycle that giving `task_id` edges to `new_targets` would close, or None.

    `get(id)` returns a task or None; `proposed` (optional) is the task as it would be after
    the write, used in place of `get(task_id)` while searching. The answer lists the ids along
    the cycle starting and ending with `task_id`, e.g. `[a, b, a]`."""

    def out_edges(node: str) -> list[str]:
        if node == task_id and proposed is not None:
            return successors(proposed)
        return successors(get(node))

    came_from: dict[str, str | None] = {}
    stack: list[str] = []
    for target in new_targets:
        if target not in came_from:
            came_from[target] = None
            stack.append(target)
    while stack:
        node = stack.pop()
        if node == task_id:
            path = [node]
            step = came_from[node]
            while step is not None:
                path.append(step)
                step = came_from[step]
            # `path` runs from task_id back to the first target: reverse it and close it.
            path.reverse()
            return [task_id] + path
        if node != task_id and get(node) is None:
            continue
        for nxt in out_edges(node):
            if nxt not in came_from:
                came_from[nxt] = node
                stack.append(nxt)
    return None


def describe_cycle(cycle: list[str]) -> str:
    """`Dependency cycle: a -> b -> a` (SPEC §6.2)."""
    return "Dependency cycle: " + " -> ".join(cycle)
