"""How the tools reach Maestro: the REST API, with the caller's own credentials.

`maestro mcp` (stdio) talks HTTP to the server like the CLI does; `/mcp` in the server calls
the same routes in-process (an ASGI transport to the server's own application), forwarding the
caller's `Authorization` header. Either way a tool does nothing a REST client with the same
token could not, and every refusal comes from the service."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from .. import __version__
from ..errors import ApiError

CLAIM_HEADER = "X-Maestro-Claim-Token"
TIMEOUT_SECONDS = 30.0


def seg(value: str) -> str:
    """One URL path segment, percent-encoded."""
    return quote(str(value), safe="")


def iso(ms: Any) -> str | None:
    """Milliseconds since the epoch as `2025-01-01T12:03:00Z` (None for anything else)."""
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Caller:
    """Who calls the tools: a session (worker or orchestrator) of a project, or a person
    (no session; `project_id` only when one is configured)."""

    session_id: str | None
    project_id: str | None
    role: str  # worker | orchestrator | person


class Refusal(ApiError):
    """An error answer of the API, as received: its status and the body of SPEC §6.1 (details
    always an object)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(status, code, message, details if isinstance(details, dict) else {})


class Unreachable(Exception):
    """The request got no answer."""


class Api:
    """The REST API as one caller sees it (JSON in and out)."""

    def __init__(self, client: httpx.AsyncClient, where: str, headers: dict | None = None):
        self.client = client
        self.where = where
        self.headers = headers or {}  # sent with every request (the caller's credentials)

    async def call(self, method: str, path: str, *, params: dict | None = None,
                   body: dict | None = None, headers: dict | None = None) -> Any:
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            response = await self.client.request(method, path, params=query or None,
                                                 json=body, headers={**self.headers,
                                                                     **(headers or {})})
        except httpx.HTTPError as exc:
            raise Unreachable(f"no answer from the Maestro server at {self.where} "
                              f"({type(exc).__name__}: {exc or 'no details'}); is it "
                              "running? `maestro serve` starts it") from None
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = None
        if response.status_code >= 400:
            data = payload if isinstance(payload, dict) else {}
            code = data.get("code") if isinstance(data.get("code"), str) else "HTTP_ERROR"
            message = data.get("message") if isinstance(data.get("message"), str) \
                else f"HTTP {response.status_code}"
            raise Refusal(response.status_code, code, message, data.get("details"))
        if payload is None:
            raise Unreachable(f"the server at {self.where} answered {method} {path} with "
                              "something that is not JSON; is it a Maestro server?")
        return payload

    async def get(self, path: str, params: dict | None = None) -> Any:
        return await self.call("GET", path, params=params)

    async def post(self, path: str, body: dict | None = None, headers: dict | None = None):
        return await self.call("POST", path, body=body or {}, headers=headers)

    async def patch(self, path: str, body: dict, headers: dict | None = None) -> Any:
        return await self.call("PATCH", path, body=body, headers=headers)

    async def delete(self, path: str, headers: dict | None = None) -> Any:
        return await self.call("DELETE", path, headers=headers)


def http_client(base_url: str, token: str | None, transport=None) -> httpx.AsyncClient:
    """An async client for the API at `base_url`, sending `token` as the bearer token.
    Proxies from the environment are ignored, as the CLI does."""
    headers = {"Accept": "application/json", "User-Agent": f"maestro-mcp/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=TIMEOUT_SECONDS,
                             trust_env=False, transport=transport)


class ClaimTokens(Protocol):
    """Where the fencing token of each claim granted to a session is kept (SPEC §15.3)."""

    def get(self, session_id: str, task_id: str) -> int | None: ...

    def keep(self, session_id: str, task_id: str, token: int) -> None: ...

    def forget(self, session_id: str, task_id: str) -> None: ...


class MemoryClaimTokens:
    """Tokens kept in memory (the server's `/mcp`), the most recent few thousand."""

    LIMIT = 10_000

    def __init__(self) -> None:
        self._tokens: OrderedDict[tuple[str, str], int] = OrderedDict()

    def get(self, session_id: str, task_id: str) -> int | None:
        return self._tokens.get((session_id, task_id))

    def keep(self, session_id: str, task_id: str, token: int) -> None:
        self._tokens[(session_id, task_id)] = token
        self._tokens.move_to_end((session_id, task_id))
        while len(self._tokens) > self.LIMIT:
            self._tokens.popitem(last=False)

    def forget(self, session_id: str, task_id: str) -> None:
        self._tokens.pop((session_id, task_id), None)


class FileClaimTokens:
    """Tokens kept where the CLI keeps them (`~/.maestro/claims/<session>.json`), so a claim
    taken through the tools fences the session's `maestro` commands too, and the reverse."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx  # the CLI context: its environment names the home folder

    def get(self, session_id: str, task_id: str) -> int | None:
        from ..cli.claims import kept_tokens

        return kept_tokens(self, session_id).get(task_id)

    def keep(self, session_id: str, task_id: str, token: int) -> None:
        from ..cli.claims import keep_token

        keep_token(self, session_id, task_id, token)

    def forget(self, session_id: str, task_id: str) -> None:
        from ..cli.claims import forget_token

        forget_token(self, session_id, task_id)


@dataclass
class Link:
    """Everything a tool call needs: the API as the caller, who the caller is, and where its
    claim tokens are kept."""

    api: Api
    caller: Caller
    tokens: ClaimTokens


async def gather(*calls):
    """Run API calls at once; the first failure is raised."""
    return await asyncio.gather(*calls)
