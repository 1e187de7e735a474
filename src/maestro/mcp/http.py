"""The tools over streamable HTTP (loaded by `endpoint.py` on the first request to `/mcp`).

Stateless and JSON-answered: every POST stands alone and is served with the credentials it
carries. A worker session's token sees the worker tools; an orchestrator's token and a
person's (MAESTRO_TOKEN, or none on a loopback server without one) see all of them. Each tool
call goes to the REST routes in-process, through the server's own application (its security
layer and rights checks included), with the request's `Authorization` header."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import httpx
from mcp.server.transport_security import TransportSecuritySettings

from ..server.router import MAX_BODY
from .backend import Api, Caller, Link, MemoryClaimTokens, http_client
from .catalog import tools_for
from .server import build_server

BASE_URL = "http://127.0.0.1"


@dataclass
class RequestLinks:
    """Each call's link from its HTTP request: the identity the security layer found for the
    bearer token, and that same token for the in-process REST calls."""

    client: httpx.AsyncClient
    tokens: MemoryClaimTokens
    tools: tuple[str, ...]

    async def resolve(self, ctx) -> Link:
        request = ctx.request_context.request
        if request is None:
            raise RuntimeError("an HTTP tool call without its request")
        identity = (request.scope.get("state") or {}).get("identity")
        if identity is None:
            caller = Caller(None, None, "person")
        else:
            caller = Caller(identity.session_id, identity.project_id, identity.role)
        auth = request.headers.get("authorization")
        api = Api(self.client, "this server", {"Authorization": auth} if auth else None)
        return Link(api, caller, self.tokens)


class HttpServing:
    """Two MCP servers (the worker tools; all tools), each an ASGI app with its session
    manager, running until `close()`."""

    def __init__(self, servers: dict[bool, tuple]):
        self.servers = servers  # worker? -> (MCP server, its ASGI app)
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.failure: Exception | None = None

    @classmethod
    async def open(cls, app, narrowed: tuple[str, ...]) -> HttpServing:
        client = http_client(BASE_URL, None, transport=httpx.ASGITransport(app=app))
        tokens = MemoryClaimTokens()
        servers = {}
        for worker in (True, False):
            names = tools_for("worker" if worker else "person", narrowed)
            links = RequestLinks(client, tokens, names)
            server = build_server(names, lambda links=links: contextlib.nullcontext(links))
            asgi = server.streamable_http_app(
                streamable_http_path="/mcp", json_response=True, stateless_http=True,
                # Host and Origin are checked by the server's own security layer.
                transport_security=TransportSecuritySettings(
                    enable_dns_rebinding_protection=False),
                max_request_body_size=MAX_BODY)
            servers[worker] = (server, asgi)
        serving = cls(servers)
        ready = asyncio.Event()
        serving._task = asyncio.create_task(serving._run(ready, client), name="maestro-mcp")
        await ready.wait()
        if serving.failure is not None:
            raise serving.failure
        return serving

    async def _run(self, ready: asyncio.Event, client: httpx.AsyncClient) -> None:
        try:
            async with self.servers[True][0].session_manager.run(), \
                    self.servers[False][0].session_manager.run():
                ready.set()
                await self._stop.wait()
        except Exception as exc:  # before ready: `open` raises it; after: logged by the loop
            self.failure = exc
            raise
        finally:
            ready.set()
            await client.aclose()

    async def handle(self, scope, receive, send) -> None:
        identity = (scope.get("state") or {}).get("identity")
        worker = identity is not None and identity.role == "worker"
        await self.servers[worker][1](scope, receive, send)

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


# httpx logs every request at info level: here, every in-process call of every tool.
logging.getLogger("httpx").setLevel(logging.WARNING)
