"""`maestro mcp`: the tools over stdio, for one caller whose identity comes from the
environment like the CLI's (MAESTRO_SERVER_URL, MAESTRO_SESSION_ID, MAESTRO_SESSION_TOKEN or a
person's MAESTRO_TOKEN, MAESTRO_PROJECT_ID; also `.env` and `~/.maestro/config`).

Nothing but the protocol is written to stdout; diagnostics go to stderr."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from mcp.server.mcpserver import MCPServer

from ..cli.context import CliContext
from ..vocabulary import AGENT_ROLES
from .backend import Api, Caller, FileClaimTokens, Link, Refusal, Unreachable, http_client, seg
from .catalog import tools_for
from .server import build_server


@dataclass
class FixedLinks:
    """One caller for the whole process."""

    link: Link
    tools: tuple[str, ...]

    async def resolve(self, ctx) -> Link:
        return self.link


async def identify(api: Api, ctx: CliContext) -> Caller:
    """Who the environment names: a session (its role and project as the server records them,
    else MAESTRO_ROLE and MAESTRO_PROJECT_ID) or, without MAESTRO_SESSION_ID, a person."""
    if not ctx.session:
        return Caller(None, ctx.project, "person")
    role = ctx.role if ctx.role in AGENT_ROLES else "worker"
    project = ctx.project
    try:
        session = await api.get(f"/api/sessions/{seg(ctx.session)}")
    except (Refusal, Unreachable):
        session = None
    if isinstance(session, dict):
        meta = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
        if meta.get("role") in AGENT_ROLES:
            role = meta["role"]
        project = session.get("projectId") or project
    return Caller(ctx.session, project, role)


@contextlib.asynccontextmanager
async def connected(ctx: CliContext, narrowed: tuple[str, ...] = ()) -> AsyncIterator[MCPServer]:
    """The MCP server of the caller `ctx` names, connected to its Maestro server for as long
    as the context lasts."""
    async with http_client(ctx.server, ctx.token) as client:
        api = Api(client, ctx.server)
        caller = await identify(api, ctx)
        names = tools_for(caller.role, narrowed)
        links = FixedLinks(Link(api, caller, FileClaimTokens(ctx)), names)
        yield build_server(names, lambda: contextlib.nullcontext(links))


async def serve(ctx: CliContext, narrowed: tuple[str, ...]) -> None:
    """Serve the tools on stdin/stdout until the client closes them."""
    async with connected(ctx, narrowed) as server:
        await server.run_stdio_async()


def run(ctx: CliContext, narrowed: tuple[str, ...]) -> int:
    anyio.run(serve, ctx, narrowed)
    return 0
