"""The CLI's HTTP client: JSON in and out, bearer token, URL-encoded paths and queries, retries
on network errors and 5xx (SPEC §12.1), and server errors turned into `CliError`s a person can
read (message and code from the server's error body)."""

from __future__ import annotations

import sys
import time
from typing import Any
from urllib.parse import quote

from .. import __version__
from .context import CliContext
from .output import EXIT_GENERAL, EXIT_NETWORK, EXIT_NOT_FOUND, EXIT_PERMISSION, CliError, warn

START_HINT = ("Start it with `maestro serve`, or point MAESTRO_SERVER_URL (or --server) at a "
              "running server.")


def seg(value: str) -> str:
    """One URL path segment, percent-encoded (ids come from users and environments)."""
    return quote(str(value), safe="")


class ApiClient:
    """Talks to one Maestro server; one instance per command run."""

    def __init__(self, ctx: CliContext):
        self.ctx = ctx
        self._http = None

    def _client(self):
        if self._http is None:
            import httpx

            headers = {"Accept": "application/json", "User-Agent": f"maestro-cli/{__version__}"}
            if self.ctx.token:
                headers["Authorization"] = f"Bearer {self.ctx.token}"
            self._http = httpx.Client(base_url=self.ctx.server, headers=headers,
                                      timeout=self.ctx.timeout_s, trust_env=False)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- verbs
    def get(self, path: str, params: dict | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.request("POST", path, body=body or {})

    def patch(self, path: str, body: dict) -> Any:
        return self.request("PATCH", path, body=body)

    def put(self, path: str, body: dict) -> Any:
        return self.request("PUT", path, body=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def request(self, method: str, path: str, *, params: dict | None = None,
                body: dict | None = None) -> Any:
        """Send one request and return the decoded JSON answer, retrying network errors and
        5xx answers with exponential back-off. A POST is retried only when it certainly did
        not reach the server (connection refused) or the server refused it with a 5xx (the
        server applies nothing on a 5xx), never after a lost answer, so it is never applied
        twice."""
        import httpx

        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        kwargs: dict[str, Any] = {"params": query or None}
        if body is not None:
            import orjson

            kwargs["content"] = orjson.dumps(body)
            kwargs["headers"] = {"Content-Type": "application/json"}
        attempts = self.ctx.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._client().request(method, path, **kwargs)
            except httpx.ConnectError as exc:
                if last:
                    raise self._unreachable(exc) from None
                self._pause(attempt, "connection refused")
                continue
            except httpx.TransportError as exc:
                if last or method == "POST":
                    raise self._unreachable(exc) from None
                self._pause(attempt, type(exc).__name__)
                continue
            if response.status_code >= 500 and not last:
                self._pause(attempt, f"HTTP {response.status_code}")
                continue
            return self._decode(method, path, response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _pause(self, attempt: int, why: str) -> None:
        delay = self.ctx.retry_delay_ms * (2 ** attempt) / 1000.0
        if self.ctx.debug or sys.stderr.isatty():
            warn(f"no answer from {self.ctx.server} ({why}); retrying in {delay:g} s "
                 f"({attempt + 1}/{self.ctx.retries})")
        time.sleep(delay)

    def _unreachable(self, exc: Exception) -> CliError:
        import httpx

        if isinstance(exc, httpx.ConnectError):
            reason = "connection refused" if "refused" in str(exc).lower() else str(exc) or \
                "cannot connect"
            return CliError("connection_refused",
                            f"Cannot reach the Maestro server at {self.ctx.server} ({reason}). "
                            + START_HINT, exit_code=EXIT_NETWORK,
                            details={"server": self.ctx.server})
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else str(exc) or \
            type(exc).__name__
        return CliError("network_error",
                        f"No answer from the Maestro server at {self.ctx.server} ({kind}).",
                        exit_code=EXIT_NETWORK, details={"server": self.ctx.server})

    def _decode(self, method: str, path: str, response) -> Any:
        status = response.status_code
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = None
        if status < 400:
            if payload is None:
                raise CliError("invalid_response", f"The server at {self.ctx.server} answered "
                               f"{method} {path} with something that is not JSON; is it a "
                               "Maestro server?", details={"status": status})
            return payload
        raise http_error(status, payload, f"{method} {response.request.url.raw_path.decode()}")


def http_error(status: int, payload: Any, request: str) -> CliError:
    """Turn an error answer into a CliError: the server's message, with its code kept in
    `details.code` and the original CLI's stable category in `error` (§12.1)."""
    body = payload if isinstance(payload, dict) else {}
    server_code = body.get("code") if isinstance(body.get("code"), str) else None
    message = body.get("message") if isinstance(body.get("message"), str) else None
    if message is None and isinstance(body.get("error"), str):
        message = body["error"]
    details: dict[str, Any] = {"status": status, "request": request}
    if server_code:
        details["code"] = server_code
    if body.get("details") is not None:
        details["server"] = body["details"]
    if status == 404:
        return CliError("resource_not_found", message or "Not found", exit_code=EXIT_NOT_FOUND,
                        details=details)
    if status == 401:
        return CliError("unauthorized", message or "A token is required",
                        exit_code=EXIT_PERMISSION, details=details,
                        suggestion="Set MAESTRO_TOKEN (or MAESTRO_SESSION_TOKEN) to a token the "
                                   "server accepts.")
    if status == 403:
        return CliError("permission_denied", message or "Permission denied",
                        exit_code=EXIT_PERMISSION, details=details)
    if status in (400, 409, 413, 415, 422):
        return CliError("invalid_request", message or "Invalid request", exit_code=EXIT_GENERAL,
                        details=details)
    if status >= 500:
        return CliError("server_error", message or f"Server error (HTTP {status})",
                        exit_code=EXIT_GENERAL, details=details,
                        suggestion="The server log says more.")
    return CliError("http_error", message or f"HTTP {status}", exit_code=EXIT_GENERAL,
                    details=details)
