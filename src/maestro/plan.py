"""A whole breakdown of work in one change: `POST /api/projects/:id/plan`.

A plan names its new tasks by local references (`ref`); a task's `parent` and `dependsOn`, and
the `dependencies` added to existing tasks, name either such a reference or the id of an
existing task of the project. Everything is checked first (shapes, then every reference, the
project of every task named, fencing of each existing task written to) and the whole result is
checked for cycles over dependencies and child→parent edges (SPEC §15.1) inside the same
mutation, so the plan is created entirely or not at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import models
from . import validate as v
from .commit import Tx
from .domain.graph import dependency_ids, describe_cycle, successors
from .domain.timeline import entry as timeline_entry
from .entities import as_list, bump, with_changes
from .errors import ApiError, project_not_found, task_not_found, validation
from .ids import make_id, now_ms
from .shapes import checker
from .vocabulary import DEFAULT_PRIORITY
from .write_lead import forwardable

if TYPE_CHECKING:
    from .state import State

_check_plan = checker(models.Plan)


@dataclass
class PlannedTask:
    """One new task of a plan, as the request gave it."""

    ref: str
    title: str
    description: str = ""
    initial_prompt: str = ""
    priority: str = "medium"
    parent: str | None = None
    depends_on: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """A parsed plan: its new tasks, and edges `(task, dependsOn)` added to existing tasks."""

    tasks: list[PlannedTask]
    edges: list[tuple[str, str]]

    @property
    def refs(self) -> set[str]:
        return {t.ref for t in self.tasks}


def parse_plan(body: dict) -> Plan:
    """The plan of a request body, its shape checked from its declaration (`models.Plan`: 400
    naming the field by its place, `tasks[2].title`); references are resolved later, against
    the state, inside the mutation."""
    _check_plan(body)
    tasks = [PlannedTask(
        ref=raw["ref"], title=raw["title"].strip(), description=raw.get("description") or "",
        initial_prompt=raw.get("initialPrompt") or "",
        priority=raw.get("priority") or DEFAULT_PRIORITY, parent=raw.get("parent") or None,
        depends_on=v.dedupe(raw.get("dependsOn") or [])) for raw in body["tasks"]]
    edges = [(raw["task"], raw["dependsOn"]) for raw in body.get("dependencies") or []]
    return Plan(tasks, edges)


class Planning:
    """Mixed into the Service: uses its `state`, `_mutate`, `fence` and cycle check."""

    state: State

    @forwardable
    async def create_plan(self, project_id: str, body: dict, *, actor: str | None = None,
                          claim_token: int | None = None) -> dict:
        """POST /api/projects/:id/plan → {tasks, refs, updated}. `actor` and `claim_token`
        fence every existing task the plan adds dependencies to (SPEC §15.3)."""
        plan = parse_plan(body)

        def apply(tx: Tx) -> dict:
            if self.state.projects.get(project_id) is None:
                raise project_not_found(project_id)
            now = now_ms()
            ids = {t.ref: make_id("task", now) for t in plan.tasks}

            def resolve(name: str, where: str) -> str:
                if name in ids:
                    return ids[name]
                task = self.state.tasks.get(name)
                if task is None:
                    raise task_not_found(name, f"{where}: no ref and no task named {name}")
                if task.get("projectId") != project_id:
                    raise validation(f"{where}: task {name} belongs to another project",
                                     {"taskId": name, "projectId": task.get("projectId")})
                return name

            for ref in ids:
                if self.state.tasks.get(ref) is not None:
                    raise validation(f"ref {ref} is also the id of an existing task; choose "
                                     "another ref", {"ref": ref})
            created: list[dict] = []
            for index, planned in enumerate(plan.tasks):
                where = f"tasks[{index}]"
                own = ids[planned.ref]
                deps = v.dedupe([resolve(d, f"{where}.dependsOn") for d in planned.depends_on])
                if own in deps:
                    raise validation(f"{where}: a task cannot depend on itself",
                                     {"ref": planned.ref})
                parent = resolve(planned.parent, f"{where}.parent") if planned.parent else None
                if parent == own:
                    raise validation(f"{where}: a task cannot be its own parent",
                                     {"ref": planned.ref})
                task = {
                    "id": own, "projectId": project_id, "parentId": parent,
                    "title": planned.title, "description": planned.description,
                    "initialPrompt": planned.initial_prompt, "status": "pending",
                    "priority": planned.priority, "sessionIds": [], "skillIds": [],
                    "agentIds": [], "dependencies": deps,
                    "timeline": [timeline_entry(now, "created", "Task created (plan)")],
                    "createdAt": now, "updatedAt": now, "startedAt": None,
                    "completedAt": None,
                }
                tx.put("task", task)
                created.append(task)
            added: dict[str, list[str]] = {}
            for index, (task_name, dep_name) in enumerate(plan.edges):
                where = f"dependencies[{index}]"
                target = resolve(task_name, f"{where}.task")
                dep = resolve(dep_name, f"{where}.dependsOn")
                if target == dep:
                    raise validation(f"{where}: a task cannot depend on itself",
                                     {"taskId": target})
                added.setdefault(target, []).append(dep)
            updated: list[dict] = []
            new_ids = set(ids.values())
            for target, deps in added.items():
                old = self.state.tasks.get(target)
                if target in new_ids:
                    merged = v.dedupe(dependency_ids(old) + deps)
                    tx.put("task", with_changes(old, dependencies=merged))
                    continue
                self.fence(old, actor, claim_token)
                current = dependency_ids(old)
                fresh = [d for d in v.dedupe(deps) if d not in current]
                if not fresh:
                    continue
                task = with_changes(old, dependencies=as_list(old.get("dependencies")) + fresh,
                                    updatedAt=bump(old.get("updatedAt")))
                tx.put("task", task)
                updated.append(task)
            # Every edge is in the working state now: one search per task that gained edges.
            named = {task_id: ref for ref, task_id in ids.items()}
            for task in created:
                final = self.state.tasks.get(task["id"])
                self._refuse_plan_cycle(final, successors(final), named)
            for task in updated:
                final = self.state.tasks.get(task["id"])
                self._refuse_plan_cycle(final, added[task["id"]], named)
            out_tasks = [self.state.tasks.get(t["id"]) for t in created]
            out_updated = [self.state.tasks.get(t["id"]) for t in updated]
            for task in out_tasks:
                tx.emit("task:created", task)
            for task in out_updated:
                tx.emit("task:updated", task)
            return {"tasks": out_tasks, "refs": dict(ids), "updated": out_updated}

        return await self._mutate(apply)

    def _refuse_plan_cycle(self, task: dict, targets: list[str], named: dict[str, str]) -> None:
        """The cycle check, naming the plan's new tasks by their refs in the message."""
        try:
            self._refuse_cycle(task, targets)
        except ApiError as exc:
            cycle = (exc.details or {}).get("cycle")
            if exc.code != "DEPENDENCY_CYCLE" or not isinstance(cycle, list):
                raise
            refs = [named.get(step, step) for step in cycle]
            raise ApiError(400, "DEPENDENCY_CYCLE", describe_cycle(refs),
                           {"cycle": cycle, "refs": refs}) from None


def plan_refs(body: Any) -> tuple[list[dict], set[str], list[tuple[Any, Any]]]:
    """The parts of a plan body the rights check reads, leniently (a malformed body gets its
    400 from `parse_plan`): the task objects, their refs and the edges."""
    raw_tasks = body.get("tasks") if isinstance(body, dict) else None
    tasks = [t for t in raw_tasks if isinstance(t, dict)] if isinstance(raw_tasks, list) else []
    refs = {t["ref"] for t in tasks if isinstance(t.get("ref"), str)}
    raw_edges = body.get("dependencies") if isinstance(body, dict) else None
    edges = [(e.get("task"), e.get("dependsOn")) for e in raw_edges if isinstance(e, dict)] \
        if isinstance(raw_edges, list) else []
    return tasks, refs, edges
