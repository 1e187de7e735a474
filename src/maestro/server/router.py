"""A lean ASGI router for the REST API.

The API's hot path is tiny (a dict lookup and cached bytes for a GET), so per-request framework
machinery would dominate its cost. This router matches `(method, path)` against literal segments
and `{param}` segments, hands the handler a small request object and writes the response in two
ASGI messages. Anything it does not know goes to the fallback app (Starlette: dashboard files,
docs, WebSocket, routes added by extensions)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

from .. import jsonio
from ..errors import ApiError, StorageError, validation
from ..ids import MAX_ID_LENGTH
from ..policy import NOT_FOR_AGENTS, Bound, bind, forbidden
from . import _fast

log = logging.getLogger("maestro.http")

MAX_BODY = 1024 * 1024
_JSON_HEADERS = b"application/json; charset=utf-8"


class ApiRequest:
    __slots__ = ("scope", "receive", "method", "path", "params", "_query", "state", "_body",
                 "restrict_project", "doc")

    def __init__(self, scope, receive, params: dict[str, str], doc=None):
        self.scope = scope
        self.receive = receive
        self.method = scope["method"]
        self.path = scope["path"]
        self.params = params
        self._query: dict[str, str] | None = None
        self.state = scope.get("state") or {}
        self._body: dict | None = None
        # Set by the policy for agents: lists show only this project.
        self.restrict_project: str | None = None
        # The route's declaration (openapi.Op): the body and query parameters it may read.
        self.doc = doc

    @property
    def identity(self):
        """Who is asking: None for full rights, else the agent identity set by security."""
        return self.state.get("identity")

    def query(self, name: str) -> str | None:
        """A query parameter; present-but-empty counts as absent (SPEC §3.3). Only the
        parameters the route declares can be read (so /openapi.json lists them all)."""
        if self.doc is not None and name not in self.doc.query_names:
            raise RuntimeError(f"query parameter {name!r} is not declared for this route")
        if self._query is None:
            qs = self.scope.get("query_string", b"")
            self._query = dict(parse_qsl(qs.decode("latin-1"))) if qs else {}
        return self._query.get(name) or None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.scope["headers"]:
            if key == name:
                return value
        return None

    def param(self, name: str = "id") -> str:
        value = self.params[name]
        if len(value) > MAX_ID_LENGTH:
            raise validation(f"{name} must be at most {MAX_ID_LENGTH} characters")
        return value

    async def json(self) -> dict:
        """The body as a JSON object (SPEC §3.3): empty = {}, 415 for another content type, 400
        for malformed JSON or a non-object, 413 beyond 1 MiB. A route declared without a body
        checks it the same way and gets {} (it never reads what it does not document)."""
        body = await self.raw_json()
        if self.doc is not None and self.doc.body is None:
            return {}
        return body

    async def raw_json(self) -> dict:
        """The body as sent, whatever the route declares (for the rights checks)."""
        if self._body is None:
            self._body = await self._read_json()
        return self._body

    async def _read_json(self) -> dict:
        length = self.header(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > MAX_BODY
            except ValueError:
                raise validation("Invalid Content-Length") from None
            if too_big:
                raise ApiError(413, "VALIDATION_ERROR", "Request body too large (limit 1 MiB)")
        chunks = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ApiError(400, "VALIDATION_ERROR", "Client disconnected")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > MAX_BODY:
                    raise ApiError(413, "VALIDATION_ERROR", "Request body too large (limit 1 MiB)")
                chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if body.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark, as some editors write
            body = body[3:]
        if not body or not body.strip():
            return {}
        ctype = self.header(b"content-type") or b""
        if ctype.split(b";", 1)[0].strip().lower() != b"application/json":
            raise ApiError(415, "VALIDATION_ERROR", "Content-Type must be application/json")
        try:
            value = jsonio.loads(body)
        except ValueError:
            raise validation("Invalid JSON body") from None
        if not isinstance(value, dict):
            raise validation("Request body must be a JSON object")
        return value


Handler = Callable[[ApiRequest], Awaitable[Any]]


async def _refuse_agents(request: ApiRequest, bound: Bound) -> None:
    raise forbidden(NOT_FOR_AGENTS)


class Reply:
    """A handler result with a status other than 200, extra headers (`(name, value)` byte
    pairs, names in lower case) or, for a body of bytes, another content type than JSON."""

    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(self, body: Any, status: int = 200,
                 headers: list[tuple[bytes, bytes]] | None = None,
                 content_type: bytes | None = None):
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type


class Router:
    # Whole responses written to uvicorn's connection in one write (_fast.py); False: the
    # standard ASGI messages (MAESTRO_FAST_PATHS=0).
    fast_paths = True

    def __init__(self, fallback):
        self.fallback = fallback
        # segment count -> list of (method, literals, names, handler, doc, bound rule)
        self._routes: dict[int, list[tuple[str, tuple, tuple, Handler, Any, Bound]]] = {}
        # (method, template, doc) in the order added: what /openapi.json documents.
        self.table: list[tuple[str, str, Any]] = []
        # async guard(request, bound rule) run before the handler for agent identities; until
        # one is set, agents are refused everything.
        self.guard = _refuse_agents

    def add(self, method: str, template: str, handler: Handler, doc) -> None:
        """Route `method template` to `handler`; `doc` is its declaration (openapi.Op). A
        route whose declared action (`doc.acts`) has no rule in policy.py, or names its entity
        by a parameter the path lacks, is refused (ValueError): no route goes unguarded."""
        parts = tuple(template.strip("/").split("/")) if template != "/" else ()
        literals = tuple(None if p.startswith("{") else p for p in parts)
        names = tuple(p[1:-1] if p.startswith("{") else None for p in parts)
        try:
            bound = bind(getattr(doc, "acts", None))
        except ValueError as exc:
            raise ValueError(f"{method} {template}: {exc}") from None
        if bound.act.id is not None and bound.act.id not in names:
            raise ValueError(f"{method} {template}: the action {bound.act.name} names its "
                             f"entity by {{{bound.act.id}}}, which the path lacks")
        self._routes.setdefault(len(parts), []).append((method, literals, names, handler,
                                                         doc, bound))
        self.table.append((method, template, doc))
        # Literal routes first so /api/sessions/spawn wins over /api/sessions/{id}.
        self._routes[len(parts)].sort(key=lambda r: sum(x is None for x in r[1]))

    def route(self, method: str, template: str, doc) -> Callable[[Handler], Handler]:
        """`add` as a decorator, so a route's declaration sits on top of its handler."""
        def declare(handler: Handler) -> Handler:
            self.add(method, template, handler, doc)
            return handler
        return declare

    def match(self, method: str, path: str, raw_path: bytes | None = None):
        if raw_path is not None and b"%" in raw_path:
            # Split before decoding, so an encoded "/" inside an id stays inside that id.
            raw = raw_path.decode("latin-1").strip("/")
            parts = [unquote(p) for p in raw.split("/")] if raw else []
        else:
            parts = path.strip("/").split("/") if path != "/" else []
        candidates = self._routes.get(len(parts))
        if not candidates:
            return None, False
        path_known = False
        for m, literals, names, handler, doc, bound in candidates:
            ok = True
            for lit, part in zip(literals, parts):
                if lit is not None and lit != part:
                    ok = False
                    break
            if not ok:
                continue
            path_known = True
            if m != method:
                continue
            params = {n: p for n, p in zip(names, parts) if n is not None}
            return (handler, params, doc, bound), True
        return None, path_known

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "websocket" and self.fast_paths:
                # The server's own send, before any middleware wraps it: the WebSocket hub
                # writes pre-built frames straight to that connection (see _fast.py).
                _fast.remember_ws_send(scope, send)
            return await self.fallback(scope, receive, send)
        method = scope["method"]
        found, _ = self.match("GET" if method == "HEAD" else method, scope["path"],
                              scope.get("raw_path"))
        if found is None:
            identity = (scope.get("state") or {}).get("identity")
            if identity is not None and scope["path"].startswith("/api/"):
                return await self._send(send, 403, jsonio.dumps(
                    {"error": True, "code": "FORBIDDEN", "message": NOT_FOR_AGENTS}))
            return await self.fallback(scope, receive, send)
        handler, params, doc, bound = found
        request = ApiRequest(scope, receive, params, doc)
        headers = None
        content_type = _JSON_HEADERS
        try:
            if request.identity is not None:
                await self.guard(request, bound)
            result = await handler(request)
            status = 200
            if isinstance(result, Reply):
                if result.content_type is not None:
                    content_type = result.content_type
                status, result, headers = result.status, result.body, result.headers
            body = result if isinstance(result, (bytes, bytearray)) else jsonio.dumps(result)
        except ApiError as exc:
            status, body, headers = exc.status, jsonio.dumps(exc.body()), None
            content_type = _JSON_HEADERS
        except StorageError as exc:
            status, headers, content_type = 500, None, _JSON_HEADERS
            body = jsonio.dumps({"error": True, "code": "INTERNAL_ERROR", "message": str(exc)})
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            status, headers, content_type = 500, None, _JSON_HEADERS
            body = jsonio.dumps({"error": True, "code": "INTERNAL_ERROR",
                                 "message": f"{type(exc).__name__}: {exc}"})
        await self._send(send, status, body, head=method == "HEAD", headers=headers,
                         content_type=content_type)

    async def _send(self, send, status: int, body: bytes, head: bool = False,
                    headers: list[tuple[bytes, bytes]] | None = None,
                    content_type: bytes = _JSON_HEADERS) -> None:
        if self.fast_paths and _fast.write_response(send, status, body, head, content_type,
                                                    headers):
            return
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type),
                                (b"content-length", str(len(body)).encode()),
                                *(headers or ())]})
        await send({"type": "http.response.body", "body": b"" if head else body})
