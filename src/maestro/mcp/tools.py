"""The tools: thin clients of the REST API that answer small structured records.

Each tool reads who calls it from the link its server resolves for the call (`links.py`): the
session is never a parameter, so an agent cannot act as another session. Every rule stays in
the service; a refusal comes back as a tool error saying what happened and what to do next."""

from __future__ import annotations

import functools
import json
import time
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from ..domain.handoff import last_completion_report
from .backend import CLAIM_HEADER, Link, Refusal, Unreachable, gather, iso, seg
from .catalog import ALL_TOOLS
from .models import (
    Claim,
    Claimed,
    Created,
    Dependency,
    Held,
    Note,
    Planned,
    PlannedTask,
    ProjectBrief,
    Released,
    Reported,
    SessionBrief,
    SessionContext,
    SessionList,
    Spawned,
    TaskBrief,
    TaskDetail,
    TaskList,
    Updated,
)

REPORT_CLIP = 1500
NOTE_CLIP = 300
MAX_DEPENDENCIES = 20
MAX_CHILDREN = 20
# kind -> (the task's sessionStatus, the session timeline entry type), as `maestro report`.
REPORTS = {"progress": ("working", "progress"), "blocked": ("blocked", "task_blocked"),
           "needs_input": ("needs_input", "needs_input"),
           "completed": ("completed", "task_completed")}
# kind -> the task timeline entry type of a person's report (no session to write to)
PERSON_NOTES = {"progress": "update", "blocked": "blocker", "needs_input": "blocker",
                "completed": "milestone"}

TaskId = Annotated[str, Field(description="Task id", max_length=128)]
Text = Annotated[str, Field(min_length=1, max_length=20_000)]
Priority = Literal["low", "medium", "high"]
ProjectParam = Annotated[str | None, Field(description="Project id (default: your project)",
                                           max_length=128)]


# ---------------------------------------------------------------------------- plumbing
async def link_of(ctx: Context) -> Link:
    """The caller's link, resolved by the server the tool runs in (its lifespan object)."""
    return await ctx.request_context.lifespan_context.resolve(ctx)


def _until(details: dict) -> str:
    when = iso(details.get("leaseExpiresAt"))
    return f" until {when}" if when else ""


def describe(refusal: Refusal, task_id: str | None = None) -> str:
    """One actionable sentence for an error answer of the API (its code in brackets)."""
    d = refusal.details
    tid = d.get("taskId") or task_id or "?"
    code = refusal.code
    if code == "TASK_ALREADY_CLAIMED":
        text = (f"task {tid} is claimed by session {d.get('sessionId')}{_until(d)}; leave it "
                "to its holder (task_ready lists free work)")
    elif code == "CLAIM_LOST":
        holder = (f"session {d['sessionId']} holds it{_until(d)}" if d.get("sessionId")
                  else "nobody holds it now")
        text = (f"this session no longer holds the claim on task {tid} ({holder}); stop "
                "working on it; task_claim takes it again if it is ready")
    elif code == "TASK_NOT_READY":
        waits = list(d.get("blockedBy") or []) + list(d.get("missingDependencies") or [])
        held = list(d.get("blockedAncestors") or [])
        why = []
        if waits:
            why.append("it waits for " + ", ".join(map(str, waits)))
        if held:
            why.append("parent held back: " + ", ".join(map(str, held)))
        if why:
            text = (f"task {tid} is not ready ({'; '.join(why)}); task_get shows what it "
                    "waits for, task_ready what can start now")
        else:
            text = (f"task {tid} is {d.get('status') or 'not pending'}: only a pending task "
                    "can be claimed; task_ready lists what can start now")
    elif code == "SESSION_NOT_ACTIVE":
        text = f"{refusal.message}: this session has ended and cannot take work"
    elif refusal.status == 401:
        text = ("the server needs a token: set MAESTRO_SESSION_TOKEN (an agent) or "
                "MAESTRO_TOKEN (a person)")
    elif refusal.status == 403:
        text = f"not allowed: {refusal.message}" + (f" ({tid})" if tid != "?" else "")
    elif refusal.status == 404:
        what = next((f"{k[:-2]} {v}" for k, v in d.items() if k.endswith("Id")), "")
        text = f"{refusal.message}" + (f": {what}" if what else "")
    elif refusal.status >= 500:
        text = f"the server failed: {refusal.message}"
    else:
        text = refusal.message
    return f"{text} [{code}]"


