"""Who may talk to the server (SPEC §0.2, §3.4): Host check against DNS rebinding, Origin check
and CORS for browsers, optional bearer token. A pure ASGI layer in front of every route and of
the WebSocket handshake."""

from __future__ import annotations

import hmac
import logging
import re
import socket
from urllib.parse import parse_qs, urlsplit

from .. import jsonio
from ..config import Settings, is_loopback_host

log = logging.getLogger("maestro.security")

MUTATING = {b"POST", b"PUT", b"PATCH", b"DELETE", "POST", "PUT", "PATCH", "DELETE"}
_LOCAL_ORIGIN = re.compile(r"^http://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$")
ALLOW_METHODS = b"GET,HEAD,PUT,PATCH,POST,DELETE"
# Response headers a browser page may read besides the simple ones: the next page of a list.
EXPOSE_HEADERS = b"X-Next-Cursor, Link"


def _host_of(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _dashboard_asset(kind: str, method: str, path: str) -> bool:
    """The dashboard page, the API reference (/docs, /openapi.json) and their static files hold
    no data; a browser loads them before it knows the token, then sends the token on every API
    call and on the WebSocket."""
    return kind == "http" and method in ("GET", "HEAD") and (
        path in ("/", "/docs", "/openapi.json") or path.startswith(("/ui/", "/docs/static/")))


def _liveness_probe(kind: str, method: str, path: str, headers: dict) -> bool:
    """`GET /health` without any credentials (a load balancer's health check): answered with
    a bare liveness body, no details, when a token is required."""
    return kind == "http" and method in ("GET", "HEAD") and path in ("/health", "/health/") \
        and b"authorization" not in headers


LIVENESS_BODY = b'{"status":"ok"}'


class Security:
    def __init__(self, app, settings: Settings, token_checker=None):
        self.app = app
        self.settings = settings
        self.token = settings.token.encode() if settings.token else b""
        # Extra verifier for per-session agent tokens: callable(bytes) -> identity or None.
        self.token_checker = token_checker
        # Several servers on one database: `awaits_session(token)` says whether an agent token
        # names a session this server has not heard of yet, and `catch_up()` applies what the
        # other servers wrote, so an agent spawned through another server is known at once.
        self.awaits_session = None
        self.catch_up = None
        own = {"localhost", "127.0.0.1", "::1", socket.gethostname().lower()}
        bind = settings.host.lower()
        if bind not in ("0.0.0.0", "::", ""):
            own.add(bind)
        for url in (settings.server_url, settings.replica_url):  # replicas forward to the latter
            url_host = urlsplit(url).hostname
            if url_host:
                own.add(url_host.lower())
        own.update(h.lower() for h in settings.allowed_hosts)
        self.allowed_hosts = own
        origins = {o.lower() for o in settings.cors_origins}
        origins.add("tauri://localhost")
        parts = urlsplit(settings.server_url)
        if parts.scheme and parts.netloc:
            origins.add(f"{parts.scheme}://{parts.netloc}".lower())
        if bind not in ("0.0.0.0", "::", ""):
            origins.add(f"http://{bind}:{settings.port}")
        self.allowed_origins = origins
        # CORS_ENABLED=false: no Access-Control-* headers at all (browser pages of other
        # origins cannot read answers); the Origin check on mutations stays.
        self.cors = settings.cors_enabled

    def origin_allowed(self, origin: str) -> bool:
        o = origin.strip().rstrip("/").lower()
        return o in self.allowed_origins or bool(_LOCAL_ORIGIN.match(o))

    def host_allowed(self, host: str | None) -> bool:
        if not host:
            return True  # HTTP/1.0 clients; nothing for a rebinding page to abuse
        h = _host_of(host)
        return h in self.allowed_hosts or is_loopback_host(h)

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {}
        for k, val in scope["headers"]:
            headers[k] = val
        host = headers.get(b"host")
        if not self.host_allowed(host.decode("latin-1") if host else None):
            log.warning("refused a request for Host %r (DNS-rebinding protection)", host)
            return await self._refuse(scope, receive, send, 421, "HOST_NOT_ALLOWED",
                                      "Host not allowed; add it to MAESTRO_ALLOWED_HOSTS",
                                      None)
        origin_raw = headers.get(b"origin")
        origin = origin_raw.decode("latin-1") if origin_raw is not None else None
        origin_ok = origin is not None and self.origin_allowed(origin)
        method = scope.get("method", "GET")
        if kind == "http" and method == "OPTIONS":
            allowed = origin if origin_ok and self.cors else None
            return await self._preflight(send, headers, allowed)
        if origin is not None and not origin_ok and (kind == "websocket" or method in MUTATING):
            return await self._refuse(scope, receive, send, 403, "ORIGIN_NOT_ALLOWED",
                                      f"Origin {origin} is not allowed", None)
        if (self.token or self.token_checker is not None) \
                and not _dashboard_asset(kind, method, scope["path"]):
            identity = self._authenticate(scope, headers)
            if identity is False and self.catch_up is not None \
                    and self.awaits_session(self._presented(scope, headers)):
                await self.catch_up()
                identity = self._authenticate(scope, headers)
            if identity is False and _liveness_probe(kind, method, scope["path"], headers):
                return await self._alive(send, method == "HEAD")
            if identity is False:
                return await self._refuse(scope, receive, send, 401, "UNAUTHORIZED",
                                          "A valid token is required "
                                          "(Authorization: Bearer <token>)",
                                          origin if origin_ok and self.cors else None)
            if identity is not None:
                scope.setdefault("state", {})["identity"] = identity
        if kind == "http" and origin_ok and self.cors:
            send = self._with_cors(send, origin)
        return await self.app(scope, receive, send)

    @staticmethod
    def _presented(scope, headers) -> bytes:
        """The bearer token of a request (or of a WebSocket's `?token=`), or b""."""
        presented = b""
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            presented = auth[7:].strip()
        if not presented and scope["type"] == "websocket":
            qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if qs.get("token"):
                presented = qs["token"][0].encode()
        return presented

    def _authenticate(self, scope, headers):
        """False when a token is required and none valid was given; else the identity (None
        for the user's own full rights)."""
        presented = self._presented(scope, headers)
        if self.token and presented and hmac.compare_digest(presented, self.token):
            return None
        if presented and self.token_checker is not None:
            identity = self.token_checker(presented)
            if identity is not None:
                return identity
            return False
        if self.token:
            return False
        return None

    def _with_cors(self, send, origin: str):
        extra = [(b"access-control-allow-origin", origin.encode("latin-1")),
                 (b"vary", b"Origin"), (b"access-control-expose-headers", EXPOSE_HEADERS)]
        if self.settings.cors_credentials:
            extra.append((b"access-control-allow-credentials", b"true"))

        async def wrapped(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        return wrapped

    async def _preflight(self, send, headers, origin):
        out = [(b"content-length", b"0")]
        if origin is not None:
            out += [(b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"vary", b"Origin"),
                    (b"access-control-allow-methods", ALLOW_METHODS),
                    (b"access-control-max-age", b"600")]
            requested = headers.get(b"access-control-request-headers")
            if requested:
                out.append((b"access-control-allow-headers", requested))
            if self.settings.cors_credentials:
                out.append((b"access-control-allow-credentials", b"true"))
        await send({"type": "http.response.start", "status": 204, "headers": out})
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _alive(send, head: bool) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json; charset=utf-8"),
                                (b"content-length", str(len(LIVENESS_BODY)).encode())]})
        await send({"type": "http.response.body", "body": b"" if head else LIVENESS_BODY})

    async def _refuse(self, scope, receive, send, status, code, message, origin):
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        body = jsonio.dumps({"error": True, "code": code, "message": message})
        headers = [(b"content-type", b"application/json; charset=utf-8"),
                   (b"content-length", str(len(body)).encode())]
        if origin:
            headers += [(b"access-control-allow-origin", origin.encode("latin-1")),
                        (b"vary", b"Origin")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
