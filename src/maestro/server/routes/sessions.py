"""Routes of agent sessions (SPEC §7.3, extension E2). An agent sees a session as
`policy.seen_by` shows it, the same as in WebSocket events."""

from __future__ import annotations

from ... import jsonio
from ... import models as m
from ...paging import CREATION
from ...policy import OWN_PROJECT, forbidden, seen_by
from ...service import Service
from ..openapi import Act, Op
from ..router import ApiRequest, Reply, Router
from .common import appended, page_of, paged

S404 = {404: ("SESSION_NOT_FOUND",)}


def install(router: Router, service: Service) -> None:
    route = router.route
    sessions = service.state.sessions

    def one_session(r: ApiRequest, s: dict) -> bytes:
        if r.identity is None:
            return sessions.encode(s)
        seen = seen_by(r.identity, s, s.get("projectId"))
        if seen is None:
            raise forbidden(OWN_PROJECT)
        return sessions.encode(s) if seen is s else jsonio.dumps(seen)

    @route("GET", "/api/sessions", Op(
        "List sessions", acts=Act("session", "list", id=None),
        query=m.SessionListQuery, ok=list[m.Session], paged=True,
        description="Filters combine with AND. In order of `startedAt`."))
    async def list_sessions(r: ApiRequest):
        filters = (r.restrict_project or r.query("projectId"), r.query("taskId"),
                   r.query("status"), r.query("active"))
        page = page_of(r)
        after = None
        if page is not None:
            found, after = service.page_sessions(page, *filters)
        else:
            found = service.list_sessions(*filters)
        if r.identity is not None:
            body = b"[" + b",".join(one_session(r, s) for s in found) + b"]"
        else:
            body = sessions.encode_list(found)
        return body if page is None else paged(r, body, after, CREATION)

    @route("POST", "/api/sessions", Op(
        "Create a session and link its tasks",
        acts=Act("session", "create", id=None), body=m.CreateSession, ok=m.Session,
        status=201, errors={404: ("PROJECT_NOT_FOUND", "TASK_NOT_FOUND")},
        events=("session:created", "task:session_added", "task:updated")))
    async def create_session(r: ApiRequest):
        return Reply(one_session(r, await service.create_session(await r.json())), 201)

    @route("GET", "/api/sessions/{id}", Op(
        "Get a session", acts=Act("session", "read"), ok=m.Session, errors=S404))
    async def get_session(r: ApiRequest):
        return one_session(r, service.get_session(r.param()))

    @route("PATCH", "/api/sessions/{id}", Op(
        "Update a session", acts=Act("session", "update"), body=m.UpdateSession, ok=m.Session,
        errors={404: ("SESSION_NOT_FOUND", "TASK_NOT_FOUND")},
        events=("session:updated", "session:task_removed", "task:session_removed",
                "session:task_added", "task:session_added", "task:updated")))
    async def update_session(r: ApiRequest):
        body = await r.json()
        return one_session(r, await service.update_session(r.param(), body))

    @route("DELETE", "/api/sessions/{id}", Op(
        "Delete a session (unlinks its tasks)",
        acts=Act("session", "delete"), ok=m.Deleted, errors=S404,
        events=("session:deleted", "task:session_removed", "task:updated")))
    async def delete_session(r: ApiRequest):
        await r.json()
        return await service.delete_session(r.param())

    @route("POST", "/api/sessions/{id}/tasks/{taskId}", Op(
        "Link a task to a session (idempotent)", acts=Act("session", "link"), ok=m.Session,
        errors={404: ("NOT_FOUND",)},
        events=("session:task_added", "task:session_added", "session:updated",
                "task:updated")))
    async def add_session_task(r: ApiRequest):
        await r.json()
        return one_session(r, await service.add_task_to_session(r.param(), r.param("taskId")))

    @route("DELETE", "/api/sessions/{id}/tasks/{taskId}", Op(
        "Unlink a task from a session (idempotent)",
        acts=Act("session", "unlink"), ok=m.Session, errors={404: ("NOT_FOUND",)},
        events=("session:task_removed", "task:session_removed", "session:updated",
                "task:updated")))
    async def remove_session_task(r: ApiRequest):
        await r.json()
        return one_session(r, await service.remove_task_from_session(r.param(),
                                                                      r.param("taskId")))

    @route("POST", "/api/sessions/{id}/events", Op(
        "Append a session event",
        acts=Act("session", "append"), body=m.AddSessionEvent, ok=m.Session, errors=S404,
        events=("session:updated",)))
    async def session_events(r: ApiRequest):
        body = await r.json()
        session = await service.add_session_event(r.param(), body)
        return appended(r, session, "events", lambda s: one_session(r, s))

    @route("POST", "/api/sessions/{id}/timeline", Op(
        "Append to a session's timeline (an agent's report)",
        acts=Act("session", "append"), body=m.AddSessionTimeline,
        ok=m.Session, errors=S404, events=("session:updated",)))
    async def session_timeline(r: ApiRequest):
        body = await r.json()
        session = await service.add_session_timeline(r.param(), body)
        return appended(r, session, "timeline", lambda s: one_session(r, s))
