"""Routes of tasks and their timelines (SPEC §7.2)."""

from __future__ import annotations

from ... import models as m
from ...paging import CREATION, PRIORITY
from ...service import Service
from ..openapi import Act, Op
from ..router import ApiRequest, Reply, Router
from .common import appended, page_of, paged, writer

T404 = {404: ("TASK_NOT_FOUND",)}
FENCED = {404: ("TASK_NOT_FOUND",), 409: ("CLAIM_LOST",)}
TASK_CHANGED = ("task:updated",)


def install(router: Router, service: Service) -> None:
    route = router.route
    tasks = service.state.tasks

    @route("GET", "/api/tasks", Op(
        "List tasks",
        acts=Act("task", "list", id=None), query=m.TaskListQuery, ok=list[m.Task], paged=True,
        description="Filters combine with AND. In creation order; with `ready=true` or "
                    "`blocked=true` in priority order (high, medium, low), then creation."))
    async def list_tasks(r: ApiRequest):
        project, status, parent = (r.restrict_project or r.query("projectId"),
                                   r.query("status"), r.query("parentId"))
        ready, blocked = r.query("ready") == "true", r.query("blocked") == "true"
        if ready or blocked:  # SPEC §15.2; both at once: nothing is ready and blocked
            page = page_of(r, PRIORITY)
            if ready and blocked:
                return b"[]"
            if page is not None:
                found, after = (service.page_ready if ready else service.page_blocked)(
                    page, project, parent, status)
                return paged(r, tasks.encode_list(found), after, PRIORITY)
            found = (service.list_ready if ready else service.list_blocked)(
                project, parent, status)
            return tasks.encode_list(found)
        page = page_of(r)
        if page is not None:
            found, after = service.page_tasks(page, project, status, parent)
            return paged(r, tasks.encode_list(found), after, CREATION)
        if project is None and status is None and parent is None:
            return tasks.encode_all()
        return tasks.encode_list(service.list_tasks(project, status, parent))

    @route("POST", "/api/tasks", Op(
        "Create a task",
        acts=Act("task", "create", id=None), body=m.CreateTask, ok=m.Task, status=201,
        errors={404: ("PROJECT_NOT_FOUND", "TASK_NOT_FOUND")}, events=("task:created",)))
    async def create_task(r: ApiRequest):
        return Reply(tasks.encode(await service.create_task(await r.json())), 201)

    @route("GET", "/api/tasks/{id}", Op(
        "Get a task", acts=Act("task", "read"), ok=m.Task, errors=T404))
    async def get_task(r: ApiRequest):
        return tasks.encode(service.get_task(r.param()))

    @route("PATCH", "/api/tasks/{id}", Op(
        "Update a task",
        acts=Act("task", "update"), body=m.UpdateTask, ok=m.Task, claim_token=True,
        errors={400: ("DEPENDENCY_CYCLE",), 404: ("TASK_NOT_FOUND", "SESSION_NOT_FOUND"),
                409: ("CLAIM_LOST",)}, events=TASK_CHANGED))
    async def update_task(r: ApiRequest):
        body = await r.json()
        return tasks.encode(await service.update_task(r.param(), body, **writer(r)))

    @route("DELETE", "/api/tasks/{id}", Op(
        "Delete a task", acts=Act("task", "delete"), query=m.DeleteTaskQuery, ok=m.Deleted,
        description="Unlinks it from its sessions, drops it from the dependencies of "
                    "other tasks and releases its claim.",
        errors={400: ("TASK_HAS_CHILDREN",), **T404}, events=("task:deleted",)))
    async def delete_task(r: ApiRequest):
        await r.json()
        return await service.delete_task(r.param(), cascade=r.query("cascade") == "true")

    @route("POST", "/api/tasks/{id}/timeline", Op(
        "Append to a task's timeline",
        acts=Act("task", "append"), body=m.AddTimeline, ok=m.Task, claim_token=True,
        errors=FENCED, events=TASK_CHANGED))
    async def add_timeline(r: ApiRequest):
        body = await r.json()
        task = await service.add_timeline_event(r.param(), body, **writer(r))
        return appended(r, task, "timeline", tasks.encode)

    @route("GET", "/api/tasks/{id}/children", Op(
        "Direct children of a task",
        acts=Act("task", "read"), query=m.PageQuery, ok=list[m.Task], paged=True, errors=T404))
    async def task_children(r: ApiRequest):
        page = page_of(r)
        if page is not None:
            found, after = service.page_children(r.param(), page)
            return paged(r, tasks.encode_list(found), after, CREATION)
        return tasks.encode_list(service.task_children(r.param()))

    @route("GET", "/api/tasks/{id}/history", Op(
        "A task's history: its timeline and what its sessions reported about it",
        acts=Act("task", "read"), ok=list[m.HistoryEntry], errors=T404,
        description="The task's timeline merged with the timeline entries of its sessions "
                    "that name it (`maestro report …`), oldest first."))
    async def task_history(r: ApiRequest):
        return service.task_history(r.param())
