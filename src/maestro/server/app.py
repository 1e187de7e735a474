"""The ASGI application: REST routes (SPEC §7, §11), the WebSocket stream and the dashboard on one
port. Routes only parse, call one service method and render; the rules live in the service."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

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
from ..service import Service
from ..store.base import Store
from .security import Security
from .websocket import Hub

log = logging.getLogger("maestro.http")

MAX_BODY = 1024 * 1024
JSON_TYPE = "application/json; charset=utf-8"
WEB_DIR = Path(__file__).parent / "web"


def json_response(content, status: int = 200) -> Response:
    body = content if isinstance(content, (bytes, bytearray)) else jsonio.dumps(content)
    return Response(body, status_code=status, media_type=JSON_TYPE)


def error_response(exc: ApiError) -> Response:
    return json_response(exc.body(), exc.status)


async def read_json(request: Request) -> dict:
    """The request body as a JSON object (SPEC §3.3): empty body = {}, 415 for other content
    types, 400 for malformed JSON or a non-object, 413 beyond 1 MiB."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            if int(length) > MAX_BODY:
                raise ApiError(413, "VALIDATION_ERROR", "Request body too large (limit 1 MiB)")
        except ValueError:
            raise validation("Invalid Content-Length") from None
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, "VALIDATION_ERROR", "Request body too large (limit 1 MiB)")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        return {}
    ctype = request.headers.get("content-type", "")
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise ApiError(415, "VALIDATION_ERROR", "Content-Type must be application/json")
    try:
        value = jsonio.loads(body)
    except ValueError:
        raise validation("Invalid JSON body") from None
    if not isinstance(value, dict):
        raise validation("Request body must be a JSON object")
    return value


