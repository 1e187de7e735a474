"""The ASGI application: REST routes (SPEC §7, §11), the WebSocket stream and the dashboard on one
port, assembled here; the REST routes themselves are declared in `routes/` (and by spawn/ and
workspace/), where they only parse, call one service operation and render."""

from __future__ import annotations

import asyncio
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
from ..errors import ApiError, StorageError
from ..events import EventBus
from ..identity import TokenRegistry
from ..policy import Policy
from ..service import Service
from ..skills import SkillCatalogue
from ..store.base import Store
from .openapi import build_document, docs_page, swagger_ui_dir
from .router import Router
from .routes import install as install_api
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


def shared_with_replicas(service: Service, settings: Settings, tokens: TokenRegistry):
    """On PostgreSQL, what all servers of the database share: the agents' token digests move
    to the database and this server joins the replicas (its heartbeat, the takeover of gone
    ones); returns the Replica, or None on a store that is this server's alone."""
    store = service.store
    if getattr(store, "name", "") != "postgres":
        return None
    from ..replicas import Replica
    from ..store.pg_side import SideConnection
    from ..token_stores import PostgresTokenStore

    tokens.use(PostgresTokenStore(SideConnection(store.dsn, store.schema, "tokens")))
    return Replica(service, SideConnection(store.dsn, store.schema, "replica"),
                   settings.replica_id, settings.replica_url, settings.replica_heartbeat_seconds,
                   settings.replica_timeout_seconds)


def write_lead(service: Service, settings: Settings):
    """This replica's part in forwarding changes to the replica that leads the writes."""
    from ..store.pg_side import SideConnection
    from ..write_lead import WriteLead, advertised_host

    store = service.store
    return WriteLead(service, SideConnection(store.dsn, store.schema, "write lead"),
                     settings.replica_id, settings.host, advertised_host(settings.replica_url),
                     settings.write_lead_port, mode=settings.forward_writes)


def create_app(settings: Settings, store: Store | None = None, service: Service | None = None):
    """Build the whole application; the service starts and stops with the ASGI lifespan."""
    if service is None:
        if store is None:
            from ..store.files import FileStore
            store = FileStore(settings.data_dir, worker=settings.store_process,
                              checkpoint_bytes=settings.checkpoint_bytes,
                              pipeline_min_ops=settings.pipeline_min_ops)
        service = Service(store, EventBus())
    service.max_entry_bytes = settings.max_entry_bytes
    service.claim_min_ttl = settings.claim_min_ttl
    service.claim_sweep_seconds = settings.claim_sweep_seconds
    service.claim_race_delay_ms = settings.claim_race_delay_ms
    service.log_poll_seconds = settings.log_poll_seconds
    service.replay_events = settings.ws_replay_events
    if hasattr(service.store, "log_retention"):
        service.store.log_retention = settings.log_retention
    hub = Hub(service.bus, settings.ws_queue_limit, settings.ws_lag_seconds,
              fast_paths=settings.fast_paths, replay=settings.ws_replay_events)
    extensions: list = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        # (no await before this: nothing was published yet)
        hub.seed(service.history)
        service.history = []
        service.committer.on_commit.append(lambda tx: tokens.on_commit(tx.changes()))
        tokens.bind(getattr(service.store, "location", None) or str(settings.data_dir))
        replica = await asyncio.to_thread(shared_with_replicas, service, settings, tokens)
        # Before any request: digests of sessions that ended or went away while the server was
        # down (or whose removal a crash undid) are removed.
        await asyncio.to_thread(tokens.sweep)
        if replica is not None:
            await replica.start()  # before the launcher looks at its agents
            service.health_sections["replica"] = replica.health
            # Stop and output requests for other replicas' agents are forwarded to them.
            launcher.forwarder.replica = replica
            if settings.forward_writes != "off" and service.follower is not None:
                service.write_lead = write_lead(service, settings)
                await service.write_lead.start()
                service.health_sections["writeLead"] = service.write_lead.status
        for ext in extensions:
            await ext.start()
        try:
            yield
        finally:
            for ext in reversed(extensions):
                await ext.stop()
            if service.write_lead is not None:
                lead, service.write_lead = service.write_lead, None
                await lead.stop()
            if replica is not None:
                await replica.stop()
            await asyncio.to_thread(tokens.store.close)
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
    install_api(router, service, hub, SkillCatalogue(settings.skills_dir))
    tokens = TokenRegistry(settings.session_dir, service.state.sessions)
    policy = Policy(service.state)
    hub.alive = tokens.alive
    router.guard = policy.guard  # an agent's request: its route's action rule decides
    from ..spawn.routes import install as install_spawn
    launcher = install_spawn(router, service, settings, extensions, tokens=tokens)
    app.state.tokens = tokens
    app.state.policy = policy
    app.state.router = router
    secured = Security(_TrailingSlash(router), settings, token_checker=tokens.identify)

    async def catch_up() -> None:
        if service.follower is not None:
            await service.follower.catch_up()

    if settings.database_type == "postgres":
        secured.awaits_session, secured.catch_up = tokens.awaits_session, catch_up
    secured.inner = app
    mcp.app = secured  # tool calls reach the REST routes through every check a request meets
    return secured
