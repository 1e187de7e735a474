"""`/mcp` on the server: the tools over streamable HTTP, on the server's own port and behind
its security layer (Host and Origin checks, tokens).

The MCP machinery is loaded on the first request to `/mcp` (in a thread, so requests keep
being answered meanwhile), never at start-up: a server whose `/mcp` nobody uses pays nothing
for it, and REST requests never pass through it."""

from __future__ import annotations

import asyncio
import importlib
import logging

from .. import jsonio

log = logging.getLogger("maestro.mcp")


class McpEndpoint:
    """The ASGI app at `/mcp`, and an extension of the server (started and stopped with it).
    `app` is the server's whole application, set once it is built: tool calls go through it
    with the caller's own credentials."""

    def __init__(self, tools: tuple[str, ...] = ()):
        self.tools = tools  # MAESTRO_MCP_TOOLS
        self.app = None
        self._serving = None
        self._lock: asyncio.Lock | None = None

    async def start(self) -> None:
        self._lock = asyncio.Lock()

    async def stop(self) -> None:
        if self._serving is not None:
            await self._serving.close()
            self._serving = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        serving = self._serving or await self._boot()
        if serving is None:
            body = jsonio.dumps({"error": True, "code": "INTERNAL_ERROR",
                                 "message": "The MCP endpoint could not start; the server "
                                            "log says why"})
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await serving.handle(scope, receive, send)

    async def _boot(self):
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._serving is None:
                try:
                    module = await asyncio.to_thread(importlib.import_module,
                                                     "maestro.mcp.http")
                    self._serving = await module.HttpServing.open(self.app, self.tools)
                except Exception:
                    log.exception("the MCP endpoint could not start")
                    return None
                log.info("MCP endpoint ready at /mcp")
            return self._serving