def _query(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value or None  # a parameter present with an empty value is ignored


def _id(request: Request, name: str = "id") -> str:
    value = request.path_params[name]
    if len(value) > 128:
        raise validation(f"{name} must be at most 128 characters")
    return value


def build_routes(service: Service, hub: Hub, settings: Settings) -> list:
    tasks = service.state.tasks
    sessions = service.state.sessions
    projects = service.state.projects

    async def health(request: Request):
        return json_response(service.health())

    async def ws_status(request: Request):
        return json_response(hub.status())

    # -- projects
    async def list_projects(request: Request):
        return json_response(projects.encode_list(service.list_projects()))

    async def create_project(request: Request):
        body = await read_json(request)
        return json_response(projects.encode(await service.create_project(body)), 201)

    async def get_project(request: Request):
        return json_response(projects.encode(service.get_project(_id(request))))

    async def update_project(request: Request):
        body = await read_json(request)
        return json_response(projects.encode(await service.update_project(_id(request), body)))

    async def delete_project(request: Request):
        await read_json(request)
        return json_response(await service.delete_project(_id(request)))

    # -- tasks
    async def list_tasks(request: Request):
        found = service.list_tasks(_query(request, "projectId"), _query(request, "status"),
                                   _query(request, "parentId"))
        return json_response(tasks.encode_list(found))

    async def create_task(request: Request):
        body = await read_json(request)
        return json_response(tasks.encode(await service.create_task(body)), 201)

    async def get_task(request: Request):
        return json_response(tasks.encode(service.get_task(_id(request))))

    async def update_task(request: Request):
        body = await read_json(request)
        return json_response(tasks.encode(await service.update_task(_id(request), body)))

    async def add_timeline(request: Request):
        body = await read_json(request)
        return json_response(tasks.encode(await service.add_timeline_event(_id(request), body)))

    async def delete_task(request: Request):
        await read_json(request)
        return json_response(await service.delete_task(_id(request)))

    async def task_children(request: Request):
        return json_response(tasks.encode_list(service.task_children(_id(request))))

    # -- sessions
    async def list_sessions(request: Request):
        found = service.list_sessions(_query(request, "projectId"), _query(request, "taskId"),
                                      _query(request, "status"), _query(request, "active"))
        return json_response(sessions.encode_list(found))

    async def create_session(request: Request):
        body = await read_json(request)
        return json_response(sessions.encode(await service.create_session(body)), 201)

    async def get_session(request: Request):
        return json_response(sessions.encode(service.get_session(_id(request))))

    async def update_session(request: Request):
        body = await read_json(request)
        return json_response(sessions.encode(await service.update_session(_id(request), body)))

    async def delete_session(request: Request):
        await read_json(request)
        return json_response(await service.delete_session(_id(request)))

    async def add_session_task(request: Request):
        await read_json(request)
        s = await service.add_task_to_session(_id(request), _id(request, "taskId"))
        return json_response(sessions.encode(s))

    async def remove_session_task(request: Request):
        await read_json(request)
        s = await service.remove_task_from_session(_id(request), _id(request, "taskId"))
        return json_response(sessions.encode(s))

    async def session_events(request: Request):
        body = await read_json(request)
        return json_response(sessions.encode(await service.add_session_event(_id(request),
                                                                             body)))

    async def session_timeline(request: Request):
        body = await read_json(request)
        return json_response(sessions.encode(await service.add_session_timeline(_id(request),
                                                                                body)))

    async def websocket(ws: WebSocket):
        await hub.serve(ws)

    async def index(request: Request):
        page = WEB_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html; charset=utf-8")
        return json_response({"name": "maestro", "health": "/health", "api": "/api",
                              "websocket": "/", "docs": "/docs"})

    from .openapi import docs_page, openapi_document

    async def openapi(request: Request):
        return json_response(openapi_document())

    async def docs(request: Request):
        return Response(docs_page(), media_type="text/html; charset=utf-8")

    return [
        Route("/", index, methods=["GET", "HEAD"]),
        WebSocketRoute("/", websocket),
        WebSocketRoute("/ws", websocket),
        Route("/health", health, methods=["GET"]),
        Route("/ws-status", ws_status, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/api/projects", list_projects, methods=["GET"]),
        Route("/api/projects", create_project, methods=["POST"]),
        Route("/api/projects/{id}", get_project, methods=["GET"]),
        Route("/api/projects/{id}", update_project, methods=["PUT"]),
        Route("/api/projects/{id}", delete_project, methods=["DELETE"]),
        Route("/api/tasks", list_tasks, methods=["GET"]),
        Route("/api/tasks", create_task, methods=["POST"]),
        Route("/api/tasks/{id}", get_task, methods=["GET"]),
        Route("/api/tasks/{id}", update_task, methods=["PATCH"]),
        Route("/api/tasks/{id}", delete_task, methods=["DELETE"]),
        Route("/api/tasks/{id}/timeline", add_timeline, methods=["POST"]),
        Route("/api/tasks/{id}/children", task_children, methods=["GET"]),
        Route("/api/sessions", list_sessions, methods=["GET"]),
        Route("/api/sessions", create_session, methods=["POST"]),
        Route("/api/sessions/{id}", get_session, methods=["GET"]),
        Route("/api/sessions/{id}", update_session, methods=["PATCH"]),
        Route("/api/sessions/{id}", delete_session, methods=["DELETE"]),
        Route("/api/sessions/{id}/tasks/{taskId}", add_session_task, methods=["POST"]),
        Route("/api/sessions/{id}/tasks/{taskId}", remove_session_task, methods=["DELETE"]),
        Route("/api/sessions/{id}/events", session_events, methods=["POST"]),
        Route("/api/sessions/{id}/timeline", session_timeline, methods=["POST"]),
        Mount("/ui", StaticFiles(directory=WEB_DIR, check_dir=False), name="ui"),
        WebSocketRoute("/{path:path}", websocket),
    ]


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
                scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


def create_app(settings: Settings, store: Store | None = None, service: Service | None = None):
    """Build the whole application; the service starts and stops with the ASGI lifespan."""
    if service is None:
        if store is None:
            from ..store.files import FileStore
            store = FileStore(settings.data_dir)
        service = Service(store, EventBus())
    hub = Hub(service.bus)
    extensions: list = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
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

    app = Starlette(
        routes=build_routes(service, hub, settings),
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, StorageError: storage_error,
                            HTTPException: http_error, Exception: crash},
    )
    app.state.service = service
    app.state.hub = hub
    app.state.settings = settings
    app.state.extensions = extensions
    secured = Security(_TrailingSlash(app), settings)
    secured.inner = app
    return secured
