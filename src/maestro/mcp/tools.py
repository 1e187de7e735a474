"""The worker tools: what an agent needs to take, do, report and hand over work. Thin clients
of the REST API that answer small structured records (`models.py`).

Each tool reads who calls it from the link its server resolves for the call (`calls.link_of`):
the session is never a parameter, so an agent cannot act as another session. Every rule stays in
the service; a refusal comes back as a tool error saying what happened and what to do next."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from ..vocabulary import REPORT_KINDS
from .backend import gather, iso, seg
from .calls import (
    brief,
    claim_of,
    detail,
    fencing,
    link_of,
    live_claim,
    need_project,
    need_session,
    page,
    session_brief,
    tool,
    until,
)
from .catalog import ALL_TOOLS
from .models import Claimed, Created, Held, Priority, ProjectBrief, Released, Reported, \
    SessionContext, TaskDetail, TaskId, TaskList, Title, like, rest

# kind -> (the task's sessionStatus, the session timeline entry type), as `maestro report`.
REPORTS = {kind: REPORT_KINDS[kind] for kind in ("progress", "blocked", "needs_input",
                                                 "completed")}
# kind -> the task timeline entry type of a person's report (no session to write to)
PERSON_NOTES = {"progress": "update", "blocked": "blocker", "needs_input": "blocker",
                "completed": "milestone"}
Text = Annotated[str, Field(min_length=1, max_length=20_000)]


@tool
async def session_context(ctx: Context) -> SessionContext:
    """Who you are in Maestro: your session, project, tasks and live claims, and the server's
    time. Call it first."""
    link = await link_of(ctx)
    caller, api = link.caller, link.api
    sid, pid = caller.session_id, caller.project_id

    async def session() -> dict | None:
        return await api.get(f"/api/sessions/{seg(sid)}") if sid else None

    async def project() -> dict | None:
        return await api.get(f"/api/projects/{seg(pid)}") if pid else None

    health, own, proj = await gather(api.get("/health"), session(), project())
    tasks, held = [], []
    if own is not None:
        ids = [t for t in own.get("taskIds") or [] if isinstance(t, str)][:50]
        found = await gather(*[api.get(f"/api/tasks/{seg(t)}") for t in ids])
        for task in found:
            tasks.append(brief(task))
            claim = live_claim(task)
            if claim and claim.get("sessionId") == sid:
                held.append(Held(taskId=task["id"], title=str(task.get("title") or ""),
                                 token=claim["token"],
                                 leaseExpiresAt=iso(claim.get("leaseExpiresAt"))))
    return SessionContext(
        role=caller.role, session=session_brief(own) if own else None,
        project=ProjectBrief(id=proj["id"], name=str(proj.get("name") or ""),
                             workingDir=proj.get("workingDir") or None) if proj else None,
        tasks=tasks, claims=held, serverTime=iso(health.get("timestamp")),
        tools=list(getattr(ctx.request_context.lifespan_context, "tools", ALL_TOOLS)))


@tool
async def task_ready(
    ctx: Context,
    parent_id: like(rest.ClaimNextRequest, "parentId",
                    description="Only tasks under this parent") = None,
    limit: Annotated[int, Field(ge=1, le=200)] = 20,
) -> TaskList:
    """Tasks that can start now (pending, dependencies completed, nobody holds them), highest
    priority first."""
    link = await link_of(ctx)
    tasks = await link.api.get("/api/tasks", {"ready": "true", "projectId": need_project(link),
                                             "parentId": parent_id})
    return page(tasks, limit)


@tool
async def task_claim(
    ctx: Context,
    task_id: Annotated[rest.Id | None, Field(description="The task to claim; omit to claim "
                                             "the next ready one")] = None,
    parent_id: like(rest.ClaimNextRequest, "parentId", description="Without task_id: only "
                    "under this parent") = None,
    ttl_seconds: Annotated[int | None, Field(ge=1, le=86_400, description="Lease length "
                                             "(default 600; renewed while you run)")] = None,
) -> Claimed:
    """Take a task for your session so nobody else works on it (it becomes in_progress): the
    given one, or the next ready one. Claiming a task you hold renews its lease."""
    link = await link_of(ctx)
    sid = need_session(link, "claiming")
    body: dict[str, Any] = {"sessionId": sid}
    if ttl_seconds is not None:
        body["ttlSeconds"] = ttl_seconds
    project = None
    if task_id:
        result = await link.api.post(f"/api/tasks/{seg(task_id)}/claim", body)
    else:
        if parent_id:
            body["parentId"] = parent_id
        project = need_project(link)
        result = await link.api.post(f"/api/projects/{seg(project)}/claim-next", body)
    task, claim = result.get("task"), result.get("claim")
    if not isinstance(task, dict) or not isinstance(claim, dict):
        project = project or need_project(link)
        waiting, busy = await gather(
            link.api.get("/api/tasks", {"blocked": "true", "projectId": project,
                                        "parentId": parent_id}),
            link.api.get("/api/tasks", {"projectId": project, "status": "in_progress",
                                        "parentId": parent_id}))
        if waiting or busy:
            message = (f"Nothing is ready now: {len(waiting)} task(s) wait for dependencies "
                       f"and {len(busy)} are in progress. Try again once some complete.")
        else:
            message = "Nothing is left to claim: no task is pending or in progress."
        return Claimed(claimed=False, message=message, waiting=len(waiting),
                       inProgress=len(busy))
    link.tokens.keep(sid, task["id"], claim["token"])
    return Claimed(claimed=True, task=await detail(link, task), claim=claim_of(claim),
                   message=f"Claimed task {task['id']}. Work on it, report with task_report "
                           "(kind completed when done), or give it back with task_release.")


@tool
async def task_get(ctx: Context, task_id: TaskId) -> TaskDetail:
    """A task with its description, claim, readiness, children, recent timeline and its
    dependencies' titles, statuses and completion reports."""
    link = await link_of(ctx)
    return await detail(link, await link.api.get(f"/api/tasks/{seg(task_id)}"))