def tool(fn):
    """Run a tool: its answer becomes compact structured content (and the same JSON as text,
    for clients that read only text); API refusals and network failures become tool
    errors."""

    @functools.wraps(fn)
    async def run(*args, **kwargs):
        try:
            answer = await fn(*args, **kwargs)
        except Refusal as refusal:
            raise ToolError(describe(refusal, kwargs.get("task_id"))) from None
        except Unreachable as exc:
            raise ToolError(str(exc)) from None
        data = answer.content()
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return CallToolResult(content=[TextContent(type="text", text=text)],
                              structured_content=data)

    return run


def _need_session(link: Link, what: str) -> str:
    if not link.caller.session_id:
        raise ToolError(f"{what} needs a Maestro session: run inside a spawned agent, or set "
                        "MAESTRO_SESSION_ID for `maestro mcp`")
    return link.caller.session_id


def _need_project(link: Link, given: str | None = None) -> str:
    project = given or link.caller.project_id
    if not project:
        raise ToolError("no project: pass project_id (or set MAESTRO_PROJECT_ID for "
                        "`maestro mcp`)")
    return project


def _clip(text: Any, limit: int) -> str | None:
    if not isinstance(text, str) or not text:
        return None
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _live_claim(task: dict) -> dict | None:
    claim = task.get("claim")
    if not isinstance(claim, dict) or not claim.get("sessionId"):
        return None
    until = claim.get("leaseExpiresAt")
    if isinstance(until, (int, float)) and until <= time.time() * 1000:
        return None
    return claim


def brief(task: dict) -> TaskBrief:
    claim = _live_claim(task)
    deps = [d for d in task.get("dependencies") or [] if isinstance(d, str)]
    return TaskBrief(id=task["id"], title=str(task.get("title") or ""),
                     status=str(task.get("status") or ""), priority=task.get("priority"),
                     parentId=task.get("parentId") or None, dependencies=deps or None,
                     claimedBy=claim.get("sessionId") if claim else None)


def claim_of(claim: dict | None) -> Claim | None:
    if not isinstance(claim, dict) or not isinstance(claim.get("token"), int):
        return None
    return Claim(sessionId=str(claim.get("sessionId")), token=claim["token"],
                 leaseExpiresAt=iso(claim.get("leaseExpiresAt")))


async def _completion_report(link: Link, task: dict) -> str | None:
    """The task's last completion report (SPEC §15.4), read from its sessions."""
    sessions: dict[str, dict] = {}
    for sid in [s for s in task.get("sessionIds") or [] if isinstance(s, str)][-5:]:
        try:
            sessions[sid] = await link.api.get(f"/api/sessions/{seg(sid)}")
        except Refusal:
            continue
    return last_completion_report(task, sessions.get)


async def _dependency(link: Link, dep_id: str) -> Dependency:
    try:
        dep = await link.api.get(f"/api/tasks/{seg(dep_id)}")
    except Refusal as refusal:
        if refusal.status in (403, 404):
            return Dependency(id=dep_id, title="", status="missing")
        raise
    report = await _completion_report(link, dep) if dep.get("status") == "completed" else None
    return Dependency(id=dep_id, title=str(dep.get("title") or ""),
                      status=str(dep.get("status")), report=_clip(report, REPORT_CLIP))


