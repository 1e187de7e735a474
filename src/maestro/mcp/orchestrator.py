"""The orchestrator tools: plan a breakdown, follow and steer the work, start and watch agent
sessions. Shown to orchestrator sessions and to people (see catalog.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from ..vocabulary import AGENT_MODELS as MODELS
from .backend import seg
from .calls import brief, fencing, link_of, need_project, page, session_brief, tool
from .models import MAX_TEXT, Planned, PlannedTask, Priority, Role, SessionList, SessionStatus, \
    Spawned, TaskFilter, TaskId, TaskList, TaskStatus, Title, Updated, like, rest

ProjectParam = Annotated[rest.Id | None, Field(description="Project id (default: your project)")]
Model = Literal[MODELS]  # type: ignore[valid-type]


@tool
async def task_list(
    ctx: Context,
    status: Annotated[TaskFilter | None,
                      Field(description="ready: can start now; waiting: pending but held "
                            "back")] = None,
    parent_id: like(rest.CreateTask, "parentId") = None,
    limit: Annotated[int, Field(ge=1, le=500)] = 50,
    project_id: ProjectParam = None,
) -> TaskList:
    """The project's tasks (compact), optionally by status or under a parent."""
    link = await link_of(ctx)
    params: dict[str, Any] = {"projectId": need_project(link, project_id, parameter=True),
                              "parentId": parent_id}
    if status == "ready":
        params["ready"] = "true"
    elif status == "waiting":
        params["blocked"] = "true"
    else:
        params["status"] = status
    return page(await link.api.get("/api/tasks", params), limit)


class PlanItem(BaseModel):
    """One task of a plan."""

    ref: like(rest.PlanTask, "ref", description="Its name inside the plan")
    title: like(rest.PlanTask, "title")
    description: Annotated[like(rest.PlanTask, "description") | None,
                           Field(max_length=20_000)] = None
    priority: like(rest.PlanTask, "priority") | None = None
    parent: like(rest.PlanTask, "parent", description="A ref of this plan or a task id") = None
    depends_on: like(rest.PlanTask, "dependsOn", description="Refs or task ids it waits "
                     "for") | None = None


class PlanEdge(BaseModel):
    """A new dependency of an existing task."""

    task: like(rest.PlanDependency, "task")
    depends_on: like(rest.PlanDependency, "dependsOn",
                     description="A ref of this plan or a task id")


@tool
async def task_plan(
    ctx: Context,
    tasks: Annotated[list[PlanItem], Field(min_length=1, max_length=500)],
    dependencies: Annotated[list[PlanEdge] | None, Field(description="Existing tasks that "
                                                         "must wait for new ones")] = None,
    project_id: ProjectParam = None,
) -> Planned:
    """Create a whole breakdown at once: tasks, their parents and dependencies by ref, all or
    nothing (refused if it would close a dependency cycle)."""
    link = await link_of(ctx)
    items = []
    for item in tasks:
        row: dict[str, Any] = {"ref": item.ref, "title": item.title}
        if item.description:
            row["description"] = item.description
        if item.priority:
            row["priority"] = item.priority
        if item.parent:
            row["parent"] = item.parent
        if item.depends_on:
            row["dependsOn"] = item.depends_on
        items.append(row)
    body: dict[str, Any] = {"tasks": items}
    if dependencies:
        body["dependencies"] = [{"task": e.task, "dependsOn": e.depends_on}
                                for e in dependencies]
    project = need_project(link, project_id, parameter=True)
    result = await link.api.post(f"/api/projects/{seg(project)}/plan", body)
    ids = {v: k for k, v in result.get("refs", {}).items()}
    created = [PlannedTask(ref=ids.get(t["id"], ""), id=t["id"], title=t["title"])
               for t in result.get("tasks", [])]
    updated = [t["id"] for t in result.get("updated", [])]
    return Planned(created=created, updated=updated,
                   message=f"Created {len(created)} task(s)"
                           + (f"; {len(updated)} existing task(s) now wait for them."
                              if updated else "."))