@tool
async def task_report(
    ctx: Context,
    task_id: TaskId,
    kind: Annotated[Literal[tuple(REPORTS)],  # type: ignore[valid-type]
                    Field(description="completed also completes the task")],
    message: Annotated[Text, Field(description="What you did, what blocks you, what you "
                                   "need, or (completed) the summary handed to dependent "
                                   "tasks")],
) -> Reported:
    """Report on a task: progress, blocked, needs_input or completed. Refused if your claim on
    it was lost."""
    link = await link_of(ctx)
    api, sid = link.api, link.caller.session_id
    path = f"/api/tasks/{seg(task_id)}"
    session_status = None
    if sid:
        headers = await fencing(link, task_id)
        session_status, entry_type = REPORTS[kind]
        task = await api.patch(path, {"sessionStatus": session_status,
                                      "updateSource": "session", "sessionId": sid}, headers)
        await api.post(f"/api/sessions/{seg(sid)}/timeline",
                       {"type": entry_type, "message": message, "taskId": task_id})
    else:
        headers = {}
        task = await api.post(f"{path}/timeline", {"type": PERSON_NOTES[kind],
                                                   "message": message})
    if kind == "completed":
        task = await api.patch(path, {"status": "completed"}, headers)
        if sid:
            link.tokens.forget(sid, task_id)
    done = "Task completed; tasks waiting for it get your summary." if kind == "completed" \
        else "Reported."
    return Reported(taskId=task_id, kind=kind, status=str(task.get("status")),
                    sessionStatus=session_status, message=done)


@tool
async def task_release(
    ctx: Context,
    task_id: TaskId,
    reason: like(rest.ReleaseRequest, "reason", description="Why") | None = None,
) -> Released:
    """Give a claimed task back (pending again, ready for someone else)."""
    link = await link_of(ctx)
    sid = link.caller.session_id
    task = await link.api.get(f"/api/tasks/{seg(task_id)}")
    claim = live_claim(task)
    if claim is None:
        raise ToolError(f"task {task_id} is not claimed (or its lease ran out: it is pending "
                        "again within a second); nothing to release [NOT_CLAIMED]")
    if sid and claim.get("sessionId") != sid:
        raise ToolError(f"task {task_id} is held by session {claim.get('sessionId')}"
                        f"{until(claim)}, not by this session; nothing to release "
                        "[CLAIM_LOST]")
    token = (link.tokens.get(sid, task_id) if sid else None) or claim.get("token")
    body: dict[str, Any] = {"sessionId": claim.get("sessionId"), "token": token}
    if reason:
        body["reason"] = reason
    result = await link.api.post(f"/api/tasks/{seg(task_id)}/claim/release", body)
    if sid:
        link.tokens.forget(sid, task_id)
    status = str((result.get("task") or {}).get("status"))
    return Released(taskId=task_id, status=status, message=f"Released; the task is {status}.")


@tool
async def task_create(
    ctx: Context,
    title: Title,
    description: Annotated[like(rest.CreateTask, "description") | None,
                           Field(max_length=20_000)] = None,
    priority: Priority | None = None,
    parent_id: like(rest.CreateTask, "parentId",
                    description="Create it as a child of this task") = None,
    blocks: Annotated[rest.Id | None, Field(description="A task of yours that must wait for "
                                            "the new one (it becomes a dependency; created "
                                            "beside that task unless parent_id is given)")] \
        = None,
) -> Created:
    """Record follow-up work found while working: a child task, or (blocks) a new task one of
    your tasks depends on."""
    link = await link_of(ctx)
    fields: dict[str, Any] = {"title": title}
    if description:
        fields["description"] = description
    if priority:
        fields["priority"] = priority
    if blocks:
        waiting = await link.api.get(f"/api/tasks/{seg(blocks)}")
        parent = parent_id or waiting.get("parentId") or None
        item = {"ref": "new", **fields}
        if parent:
            item["parent"] = parent
        result = await link.api.post(
            f"/api/projects/{seg(waiting['projectId'])}/plan",
            {"tasks": [item], "dependencies": [{"task": blocks, "dependsOn": "new"}]},
            await fencing(link, blocks, waiting))
        created = result["tasks"][0]
        return Created(task=brief(created), message=f"Created {created['id']}; {blocks} now "
                       "waits for it.")
    if parent_id:
        parent = await link.api.get(f"/api/tasks/{seg(parent_id)}")
        project = parent["projectId"]
    else:
        project = need_project(link)
    created = await link.api.post("/api/tasks", {"projectId": project, "parentId": parent_id,
                                                 **fields})
    return Created(task=brief(created), message=f"Created {created['id']}.")


def _registry() -> dict:
    from . import orchestrator

    worker = (session_context, task_ready, task_claim, task_get, task_report, task_release,
              task_create)
    planning = (orchestrator.task_list, orchestrator.task_plan, orchestrator.task_update,
                orchestrator.session_spawn, orchestrator.session_list)
    return {fn.__name__: fn for fn in worker + planning}


TOOLS = _registry()