async def detail(link: Link, task: dict) -> TaskDetail:
    """A task with what an agent needs to work on it: its dependencies (title, status,
    completion report), children, readiness and the last few timeline entries."""
    tid = task["id"]
    deps = [d for d in task.get("dependencies") or [] if isinstance(d, str)]

    async def children() -> list:
        return await link.api.get(f"/api/tasks/{seg(tid)}/children")

    async def readiness() -> dict | None:
        if task.get("status") != "pending":
            return None
        return await link.api.get(f"/api/tasks/{seg(tid)}/readiness")

    rows, kids, ready = await gather(gather(*[_dependency(link, d)
                                              for d in deps[:MAX_DEPENDENCIES]]),
                                     children(), readiness())
    timeline = [e for e in task.get("timeline") or [] if isinstance(e, dict)]
    notes = [Note(type=str(e.get("type")),
                  message=_clip(e.get("message"), NOTE_CLIP)
                  or (f"session {e['sessionId']}" if e.get("sessionId") else ""),
                  at=iso(e.get("timestamp"))) for e in timeline[-3:]]
    waits = None
    if ready is not None:
        waits = [str(x) for key in ("blockedBy", "missingDependencies", "blockedAncestors")
                 for x in ready.get(key) or []] or None
    claim = _live_claim(task)
    return TaskDetail(
        id=tid, title=str(task.get("title") or ""), status=str(task.get("status") or ""),
        priority=task.get("priority"), description=_clip(task.get("description"), 20_000),
        initialPrompt=_clip(task.get("initialPrompt"), 20_000),
        parentId=task.get("parentId") or None, claim=claim_of(claim),
        sessionStatus=task.get("sessionStatus"),
        ready=ready.get("ready") if ready is not None else None, waitsFor=waits,
        dependencies=list(rows) or None,
        children=[brief(k) for k in kids[:MAX_CHILDREN]] or None, recent=notes or None,
        timelineEntries=len(timeline))


async def fencing(link: Link, task_id: str, task: dict | None = None) -> dict[str, str]:
    """`X-Maestro-Claim-Token` for a write of the calling session to `task_id`: the token it
    was granted, else its own live claim's; a task another session holds is refused here."""
    sid = link.caller.session_id
    if not sid:
        return {}
    kept = link.tokens.get(sid, task_id)
    if kept is not None:
        return {CLAIM_HEADER: str(kept)}
    task = task or await link.api.get(f"/api/tasks/{seg(task_id)}")
    claim = _live_claim(task)
    if claim is None:
        return {}
    if claim.get("sessionId") == sid and isinstance(claim.get("token"), int):
        return {CLAIM_HEADER: str(claim["token"])}
    raise ToolError(f"task {task_id} is claimed by session {claim.get('sessionId')}"
                    f"{_until(claim)}; leave it to its holder (task_ready lists free work) "
                    "[TASK_ALREADY_CLAIMED]")


def _page(tasks: list, limit: int) -> TaskList:
    rows = [t for t in tasks if isinstance(t, dict)]
    return TaskList(tasks=[brief(t) for t in rows[:limit]], total=len(rows),
                    truncated=len(rows) > limit)


def _session_brief(session: dict) -> SessionBrief:
    meta = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
    return SessionBrief(id=session["id"], name=session.get("name"),
                        status=str(session.get("status")), role=meta.get("role"),
                        taskIds=[t for t in session.get("taskIds") or []
                                 if isinstance(t, str)] or None,
                        lastActivity=iso(session.get("lastActivity")))


# ---------------------------------------------------------------------------- worker tools
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
            claim = _live_claim(task)
            if claim and claim.get("sessionId") == sid:
                held.append(Held(taskId=task["id"], title=str(task.get("title") or ""),
                                 token=claim["token"],
                                 leaseExpiresAt=iso(claim.get("leaseExpiresAt"))))
    return SessionContext(
        role=caller.role, session=_session_brief(own) if own else None,
        project=ProjectBrief(id=proj["id"], name=str(proj.get("name") or ""),
                             workingDir=proj.get("workingDir") or None) if proj else None,
        tasks=tasks, claims=held, serverTime=iso(health.get("timestamp")),
        tools=list(getattr(ctx.request_context.lifespan_context, "tools", ALL_TOOLS)))


