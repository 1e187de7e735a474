"""Helpers of the MCP tests: sessions with their own tokens, and MCP clients for a caller named
by environment variables (the SDK's in-memory client on the server `maestro mcp` builds, or its
streamable-HTTP client on the server's `/mcp`)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from test_agent_identity import Events

from maestro.cli.context import Environment, Overrides, resolve
from maestro.mcp.catalog import parse_tools
from maestro.mcp.stdio import connected


def spawn_with_token(user: httpx.Client, listener: Events, project_id: str,
                     task_ids: list[str], role: str = "worker") -> tuple[str, str]:
    """Spawn a session (the `ui` launcher starts nothing) and read its token from the spawn
    request, as a desktop UI would; returns (session id, token)."""
    answer = user.post("/api/sessions/spawn", json={"projectId": project_id, "taskIds": task_ids,
                                                    "role": role})
    assert answer.status_code == 201, answer.text
    sid = answer.json()["sessionId"]
    request, _ = listener.until(lambda e: e["type"] == "session:spawn_request"
                                and e["data"]["session"]["id"] == sid)
    return sid, request["data"]["envVars"]["MAESTRO_SESSION_TOKEN"]


@contextlib.asynccontextmanager
async def local_client(home: Path, env: dict[str, str], tools: str | None = None):
    """An in-memory MCP client on the server `maestro mcp --tools <tools>` would serve for
    `env` (its claim tokens kept under `home`, as the CLI keeps them)."""
    home.mkdir(parents=True, exist_ok=True)
    ctx = resolve(Overrides(), Environment(environ={"HOME": str(home), **env}, cwd=home,
                                           home=home))
    narrowed, problems = parse_tools(tools)
    assert not problems
    async with connected(ctx, narrowed) as server, Client(server) as client:
        yield client


@contextlib.asynccontextmanager
async def http_client_mcp(url: str, token: str | None):
    """The SDK's streamable-HTTP client on `url` (`…/mcp`), with a bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http, \
            Client(streamable_http_client(url, http_client=http)) as client:
        yield client


async def call(client: Client, name: str, /, **arguments) -> dict:
    """Call a tool that must succeed; returns its structured content (checked against the text
    content, which carries the same JSON)."""
    result = await client.call_tool(name, arguments)
    assert not result.is_error, f"{name}: {result.content[0].text}"
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


async def refused(client: Client, name: str, /, **arguments) -> str:
    """Call a tool that must be refused; returns the error text."""
    result = await client.call_tool(name, arguments)
    assert result.is_error, f"{name} was not refused: {result.structured_content}"
    return result.content[0].text


async def tool_names(client: Client) -> list[str]:
    return [t.name for t in (await client.list_tools()).tools]