@tool
async def task_update(
    ctx: Context,
    task_id: TaskId,
    title: Title | None = None,
    description: Annotated[like(rest.UpdateTask, "description") | None,
                           Field(max_length=20_000)] = None,
    priority: Priority | None = None,
    status: TaskStatus | None = None,
    parent_id: like(rest.UpdateTask, "parentId") = None,
    add_dependencies: Annotated[like(rest.UpdateTask, "dependencies") | None,
                                Field(description="Task ids it must wait for")] = None,
    remove_dependencies: like(rest.UpdateTask, "dependencies") | None = None,
) -> Updated:
    """Change a task: fields, status, parent, dependencies. Refused if it would close a
    dependency cycle or another session holds the task."""
    link = await link_of(ctx)
    api = link.api
    path = f"/api/tasks/{seg(task_id)}"
    headers = await fencing(link, task_id)
    body = {k: v for k, v in (("title", title), ("description", description),
                              ("priority", priority), ("status", status),
                              ("parentId", parent_id)) if v is not None}
    task = await api.patch(path, body, headers) if body else None
    for dep in add_dependencies or []:
        task = await api.post(f"{path}/dependencies/{seg(dep)}", {}, headers)
    for dep in remove_dependencies or []:
        task = await api.call("DELETE", f"{path}/dependencies/{seg(dep)}", headers=headers)
    if task is None:
        task = await api.get(path)
    if status in ("completed", "pending") and link.caller.session_id:
        link.tokens.forget(link.caller.session_id, task_id)
    return Updated(task=brief(task), message="Updated.")


@tool
async def session_spawn(
    ctx: Context,
    task_ids: like(rest.CreateSession, "taskIds", min_length=1,
                   description="Tasks for the new agent"),
    role: Role = "worker",
    agent: Annotated[str | None, Field(description="claude, codex or a command line "
                                       "(default: the server's)", max_length=MAX_TEXT)] = None,
    model: Model | None = None,
    name: like(rest.CreateSession, "name") | None = None,
    reason: Annotated[str | None, Field(max_length=MAX_TEXT)] = None,
    project_id: ProjectParam = None,
) -> Spawned:
    """Start an agent session for tasks (the server launches it)."""
    link = await link_of(ctx)
    body: dict[str, Any] = {"projectId": need_project(link, project_id, parameter=True),
                            "taskIds": task_ids, "role": role}
    if link.caller.session_id:
        body.update(spawnSource="session", sessionId=link.caller.session_id)
    else:
        body["spawnSource"] = "api"
    for key, value in (("agent", agent), ("model", model), ("sessionName", name),
                       ("spawnReason", reason)):
        if value:
            body[key] = value
    result = await link.api.post("/api/sessions/spawn", body)
    session = result.get("session") or {}
    return Spawned(sessionId=result["sessionId"], status=str(session.get("status")),
                   role=role, taskIds=list(session.get("taskIds") or task_ids),
                   message=f"Spawned session {result['sessionId']}; session_list follows it.")


@tool
async def session_list(
    ctx: Context,
    status: SessionStatus | None = None,
    active_only: Annotated[bool, Field(description="Only sessions that have not ended")] = True,
    limit: Annotated[int, Field(ge=1, le=200)] = 30,
    project_id: ProjectParam = None,
) -> SessionList:
    """The project's agent sessions (compact), newest last."""
    link = await link_of(ctx)
    sessions = await link.api.get("/api/sessions", {
        "projectId": need_project(link, project_id, parameter=True), "status": status,
        "active": "true" if active_only and not status else None})
    rows = [s for s in sessions if isinstance(s, dict)]
    shown = rows[-limit:]
    return SessionList(sessions=[session_brief(s) for s in shown], total=len(rows),
                       truncated=len(rows) > limit)
