"""The MCP server of a set of tools (SDK `MCPServer`), for one way of resolving callers.

The server's lifespan yields a `Links` object; each tool call asks it for the caller's `Link`
(the API with the caller's credentials, who the caller is, where its claim tokens live): fixed
for `maestro mcp`, built from each HTTP request's bearer token at `/mcp`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations

from .. import __version__
from .backend import Link
from .catalog import SERVER_NAME
from .models import compact_schema
from .tools import TOOLS

READ_ONLY = {"session_context", "task_ready", "task_get", "task_list", "session_list"}

INSTRUCTIONS = (
    "Maestro coordinates a team of agents. Start with session_context. Take work with "
    "task_claim (the next ready task, or a given one); report with task_report (progress, "
    "blocked, needs_input; completed finishes the task and hands your summary to the tasks "
    "waiting for it); task_release gives a task back; task_create records follow-up work. "
    "A refused call says why and what to do next.")


class Links(Protocol):
    """What a server's lifespan yields: the tools it shows and each call's link."""

    tools: tuple[str, ...]

    async def resolve(self, ctx: Any) -> Link: ...


def _description(fn: Callable) -> str:
    return " ".join((fn.__doc__ or "").split())


def build_tools(names: tuple[str, ...]) -> list[Tool]:
    """The SDK tool records of `names`, with compact schemas (no generated titles)."""
    out = []
    for name in names:
        fn = TOOLS[name]
        record = Tool.from_function(
            fn, name=name, description=_description(fn),
            annotations=ToolAnnotations(read_only_hint=True) if name in READ_ONLY else None)
        record.parameters = compact_schema(record.parameters)
        if record.fn_metadata.output_schema is not None:
            record.fn_metadata.output_schema = compact_schema(record.fn_metadata.output_schema)
        out.append(record)
    return out


def build_server(names: tuple[str, ...],
                 links: Callable[[], contextlib.AbstractAsyncContextManager[Links]]) -> MCPServer:
    """An MCP server showing the tools `names`; `links()` is entered for its lifetime."""

    @contextlib.asynccontextmanager
    async def lifespan(_server: MCPServer):
        async with links() as resolver:
            yield resolver

    server = MCPServer(SERVER_NAME, title="Maestro", instructions=INSTRUCTIONS,
                       version=__version__, tools=build_tools(names), lifespan=lifespan,
                       log_level="WARNING")
    # The SDK logs every refused call at info level; a refusal is an answer, not an event.
    logging.getLogger("mcp").setLevel(logging.WARNING)
    return server
