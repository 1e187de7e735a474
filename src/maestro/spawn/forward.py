"""Stop and output requests for an agent another replica launched (README "Run several
replicas").

An agent runs on the machine of the replica that launched it (`metadata.replica`), and only
that replica can signal it or read its output. Any other replica forwards
`POST /api/sessions/:id/stop` and `GET /api/sessions/:id/log` to it, once: to the `url` that
replica records in `maestro_replicas` (its MAESTRO_REPLICA_URL), when its heartbeat is within
MAESTRO_REPLICA_TIMEOUT_SECONDS and nobody took it over. The forwarded request keeps the method,
path, query, body and the caller's own `Authorization` header, so the owner checks the caller's
rights exactly as if the caller had asked it; it carries `X-Maestro-Forwarded-By: <replica id>`,
and a request carrying that header is never forwarded again. The owner's answer (status, body,
content type) is returned as it is.

When the owner is gone, cannot be reached, or the request was already forwarded, the answer is
409 `SESSION_NOT_LAUNCHED` naming the owner and why (`details.reason`: `gone`, `unreachable`,
`forwarded`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from .. import jsonio
from ..errors import ApiError
from ..server.router import ApiRequest, Reply

log = logging.getLogger("maestro.forward")

HEADER = "X-Maestro-Forwarded-By"
_HEADER_KEY = HEADER.lower().encode()
STOP_TIMEOUT = 5.0  # seconds for the whole forwarded stop
LOG_TIMEOUT = 15.0  # seconds for the whole forwarded log read (up to a few MiB)
CONNECT_TIMEOUT = 2.0
# The local log endpoint answers at most about 8 MiB of output (processes.MAX_TAIL_BYTES), which
# JSON may make larger; an owner's answer beyond this is refused rather than held in memory.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
_PASSED_HEADERS = (b"authorization", b"content-type", b"accept")


def owner_of(session: dict, replica_id: str) -> str | None:
    """The replica whose launcher started `session`'s agent, when that is not `replica_id`."""
    metadata = session.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("launchedBy") != "local":
        return None
    owner = metadata.get("replica")
    return owner if isinstance(owner, str) and owner and owner != replica_id else None


def not_launched(session_id: str, owner: str, reason: str, message: str) -> ApiError:
    return ApiError(409, "SESSION_NOT_LAUNCHED", message,
                    {"sessionId": session_id, "replica": owner, "reason": reason})


class Forwarder:
    """Forwards a request about another replica's agent to that replica (module docstring).
    `replica` (replicas.Replica) is set once the server has joined the replicas; until then,
    and on a store that is this server's alone, nothing is forwarded."""

    def __init__(self, replica_id: str):
        self.replica_id = replica_id
        self.replica = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env=False: no proxy from the environment between replicas.
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        return self._client

    async def forward(self, r: ApiRequest, session: dict, timeout: float,
                      body: dict | None = None) -> Reply | ApiError | None:
        """The owner's answer to `r` when `session`'s agent is another replica's; an ApiError
        (to raise, or to answer after trying what this server has) when that replica cannot
        answer; None when the session is this server's to answer."""
        owner = owner_of(session, self.replica_id)
        if owner is None or self.replica is None:
            return None
        sid = session["id"]
        by = r.header(_HEADER_KEY)
        if by is not None:
            return not_launched(
                sid, owner, "forwarded",
                f"Session {sid} was launched by replica {owner}, not by this server "
                f"({self.replica_id}); the request was already forwarded by "
                f"{by.decode('latin-1')[:200]} and is not forwarded again")
        try:
            peer = await self.replica.peer(owner)
        except Exception as exc:  # noqa: BLE001 - the database did not answer
            return not_launched(
                sid, owner, "unreachable",
                f"Session {sid} was launched by replica {owner}; the database could not say "
                f"where that replica is: {_short(exc)}")
        if peer is None or not peer["alive"]:
            return not_launched(sid, owner, "gone",
                                f"Session {sid} was launched by replica {owner}, which is gone "
                                f"({_why_gone(peer, self.replica.timeout_seconds)})")
        if not peer["url"]:
            return not_launched(sid, owner, "unreachable",
                                f"Session {sid} was launched by replica {owner}, which records "
                                "no address (MAESTRO_REPLICA_URL)")
        return await self._send(r, sid, owner, peer["url"], timeout, body)

    async def _send(self, r: ApiRequest, sid: str, owner: str, base: str, timeout: float,
                    body: dict | None) -> Reply | ApiError:
        path = r.scope.get("raw_path") or r.path.encode()
        query = r.scope.get("query_string") or b""
        url = base + path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        headers = {key.decode("latin-1"): value.decode("latin-1")
                   for key, value in r.scope["headers"] if key in _PASSED_HEADERS}
        headers[HEADER] = self.replica_id
        content = b""
        if body:
            content = jsonio.dumps(body)
            headers["content-type"] = "application/json"
        else:
            headers.pop("content-type", None)
        # HEAD is asked as GET: the owner's length stands, the router drops the body.
        method = "GET" if r.method == "HEAD" else r.method
        try:
            async with asyncio.timeout(timeout):  # the whole exchange, not each read
                chunks, status, content_type = await self._exchange(method, url, headers,
                                                                    content, timeout)
        except (httpx.HTTPError, TimeoutError) as exc:
            why = f"no answer within {timeout:g} s" if isinstance(
                exc, (TimeoutError, httpx.TimeoutException)) else _short(exc)
            log.warning("session %s: replica %s at %s did not answer %s %s: %s", sid, owner,
                        base, method, r.path, why)
            return not_launched(sid, owner, "unreachable",
                                f"Session {sid} was launched by replica {owner}, which could "
                                f"not be reached at {base}: {why}")
        if chunks is None:
            return not_launched(sid, owner, "unreachable",
                                f"Session {sid} was launched by replica {owner}, whose answer "
                                f"exceeded {MAX_ANSWER_BYTES} bytes")
        log.debug("session %s: %s %s answered %d by replica %s", sid, method, r.path, status,
                  owner)
        return Reply(b"".join(chunks), status,
                     content_type=content_type.encode("latin-1") if content_type else None)

    async def _exchange(self, method: str, url: str, headers: dict[str, str], content: bytes,
                        timeout: float) -> tuple[list[bytes] | None, int, str | None]:
        """One request to the owner: its body's pieces (None: too large), status and content
        type."""
        async with self._http().stream(
                method, url, headers=headers, content=content,
                timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout))) as answer:
            chunks: list[bytes] = []
            size = 0
            async for chunk in answer.aiter_bytes():
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    return None, answer.status_code, None
                chunks.append(chunk)
            return chunks, answer.status_code, answer.headers.get("content-type")


def _why_gone(peer: dict[str, Any] | None, timeout: float) -> str:
    if peer is None:
        return "it has no heartbeat on record"
    if peer.get("takenOverBy"):
        return f"taken over by {peer['takenOverBy']}"
    age = peer.get("heartbeatAgeSeconds")
    return f"no heartbeat for {age:.0f} s, more than {timeout:g} s" if age is not None \
        else "no heartbeat on record"


def _short(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
