"""What every tool shares: the caller's link, turning answers and API refusals into tool
results, compact records of tasks and sessions (a task's detail with its dependencies'
completion reports), and the fencing header of a session's writes (SPEC §15.3)."""

from __future__ import annotations

import functools
import json
import time
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, TextContent

from ..domain.handoff import last_completion_report
from .backend import CLAIM_HEADER, Link, Refusal, Unreachable, gather, iso, seg
from .models import Claim, Dependency, Note, Priority, SessionBrief, TaskBrief, TaskDetail, \
    TaskId, TaskList

REPORT_CLIP = 1500
NOTE_CLIP = 300
MAX_DEPENDENCIES = 20
MAX_CHILDREN = 20


async def link_of(ctx: Context) -> Link:
    """The caller's link, resolved by the server the tool runs in (its lifespan object)."""
    return await ctx.request_context.lifespan_context.resolve(ctx)


def until(details: dict) -> str:
    """` until <time>` of a lease named in `details`, or nothing."""
    when = iso(details.get("leaseExpiresAt"))
    return f" until {when}" if when else ""


def describe(refusal: Refusal, task_id: str | None = None) -> str:
    """One actionable sentence for an error answer of the API (its code in brackets)."""
    d = refusal.details
    tid = d.get("taskId") or task_id or "?"
    code = refusal.code
    if code == "TASK_ALREADY_CLAIMED":
        text = (f"task {tid} is claimed by session {d.get('sessionId')}{until(d)}; leave it "
                "to its holder (task_ready lists free work)")
    elif code == "CLAIM_LOST":
        holder = (f"session {d['sessionId']} holds it{until(d)}" if d.get("sessionId")
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


def need_session(link: Link, what: str) -> str:
    """The calling session, or a tool error for a caller without one."""
    if not link.caller.session_id:
        raise ToolError(f"{what} needs a Maestro session: run inside a spawned agent, or set "
                        "MAESTRO_SESSION_ID for `maestro mcp`")
    return link.caller.session_id


def need_project(link: Link, given: str | None = None, *, parameter: bool = False) -> str:
    """The project a tool works in: the one given, else the caller's."""
    project = given or link.caller.project_id
    if not project:
        how = "pass project_id, or set" if parameter else "set"
        raise ToolError(f"no project: {how} MAESTRO_PROJECT_ID for `maestro mcp` [NO_PROJECT]")
    return project


def clip(text: Any, limit: int) -> str | None:
    """`text` cut to `limit` characters (None for anything but a non-empty string)."""
    if not isinstance(text, str) or not text:
        return None
    return text if len(text) <= limit else text[:limit - 1] + "…"


def live_claim(task: dict) -> dict | None:
    """The task's claim while its lease lasts (by this machine's clock), else None."""
    claim = task.get("claim")
    if not isinstance(claim, dict) or not claim.get("sessionId"):
        return None
    expires = claim.get("leaseExpiresAt")
    if isinstance(expires, (int, float)) and expires <= time.time() * 1000:
        return None
    return claim


def text_or_none(value: Any) -> str | None:
    """A string field as it is, anything else (absent, or odd data from a foreign file) None."""
    return value if isinstance(value, str) and value else None


def brief(task: dict) -> TaskBrief:
    """A task in one line: id, title, status, priority, parent, dependencies, holder."""
    claim = live_claim(task)
    deps = [d for d in task.get("dependencies") or [] if isinstance(d, str)]
    return TaskBrief(id=task["id"], title=str(task.get("title") or ""),
                     status=str(task.get("status") or ""),
                     priority=text_or_none(task.get("priority")),
                     parentId=text_or_none(task.get("parentId")), dependencies=deps or None,
                     claimedBy=text_or_none(claim.get("sessionId")) if claim else None)


def claim_of(claim: dict | None) -> Claim | None:
    """A claim as the tools show it (None without a well-formed one)."""
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
                      status=str(dep.get("status")), report=clip(report, REPORT_CLIP))


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
                  message=clip(e.get("message"), NOTE_CLIP)
                  or (f"session {e['sessionId']}" if e.get("sessionId") else ""),
                  at=iso(e.get("timestamp"))) for e in timeline[-3:]]
    waits = None
    if ready is not None:
        waits = [str(x) for key in ("blockedBy", "missingDependencies", "blockedAncestors")
                 for x in ready.get(key) or []] or None
    claim = live_claim(task)
    return TaskDetail(
        id=tid, title=str(task.get("title") or ""), status=str(task.get("status") or ""),
        priority=text_or_none(task.get("priority")),
        description=clip(task.get("description"), 20_000),
        initialPrompt=clip(task.get("initialPrompt"), 20_000),
        parentId=text_or_none(task.get("parentId")), claim=claim_of(claim),
        sessionStatus=text_or_none(task.get("sessionStatus")),
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
    claim = live_claim(task)
    if claim is None:
        return {}
    if claim.get("sessionId") == sid and isinstance(claim.get("token"), int):
        return {CLAIM_HEADER: str(claim["token"])}
    raise ToolError(f"task {task_id} is claimed by session {claim.get('sessionId')}"
                    f"{until(claim)}; leave it to its holder (task_ready lists free work) "
                    "[TASK_ALREADY_CLAIMED]")


def page(tasks: list, limit: int) -> TaskList:
    """The first `limit` tasks of a list, with the list's length."""
    rows = [t for t in tasks if isinstance(t, dict)]
    return TaskList(tasks=[brief(t) for t in rows[:limit]], total=len(rows),
                    truncated=len(rows) > limit)


def session_brief(session: dict) -> SessionBrief:
    """A session in one line: id, name, status, role, tasks, last activity."""
    meta = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
    return SessionBrief(id=session["id"], name=text_or_none(session.get("name")),
                        status=str(session.get("status")), role=text_or_none(meta.get("role")),
                        taskIds=[t for t in session.get("taskIds") or []
                                 if isinstance(t, str)] or None,
                        lastActivity=iso(session.get("lastActivity")))