@tool
async def task_ready(
    ctx: Context,
    parent_id: Annotated[str | None, Field(description="Only tasks under this parent",
                                           max_length=128)] = None,
    limit: Annotated[int, Field(ge=1, le=200)] = 20,
) -> TaskList:
    """Tasks that can start now (pending, dependencies completed, nobody holds them), highest
    priority first."""
    link = await link_of(ctx)
    tasks = await link.api.get("/api/tasks", {"ready": "true", "projectId": _need_project(link),
                                              "parentId": parent_id})
    return _page(tasks, limit)


@tool
async def task_claim(
    ctx: Context,
    task_id: Annotated[str | None, Field(description="The task to claim; omit to claim the "
                                         "next ready one", max_length=128)] = None,
    parent_id: Annotated[str | None, Field(description="Without task_id: only under this "
                                           "parent", max_length=128)] = None,
    ttl_seconds: Annotated[int | None, Field(ge=1, le=86_400, description="Lease length "
                                             "(default 600; renewed while you run)")] = None,
) -> Claimed:
    """Take a task for your session so nobody else works on it (it becomes in_progress): the
    given one, or the next ready one. Claiming a task you hold renews its lease."""
    link = await link_of(ctx)
    sid = _need_session(link, "claiming")
    body: dict[str, Any] = {"sessionId": sid}
    if ttl_seconds is not None:
        body["ttlSeconds"] = ttl_seconds
    project = None
    if task_id:
        result = await link.api.post(f"/api/tasks/{seg(task_id)}/claim", body)
    else:
        if parent_id:
            body["parentId"] = parent_id
        project = _need_project(link)
        result = await link.api.post(f"/api/projects/{seg(project)}/claim-next", body)
    task, claim = result.get("task"), result.get("claim")
    if not isinstance(task, dict) or not isinstance(claim, dict):
        project = project or _need_project(link)
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
    kind: Annotated[Literal["progress", "blocked", "needs_input", "completed"],
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
    reason: Annotated[str | None, Field(max_length=1000, description="Why")] = None,
) -> Released:
    """Give a claimed task back (pending again, ready for someone else)."""
    link = await link_of(ctx)
    sid = link.caller.session_id
    task = await link.api.get(f"/api/tasks/{seg(task_id)}")
    claim = _live_claim(task) or (task.get("claim") if isinstance(task.get("claim"), dict)
                                  else None)
    if claim is None:
        raise ToolError(f"task {task_id} is not claimed; nothing to release [NOT_CLAIMED]")
    if sid and claim.get("sessionId") != sid:
        raise ToolError(f"task {task_id} is held by session {claim.get('sessionId')}"
                        f"{_until(claim)}, not by this session; nothing to release "
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
    title: Annotated[str, Field(min_length=1, max_length=1000)],
    description: Annotated[str | None, Field(max_length=20_000)] = None,
    priority: Priority | None = None,
    parent_id: Annotated[str | None, Field(description="Create it as a child of this task",
                                           max_length=128)] = None,
    blocks: Annotated[str | None, Field(description="A task of yours that must wait for the "
                                        "new one (it becomes a dependency; created beside "
                                        "that task unless parent_id is given)",
                                        max_length=128)] = None,
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
        project = _need_project(link)
    created = await link.api.post("/api/tasks", {"projectId": project, "parentId": parent_id,
                                                 **fields})
    return Created(task=brief(created), message=f"Created {created['id']}.")


# ---------------------------------------------------------------------------- orchestrator
@tool
async def task_list(
    ctx: Context,
    status: Annotated[Literal["pending", "in_progress", "completed", "blocked", "ready",
                              "waiting"] | None,
                      Field(description="ready: can start now; waiting: pending but held "
                            "back")] = None,
    parent_id: Annotated[str | None, Field(max_length=128)] = None,
    limit: Annotated[int, Field(ge=1, le=500)] = 50,
    project_id: ProjectParam = None,
) -> TaskList:
    """The project's tasks (compact), optionally by status or under a parent."""
    link = await link_of(ctx)
    params: dict[str, Any] = {"projectId": _need_project(link, project_id),
                              "parentId": parent_id}
    if status == "ready":
        params["ready"] = "true"
    elif status == "waiting":
        params["blocked"] = "true"
    else:
        params["status"] = status
    return _page(await link.api.get("/api/tasks", params), limit)


class PlanItem(BaseModel):
    """One task of a plan."""

    ref: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                              description="Its name inside the plan")]
    title: Annotated[str, Field(min_length=1, max_length=1000)]
    description: Annotated[str | None, Field(max_length=20_000)] = None
    priority: Priority | None = None
    parent: Annotated[str | None, Field(description="A ref of this plan or a task id",
                                        max_length=128)] = None
    depends_on: Annotated[list[str] | None, Field(description="Refs or task ids it waits "
                                                  "for")] = None


