"""The ASGI application: REST routes (SPEC §7, §11), the WebSocket stream and the dashboard on one
port. Routes only parse, call one service method and render; the rules live in the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from .. import jsonio
from ..config import Settings
from ..errors import ApiError, StorageError, validation
from ..events import EventBus
from ..identity import TokenRegistry
from ..policy import OWN_PROJECT, Policy, forbidden, seen_by
from ..skills import SkillCatalogue
from ..paging import CREATION, PRIORITY, encode_cursor, page_request
from ..service import Service
from ..store.base import Store
from . import api_models as m
from .openapi import Act, Op, build_document, docs_page, swagger_ui_dir
from .router import ApiRequest, Reply, Router
from .security import Security
from .websocket import Hub

log = logging.getLogger("maestro.http")

JSON_TYPE = "application/json; charset=utf-8"
WEB_DIR = Path(__file__).parent / "web"


def json_response(content, status: int = 200) -> Response:
    body = content if isinstance(content, (bytes, bytearray)) else jsonio.dumps(content)
    return Response(body, status_code=status, media_type=JSON_TYPE)


def error_response(exc: ApiError) -> Response:
    return json_response(exc.body(), exc.status)


async def read_json(request: Request) -> dict:
    """The body of a Starlette request as a JSON object, with the rules of `ApiRequest.json`."""
    return await ApiRequest(request.scope, request.receive, {}).json()


def wants_minimal(r: ApiRequest) -> bool:
    """`Prefer: return=minimal` (RFC 7240): the client does not want the whole entity back."""
    prefer = r.header(b"prefer")
    if not prefer:
        return False
    for token in prefer.lower().replace(b";", b",").split(b","):
        if token.strip().replace(b'"', b"") == b"return=minimal":
            return True
    return False


def minimal_reply(entry: dict) -> Reply:
    """The answer to an append with `Prefer: return=minimal`: the entry that was appended
    (with its id and timestamp), whatever the size of the entity it went to."""
    return Reply(jsonio.dumps(entry), 200, [(b"preference-applied", b"return=minimal")])


CLAIM_TOKEN_HEADER = b"x-maestro-claim-token"


def paged(r: ApiRequest, body: bytes, next_key: tuple | None, order: str) -> Reply:
    """A page of a list: the body stays a plain array; when more may follow, the next cursor
    goes in `X-Next-Cursor` and in a `Link: <...>; rel="next"` header."""
    if next_key is None:
        return Reply(body)
    cursor = encode_cursor(order, next_key)
    query = [(k, v) for k, v in parse_qsl(r.scope.get("query_string", b"").decode("latin-1"))
             if k != "cursor"]
    query.append(("cursor", cursor))
    path = r.scope.get("raw_path") or r.path.encode("utf-8")
    link = b"<" + path + b"?" + urlencode(query).encode("ascii") + b'>; rel="next"'
    return Reply(body, 200, [(b"x-next-cursor", cursor.encode("ascii")), (b"link", link)])


def page_of(r: ApiRequest, order: str = CREATION):
    """The page asked for by `limit` and `cursor` (None: the whole list, unpaged)."""
    return page_request(r.query("limit"), r.query("cursor"), order)


def writer(r: ApiRequest) -> dict:
    """Who writes (the agent's session, None for the user) and the claim token presented in
    `X-Maestro-Claim-Token` (fencing, SPEC §15.3)."""
    raw = r.header(CLAIM_TOKEN_HEADER)
    token = None
    if raw is not None:
        try:
            token = int(raw.decode("latin-1").strip())
        except ValueError:
            raise validation("X-Maestro-Claim-Token must be an integer") from None
    return {"actor": r.identity.session_id if r.identity is not None else None,
            "claim_token": token}


def register_api(router: Router, service: Service, hub: Hub,
                 skills: SkillCatalogue) -> None:
    """The REST API of SPEC §7 and extensions E1, E2, E4, E7 on the lean router."""
    tasks = service.state.tasks
    sessions = service.state.sessions
    projects = service.state.projects

    def one_session(r: ApiRequest, s: dict) -> bytes:
        if r.identity is None:
            return sessions.encode(s)
        # An agent sees it as policy.seen_by shows it (the same as in WebSocket events).
        seen = seen_by(r.identity, s, s.get("projectId"))
        if seen is None:
            raise forbidden(OWN_PROJECT)
        return sessions.encode(s) if seen is s else jsonio.dumps(seen)

    async def health(r: ApiRequest):
        body = service.health()
        body["websocket"] = hub.stats()
        return body

    async def ws_status(r: ApiRequest):
        return hub.status()

    # -- projects
    async def list_projects(r: ApiRequest):
        page = page_of(r)
        if page is not None:
            found, after = service.page_projects(page, r.restrict_project)
            return paged(r, projects.encode_list(found), after, CREATION)
        if r.restrict_project is None:
            return projects.encode_all()
        return projects.encode_list([p for p in service.list_projects()
                                     if p["id"] == r.restrict_project])

    async def create_project(r: ApiRequest):
        return Reply(projects.encode(await service.create_project(await r.json())), 201)

    async def get_project(r: ApiRequest):
        return projects.encode(service.get_project(r.param()))

    async def update_project(r: ApiRequest):
        body = await r.json()
        return projects.encode(await service.update_project(r.param(), body))

    async def delete_project(r: ApiRequest):
        await r.json()
        return await service.delete_project(r.param(), cascade=r.query("cascade") == "true")

    # -- tasks
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

    async def create_task(r: ApiRequest):
        return Reply(tasks.encode(await service.create_task(await r.json())), 201)

    async def get_task(r: ApiRequest):
        return tasks.encode(service.get_task(r.param()))

    async def update_task(r: ApiRequest):
        body = await r.json()
        return tasks.encode(await service.update_task(r.param(), body, **writer(r)))

    async def add_timeline(r: ApiRequest):
        body = await r.json()
        task = await service.add_timeline_event(r.param(), body, **writer(r))
        if wants_minimal(r):
            return minimal_reply(task["timeline"][-1])
        return tasks.encode(task)

    async def delete_task(r: ApiRequest):
        await r.json()
        return await service.delete_task(r.param(), cascade=r.query("cascade") == "true")

    # -- coordination (SPEC §15)
    async def task_readiness(r: ApiRequest):
        return service.task_readiness(r.param())

    async def add_dependency(r: ApiRequest):
        await r.json()
        return tasks.encode(await service.add_dependency(r.param(), r.param("dependsOnId"),
                                                         **writer(r)))

    async def remove_dependency(r: ApiRequest):
        await r.json()
        return tasks.encode(await service.remove_dependency(r.param(), r.param("dependsOnId"),
                                                            **writer(r)))

    async def claim(r: ApiRequest):
        return await service.claim_task(r.param(), await r.json())

    async def claim_next(r: ApiRequest):
        return await service.claim_next(r.param(), await r.json())

    async def renew_claim(r: ApiRequest):
        return await service.renew_claim(r.param(), await r.json())

    async def release_claim(r: ApiRequest):
        return await service.release_claim(r.param(), await r.json())

    async def plan(r: ApiRequest):
        body = await r.json()
        return Reply(await service.create_plan(r.param(), body, **writer(r)), 201)

    async def heartbeat(r: ApiRequest):
        return await service.heartbeat_session(r.param(), await r.json())

    async def task_children(r: ApiRequest):
        page = page_of(r)
        if page is not None:
            found, after = service.page_children(r.param(), page)
            return paged(r, tasks.encode_list(found), after, CREATION)
        return tasks.encode_list(service.task_children(r.param()))

    async def task_history(r: ApiRequest):
        return service.task_history(r.param())

    # -- sessions
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

    async def create_session(r: ApiRequest):
        return Reply(one_session(r, await service.create_session(await r.json())), 201)

    async def get_session(r: ApiRequest):
        return one_session(r, service.get_session(r.param()))

    async def update_session(r: ApiRequest):
        body = await r.json()
        return one_session(r, await service.update_session(r.param(), body))

    async def delete_session(r: ApiRequest):
        await r.json()
        return await service.delete_session(r.param())

    async def add_session_task(r: ApiRequest):
        await r.json()
        return one_session(r, await service.add_task_to_session(r.param(), r.param("taskId")))

    async def remove_session_task(r: ApiRequest):
        await r.json()
        return one_session(r, await service.remove_task_from_session(r.param(),
                                                                      r.param("taskId")))

    async def session_events(r: ApiRequest):
        body = await r.json()
        session = await service.add_session_event(r.param(), body)
        if wants_minimal(r):
            return minimal_reply(session["events"][-1])
        return one_session(r, session)

    async def session_timeline(r: ApiRequest):
        body = await r.json()
        session = await service.add_session_timeline(r.param(), body)
        if wants_minimal(r):
            return minimal_reply(session["timeline"][-1])
        return one_session(r, session)

    async def list_skills(r: ApiRequest):
        return skills.list()

    async def get_skill(r: ApiRequest):
        return skills.get(r.param())

    async def role_skills(r: ApiRequest):
        return skills.for_role(r.param("role"))

    async def reload_skill(r: ApiRequest):
        await r.json()
        return skills.reload(r.param())

    P404 = {404: ("PROJECT_NOT_FOUND",)}
    T404 = {404: ("TASK_NOT_FOUND",)}
    S404 = {404: ("SESSION_NOT_FOUND",)}
    fenced = {404: ("TASK_NOT_FOUND",), 409: ("CLAIM_LOST",)}
    task_changed = ("task:updated",)
    for method, path, handler, doc in [
        ("GET", "/api/skills", list_skills, Op(
            "The skill catalogue of SKILLS_DIR", acts=Act("skill", "list", id=None),
            ok=list[m.Skill])),
        ("GET", "/api/skills/role/{role}", role_skills, Op(
            "The skills of a role (worker, orchestrator)",
            acts=Act("skill", "list", id=None), ok=list[m.Skill])),
        ("GET", "/api/skills/{id}", get_skill, Op(
            "A skill with its instructions", acts=Act("skill", "read"), ok=m.Skill,
            errors={404: ("NOT_FOUND",)})),
        ("POST", "/api/skills/{id}/reload", reload_skill, Op(
            "Read a skill again from disk",
            acts=Act("skill", "reload"), ok=m.Skill, errors={404: ("NOT_FOUND",)})),
        ("GET", "/health", health, Op(
            "Server health", acts=Act("server", "read", id=None), ok=m.Health,
            description="When the server requires a token, a request without any "
                        "`Authorization` header gets only `{\"status\":\"ok\"}` (liveness "
                        "for load balancers); the full report needs the token.")),
        ("GET", "/ws-status", ws_status, Op(
            "Connected WebSocket clients", acts=Act("server", "read", id=None),
            ok=m.WsStatus)),
        ("GET", "/api/projects", list_projects, Op(
            "List projects",
            acts=Act("project", "list", id=None), query=m.PageQuery, ok=list[m.Project], paged=True,
            description="In creation order.")),
        ("POST", "/api/projects", create_project, Op(
            "Create a project",
            acts=Act("project", "create", id=None), body=m.CreateProject, ok=m.Project, status=201,
            events=("project:created",))),
        ("GET", "/api/projects/{id}", get_project, Op(
            "Get a project", acts=Act("project", "read"), ok=m.Project, errors=P404)),
        ("PUT", "/api/projects/{id}", update_project, Op(
            "Update a project (partial)",
            acts=Act("project", "update"), body=m.UpdateProject, ok=m.Project, errors=P404,
            events=("project:updated",))),
        ("DELETE", "/api/projects/{id}", delete_project, Op(
            "Delete a project without tasks or sessions (with cascade=true: with them)",
            acts=Act("project", "delete"), query=m.DeleteProjectQuery, ok=m.ProjectDeleted,
            description="With `cascade=true` the project's sessions (their agents are stopped "
                        "and their tokens die with them) and tasks go with it, in one change; "
                        "`deleted` lists them.",
            errors={400: ("PROJECT_HAS_DEPENDENCIES",), **P404},
            events=("project:deleted", "session:deleted", "task:session_removed",
                    "task:deleted", "task:updated"))),
        ("GET", "/api/tasks", list_tasks, Op(
            "List tasks",
            acts=Act("task", "list", id=None), query=m.TaskListQuery, ok=list[m.Task], paged=True,
            description="Filters combine with AND. In creation order; with `ready=true` or "
                        "`blocked=true` in priority order (high, medium, low), then creation.")),
        ("POST", "/api/tasks", create_task, Op(
            "Create a task",
            acts=Act("task", "create", id=None), body=m.CreateTask, ok=m.Task, status=201,
            errors={404: ("PROJECT_NOT_FOUND", "TASK_NOT_FOUND")}, events=("task:created",))),
        ("GET", "/api/tasks/{id}", get_task, Op(
            "Get a task", acts=Act("task", "read"), ok=m.Task, errors=T404)),
        ("PATCH", "/api/tasks/{id}", update_task, Op(
            "Update a task",
            acts=Act("task", "update"), body=m.UpdateTask, ok=m.Task, claim_token=True,
            errors={400: ("DEPENDENCY_CYCLE",), 404: ("TASK_NOT_FOUND", "SESSION_NOT_FOUND"),
                    409: ("CLAIM_LOST",)}, events=task_changed)),
        ("DELETE", "/api/tasks/{id}", delete_task, Op(
            "Delete a task", acts=Act("task", "delete"), query=m.DeleteTaskQuery, ok=m.Deleted,
            description="Unlinks it from its sessions, drops it from the dependencies of "
                        "other tasks and releases its claim.",
            errors={400: ("TASK_HAS_CHILDREN",), **T404}, events=("task:deleted",))),
        ("POST", "/api/tasks/{id}/timeline", add_timeline, Op(
            "Append to a task's timeline",
            acts=Act("task", "append"), body=m.AddTimeline, ok=m.Task, claim_token=True,
            errors=fenced, events=task_changed)),
        ("GET", "/api/tasks/{id}/children", task_children, Op(
            "Direct children of a task",
            acts=Act("task", "read"), query=m.PageQuery, ok=list[m.Task], paged=True, errors=T404)),
        ("GET", "/api/tasks/{id}/history", task_history, Op(
            "A task's history: its timeline and what its sessions reported about it",
            acts=Act("task", "read"), ok=list[m.HistoryEntry], errors=T404,
            description="The task's timeline merged with the timeline entries of its sessions "
                        "that name it (`maestro report …`), oldest first.")),
        ("GET", "/api/tasks/{id}/readiness", task_readiness, Op(
            "Whether a task is ready, and what holds it back",
            acts=Act("task", "read"), ok=m.Readiness, errors=T404)),
        ("POST", "/api/tasks/{id}/dependencies/{dependsOnId}", add_dependency, Op(
            "Add one dependency (idempotent; refused if it closes a cycle)",
            acts=Act("task", "add_dependency"), ok=m.Task,
            claim_token=True, errors={400: ("DEPENDENCY_CYCLE",), **fenced},
            events=task_changed)),
        ("DELETE", "/api/tasks/{id}/dependencies/{dependsOnId}", remove_dependency, Op(
            "Remove one dependency (idempotent)",
            acts=Act("task", "remove_dependency"), ok=m.Task, claim_token=True, errors=fenced,
            events=task_changed)),
        ("POST", "/api/tasks/{id}/claim", claim, Op(
            "Claim a ready task for a session (a lease with a fencing token)",
            acts=Act("task", "claim"), body=m.ClaimRequest, ok=m.Claimed,
            errors={404: ("TASK_NOT_FOUND", "SESSION_NOT_FOUND"),
                    409: ("TASK_ALREADY_CLAIMED", "TASK_NOT_READY", "SESSION_NOT_ACTIVE")},
            events=("task:claimed", "task:updated"))),
        ("POST", "/api/tasks/{id}/claim/renew", renew_claim, Op(
            "Extend a live lease", acts=Act("task", "renew"), body=m.RenewRequest, ok=m.Renewed,
            errors={404: ("TASK_NOT_FOUND", "SESSION_NOT_FOUND"), 409: ("CLAIM_LOST",)})),
        ("POST", "/api/tasks/{id}/claim/release", release_claim, Op(
            "Give a claim up; the task goes back to pending",
            acts=Act("task", "release"), body=m.ReleaseRequest,
            ok=m.Released, errors={404: ("TASK_NOT_FOUND", "SESSION_NOT_FOUND"),
                                   409: ("CLAIM_LOST",)},
            events=("task:claim_released", "task:updated"))),
        ("POST", "/api/projects/{id}/claim-next", claim_next, Op(
            "Claim the first ready task of a project (task null when nothing is ready)",
            acts=Act("project", "claim"), body=m.ClaimNextRequest, ok=m.Claimed,
            errors={404: ("PROJECT_NOT_FOUND", "SESSION_NOT_FOUND", "TASK_NOT_FOUND"),
                    409: ("SESSION_NOT_ACTIVE",)}, events=("task:claimed", "task:updated"))),
        ("POST", "/api/projects/{id}/plan", plan, Op(
            "Create a whole breakdown at once: tasks named by local refs, their parents and "
            "dependencies",
            acts=Act("project", "plan"), body=m.Plan, ok=m.Planned, status=201, claim_token=True,
            description="`parent` and `dependsOn` name a ref of the plan or an existing task "
                        "of the project; `dependencies` adds dependencies to existing tasks "
                        "(each such write is fenced like a task update). All or nothing: "
                        "refused with `DEPENDENCY_CYCLE` if the result closes a cycle.",
            errors={400: ("DEPENDENCY_CYCLE",), 404: ("PROJECT_NOT_FOUND", "TASK_NOT_FOUND"),
                    409: ("CLAIM_LOST",)}, events=("task:created", "task:updated"))),
        ("POST", "/api/sessions/{id}/heartbeat", heartbeat, Op(
            "Renew every live claim of a session",
            acts=Act("session", "heartbeat"), body=m.HeartbeatRequest, ok=m.Heartbeat,
            errors={**S404, 409: ("SESSION_NOT_ACTIVE",)})),
        ("GET", "/api/sessions", list_sessions, Op(
            "List sessions", acts=Act("session", "list", id=None),
            query=m.SessionListQuery, ok=list[m.Session], paged=True,
            description="Filters combine with AND. In order of `startedAt`.")),
        ("POST", "/api/sessions", create_session, Op(
            "Create a session and link its tasks",
            acts=Act("session", "create", id=None), body=m.CreateSession, ok=m.Session,
            status=201, errors={404: ("PROJECT_NOT_FOUND", "TASK_NOT_FOUND")},
            events=("session:created", "task:session_added", "task:updated"))),
        ("GET", "/api/sessions/{id}", get_session, Op(
            "Get a session", acts=Act("session", "read"), ok=m.Session, errors=S404)),
        ("PATCH", "/api/sessions/{id}", update_session, Op(
            "Update a session", acts=Act("session", "update"), body=m.UpdateSession, ok=m.Session,
            errors={404: ("SESSION_NOT_FOUND", "TASK_NOT_FOUND")},
            events=("session:updated", "session:task_removed", "task:session_removed",
                    "session:task_added", "task:session_added", "task:updated"))),
        ("DELETE", "/api/sessions/{id}", delete_session, Op(
            "Delete a session (unlinks its tasks)",
            acts=Act("session", "delete"), ok=m.Deleted, errors=S404,
            events=("session:deleted", "task:session_removed", "task:updated"))),
        ("POST", "/api/sessions/{id}/tasks/{taskId}", add_session_task, Op(
            "Link a task to a session (idempotent)", acts=Act("session", "link"), ok=m.Session,
            errors={404: ("NOT_FOUND",)},
            events=("session:task_added", "task:session_added", "session:updated",
                    "task:updated"))),
        ("DELETE", "/api/sessions/{id}/tasks/{taskId}", remove_session_task, Op(
            "Unlink a task from a session (idempotent)",
            acts=Act("session", "unlink"), ok=m.Session, errors={404: ("NOT_FOUND",)},
            events=("session:task_removed", "task:session_removed", "session:updated",
                    "task:updated"))),
        ("POST", "/api/sessions/{id}/events", session_events, Op(
            "Append a session event",
            acts=Act("session", "append"), body=m.AddSessionEvent, ok=m.Session, errors=S404,
            events=("session:updated",))),
        ("POST", "/api/sessions/{id}/timeline", session_timeline, Op(
            "Append to a session's timeline (an agent's report)",
            acts=Act("session", "append"), body=m.AddSessionTimeline,
            ok=m.Session, errors=S404, events=("session:updated",))),
    ]:
        router.add(method, path, handler, doc)


def build_routes(service: Service, hub: Hub, settings: Settings) -> list:
    """Starlette routes: dashboard, docs, WebSocket, and routes added by extensions."""

    async def websocket(ws: WebSocket):
        await hub.serve(ws)

    async def index(request: Request):
        page = WEB_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html; charset=utf-8")
        return json_response({"name": "maestro", "health": "/health", "api": "/api",
                              "websocket": "/", "docs": "/docs"})

    document: list[bytes] = []

    async def openapi(request: Request):
        # Built once, from the router's table, on first use (every route is added by then).
        if not document:
            document.append(jsonio.dumps(build_document(request.app.state.router.table)))
        return json_response(document[0])

    swagger = swagger_ui_dir()

    async def docs(request: Request):
        return Response(docs_page(swagger is not None),
                        media_type="text/html; charset=utf-8")

    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        WebSocketRoute("/", websocket),
        WebSocketRoute("/ws", websocket),
        Route("/openapi.json", openapi, methods=["GET", "HEAD"]),
        Route("/docs", docs, methods=["GET", "HEAD"]),
        Mount("/ui", StaticFiles(directory=WEB_DIR, check_dir=False), name="ui"),
    ]
    if swagger is not None:
        routes.append(Mount("/docs/static", StaticFiles(directory=swagger), name="docs"))
    routes.append(WebSocketRoute("/{path:path}", websocket))
    return routes


class _TrailingSlash:
    """`/api/tasks/` is `/api/tasks` (SPEC §3.3)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                scope = dict(scope)
                scope["path"] = path.rstrip("/") or "/"
                raw = scope.get("raw_path")
                if raw:
                    scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


def create_app(settings: Settings, store: Store | None = None, service: Service | None = None):
    """Build the whole application; the service starts and stops with the ASGI lifespan."""
    if service is None:
        if store is None:
            from ..store.files import FileStore
            store = FileStore(settings.data_dir, worker=settings.store_process)
        service = Service(store, EventBus())
    service.max_entry_bytes = settings.max_entry_bytes
    service.claim_min_ttl = settings.claim_min_ttl
    service.claim_sweep_seconds = settings.claim_sweep_seconds
    service.claim_race_delay_ms = settings.claim_race_delay_ms
    hub = Hub(service.bus, settings.ws_queue_limit, settings.ws_lag_seconds,
              fast_paths=settings.fast_paths)
    extensions: list = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        service.committer.on_commit.append(lambda tx: tokens.on_commit(tx.changes()))
        tokens.bind(getattr(service.store, "location", None) or str(settings.data_dir))
        # Before any request: digests of sessions that ended or went away while the server was
        # down (or whose removal a crash undid) are removed.
        await asyncio.to_thread(tokens.sweep)
        for ext in extensions:
            await ext.start()
        try:
            yield
        finally:
            for ext in reversed(extensions):
                await ext.stop()
            await hub.close_all()
            await service.stop()

    async def api_error(request, exc: ApiError):
        return error_response(exc)

    async def storage_error(request, exc: StorageError):
        return json_response({"error": True, "code": "INTERNAL_ERROR", "message": str(exc)}, 500)

    async def http_error(request, exc: HTTPException):
        if exc.status_code in (404, 405):
            return json_response({"error": True, "code": "NOT_FOUND",
                                  "message": "Route not found"}, 404)
        return json_response({"error": True, "code": "INTERNAL_ERROR" if exc.status_code >= 500
                              else "VALIDATION_ERROR", "message": str(exc.detail)},
                             exc.status_code)

    async def crash(request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return json_response({"error": True, "code": "INTERNAL_ERROR", "message": str(exc)}, 500)

    from ..mcp.endpoint import McpEndpoint

    mcp = McpEndpoint(settings.mcp_tools)  # the agents' tools over HTTP (maestro.mcp)
    extensions.append(mcp)
    app = Starlette(
        routes=build_routes(service, hub, settings) + [Route("/mcp", mcp)],
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, StorageError: storage_error,
                            HTTPException: http_error, Exception: crash},
    )
    app.state.service = service
    app.state.hub = hub
    app.state.settings = settings
    app.state.extensions = extensions
    router = Router(app)
    router.fast_paths = settings.fast_paths
    register_api(router, service, hub, SkillCatalogue(settings.skills_dir))
    tokens = TokenRegistry(settings.session_dir, service.state.sessions)
    policy = Policy(service.state)
    hub.alive = tokens.alive
    router.guard = policy.guard  # an agent's request: its route's action rule decides
    from ..spawn.routes import install as install_spawn
    install_spawn(router, service, settings, extensions, tokens=tokens)
    app.state.tokens = tokens
    app.state.policy = policy
    app.state.router = router
    secured = Security(_TrailingSlash(router), settings, token_checker=tokens.identify)
    secured.inner = app
    mcp.app = secured  # tool calls reach the REST routes through every check a request meets
    return secured