class PlanEdge(BaseModel):
    """A new dependency of an existing task."""

    task: Annotated[str, Field(max_length=128)]
    depends_on: Annotated[str, Field(description="A ref of this plan or a task id",
                                     max_length=128)]


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
    project = _need_project(link, project_id)
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
    title: Annotated[str | None, Field(min_length=1, max_length=1000)] = None,
    description: Annotated[str | None, Field(max_length=20_000)] = None,
    priority: Priority | None = None,
    status: Literal["pending", "in_progress", "completed", "blocked"] | None = None,
    parent_id: Annotated[str | None, Field(max_length=128)] = None,
    add_dependencies: Annotated[list[str] | None, Field(description="Task ids it must wait "
                                                        "for")] = None,
    remove_dependencies: list[str] | None = None,
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
    task_ids: Annotated[list[str], Field(min_length=1, description="Tasks for the new agent")],
    role: Literal["worker", "orchestrator"] = "worker",
    agent: Annotated[str | None, Field(description="claude, codex or a command line "
                                       "(default: the server's)", max_length=1000)] = None,
    model: Literal["sonnet", "opus", "haiku"] | None = None,
    name: Annotated[str | None, Field(max_length=1000)] = None,
    reason: Annotated[str | None, Field(max_length=1000)] = None,
    project_id: ProjectParam = None,
) -> Spawned:
    """Start an agent session for tasks (the server launches it)."""
    link = await link_of(ctx)
    body: dict[str, Any] = {"projectId": _need_project(link, project_id), "taskIds": task_ids,
                            "role": role}
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
    status: Literal["spawning", "running", "completed", "failed"] | None = None,
    active_only: Annotated[bool, Field(description="Only sessions that have not ended")] = True,
    limit: Annotated[int, Field(ge=1, le=200)] = 30,
    project_id: ProjectParam = None,
) -> SessionList:
    """The project's agent sessions (compact), newest last."""
    link = await link_of(ctx)
    sessions = await link.api.get("/api/sessions", {
        "projectId": _need_project(link, project_id), "status": status,
        "active": "true" if active_only and not status else None})
    rows = [s for s in sessions if isinstance(s, dict)]
    shown = rows[-limit:]
    return SessionList(sessions=[_session_brief(s) for s in shown], total=len(rows),
                       truncated=len(rows) > limit)


TOOLS = {fn.__name__: fn for fn in (
    session_context, task_ready, task_claim, task_get, task_report, task_release, task_create,
    task_list, task_plan, task_update, session_spawn, session_list)}
