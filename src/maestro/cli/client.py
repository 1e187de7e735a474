"""The CLI's HTTP client: JSON in and out, bearer token, URL-encoded paths and queries, retries
on network errors and 5xx (SPEC §12.1), and server errors turned into `CliError`s a person can
read (message and code from the server's error body).

Built on the standard library's http.client rather than httpx: `import httpx` alone costs
about 100 ms (it loads its own command line, click and rich), paid by every agent call."""

from __future__ import annotations

import json
import sys
import time
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from .. import __version__
from .context import CliContext
from .output import (
    EXIT_CLAIMED,
    EXIT_GENERAL,
    EXIT_NETWORK,
    EXIT_NOT_FOUND,
    EXIT_NOT_READY,
    EXIT_PERMISSION,
    CliError,
    warn,
)

CLAIM_HEADER = "X-Maestro-Claim-Token"

# 409 answers about claims (SPEC §15.3) that a script must tell apart from "not allowed":
# server code -> (envelope `error`, exit code, hint)
CLAIM_CONFLICTS = {
    "TASK_ALREADY_CLAIMED": ("task_claimed", EXIT_CLAIMED,
                             "Another session holds this task; `maestro task ready` lists free "
                             "work."),
    "CLAIM_LOST": ("claim_lost", EXIT_CLAIMED,
                   "This session no longer holds the task's claim (it expired, was released or "
                   "was taken over); stop writing to it and claim it again if it is ready."),
    "TASK_NOT_READY": ("task_not_ready", EXIT_NOT_READY,
                       "`maestro task show <id>` says what it waits for; `maestro task ready` "
                       "lists what can start now."),
}

class RetryPlan:
    """How long a command waits for a server that does not answer (network errors, 5xx).

    A person at a terminal wants an answer at once: one quick retry. An agent's hooks and
    commands (a hook command, or any command in a session without a terminal) ride out a
    server restart: retries with growing pauses for about PATIENT_SECONDS. MAESTRO_RETRIES (and
    MAESTRO_RETRY_DELAY, ms, doubled each time) override both."""

    QUICK_RETRIES = 1
    QUICK_DELAY_MS = 250
    PATIENT_SECONDS = 30.0
    PATIENT_DELAY_MS = 250
    PATIENT_MAX_DELAY = 4.0
    EXPLICIT_DELAY_MS = 1000

    def __init__(self, ctx: CliContext):
        self.started = time.monotonic()
        self.retries: int | None
        self.deadline: float | None = None
        if ctx.retries is not None:
            self.retries = ctx.retries
            base = ctx.retry_delay_ms if ctx.retry_delay_ms is not None \
                else self.EXPLICIT_DELAY_MS
        elif ctx.patient:
            self.retries = None
            self.deadline = self.started + self.PATIENT_SECONDS
            base = ctx.retry_delay_ms if ctx.retry_delay_ms is not None \
                else self.PATIENT_DELAY_MS
        else:
            self.retries = self.QUICK_RETRIES
            base = ctx.retry_delay_ms if ctx.retry_delay_ms is not None \
                else self.QUICK_DELAY_MS
        self.base = base / 1000.0

    def delay(self, attempt: int) -> float | None:
        """Seconds to wait before retry number `attempt` + 1, or None to give up."""
        if self.deadline is None:
            return None if attempt >= self.retries else self.base * (2 ** attempt)
        pause = min(self.base * (2 ** min(attempt, 20)), self.PATIENT_MAX_DELAY)
        left = self.deadline - time.monotonic()
        return None if left <= 0 else min(pause, left)

    def describe(self, attempt: int) -> str:
        if self.deadline is None:
            return f"{attempt + 1}/{self.retries}"
        return f"retry {attempt + 1}, for up to {self.PATIENT_SECONDS:g} s"


START_HINT = ("Start it with `maestro serve`, or point MAESTRO_SERVER_URL (or --server) at a "
              "running server.")


def seg(value: str) -> str:
    """One URL path segment, percent-encoded (ids come from users and environments)."""
    return quote(str(value), safe="")


class _Unreachable(Exception):
    """The request did not get an answer; `sent` tells whether it may have reached the
    server (then a POST must not be repeated)."""

    def __init__(self, reason: str, refused: bool, sent: bool):
        super().__init__(reason)
        self.reason = reason
        self.refused = refused
        self.sent = sent


class ApiClient:
    """Talks to one Maestro server over one kept-alive connection; one instance per command
    run."""

    def __init__(self, ctx: CliContext):
        self.ctx = ctx
        parts = urlsplit(ctx.server)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.base_path = parts.path.rstrip("/")
        self.headers = {"Accept": "application/json",
                        "User-Agent": f"maestro-cli/{__version__}"}
        if ctx.token:
            self.headers["Authorization"] = f"Bearer {ctx.token}"
        self._conn = None
        # The X-Next-Cursor of the last answer: more of a list follows (GET with `limit`).
        self.next_cursor: str | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- verbs
    def get(self, path: str, params: dict | None = None) -> Any:
        return self.request("GET", path, params=params)

    def get_all(self, path: str, params: dict | None = None, page: int = 1000) -> Any:
        """A whole list, fetched `page` items at a time by following the server's cursors (a
        server without pages answers the whole list at once)."""
        items: list = []
        cursor = None
        while True:
            found = self.get(path, {**(params or {}), "limit": page, "cursor": cursor})
            if not isinstance(found, list):
                return found
            items += found
            cursor = self.next_cursor
            if not cursor:
                return items

    def post(self, path: str, body: dict | None = None, headers: dict | None = None,
             minimal: bool = False) -> Any:
        """POST `body`; `minimal`: ask for a minimal answer (an append then answers the new
        entry instead of the whole session or task)."""
        return self.request("POST", path, body=body or {}, headers=headers, minimal=minimal)

    def patch(self, path: str, body: dict, headers: dict | None = None) -> Any:
        return self.request("PATCH", path, body=body, headers=headers)

    def put(self, path: str, body: dict) -> Any:
        return self.request("PUT", path, body=body)

    def delete(self, path: str, params: dict | None = None) -> Any:
        return self.request("DELETE", path, params=params)

    def request(self, method: str, path: str, *, params: dict | None = None,
                body: dict | None = None, headers: dict | None = None,
                minimal: bool = False) -> Any:
        """Send one request and return the decoded JSON answer, retrying network errors and
        5xx answers with exponential back-off. A POST is retried only when it certainly did
        not reach the server (connection refused) or the server refused it with a 5xx (the
        server applies nothing on a 5xx), never after a lost answer, so it is never applied
        twice."""
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        target = self.base_path + path + (f"?{urlencode(query)}" if query else "")
        payload = None
        headers = {**self.headers, **(headers or {})}
        if minimal:
            headers["Prefer"] = "return=minimal"
        if body is not None:
            payload = json.dumps(body, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        plan = RetryPlan(self.ctx)
        attempt = 0
        while True:
            try:
                status, raw = self._send(method, target, payload, headers)
            except _Unreachable as exc:
                delay = None if method == "POST" and exc.sent else plan.delay(attempt)
                if delay is None:
                    raise self._unreachable(exc) from None
                self._pause(plan, attempt, delay, exc.reason)
                attempt += 1
                continue
            if status >= 500:
                delay = plan.delay(attempt)
                if delay is not None:
                    self._pause(plan, attempt, delay, f"HTTP {status}")
                    attempt += 1
                    continue
            return self._decode(method, target, status, raw)

    def _send(self, method: str, target: str, payload: bytes | None,
              headers: dict) -> tuple[int, bytes]:
        import http.client

        for reuse in (True, False):
            if self._conn is None:
                cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
                self._conn = cls(self.host, self.port, timeout=self.ctx.timeout_s)
                reuse = False
            sent = False
            try:
                self._conn.request(method, target, body=payload, headers=headers)
                sent = True
                response = self._conn.getresponse()
                self.next_cursor = response.getheader("X-Next-Cursor")
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as exc:
                self.close()
                if reuse:  # the kept-alive connection had gone stale: one fresh try
                    continue
                raise _Unreachable("connection closed by the server", False, sent) from exc
            except ConnectionRefusedError as exc:
                self.close()
                raise _Unreachable("connection refused", True, False) from exc
            except TimeoutError as exc:
                self.close()
                raise _Unreachable("timed out", False, sent) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise _Unreachable(str(exc) or type(exc).__name__, False, sent) from exc
        raise _Unreachable("connection closed by the server", False, True)

    def _pause(self, plan: RetryPlan, attempt: int, delay: float, why: str) -> None:
        if self.ctx.debug or sys.stderr.isatty():
            warn(f"no answer from {self.ctx.server} ({why}); retrying in {delay:g} s "
                 f"({plan.describe(attempt)})")
        time.sleep(delay)

    def _unreachable(self, exc: _Unreachable) -> CliError:
        if exc.refused:
            return CliError("connection_refused",
                            f"Cannot reach the Maestro server at {self.ctx.server} "
                            f"(connection refused). {START_HINT}", exit_code=EXIT_NETWORK,
                            details={"server": self.ctx.server})
        return CliError("network_error",
                        f"No answer from the Maestro server at {self.ctx.server} "
                        f"({exc.reason}).", exit_code=EXIT_NETWORK,
                        details={"server": self.ctx.server})

    def _decode(self, method: str, target: str, status: int, raw: bytes) -> Any:
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = None
        if status < 400:
            if payload is None:
                raise CliError("invalid_response", f"The server at {self.ctx.server} answered "
                               f"{method} {target} with something that is not JSON; is it a "
                               "Maestro server?", details={"status": status})
            return payload
        raise http_error(status, payload, f"{method} {target}")


def _waiting_hint(details: Any) -> str | None:
    """For TASK_NOT_READY: what the task waits for, from the server's details."""
    if not isinstance(details, dict):
        return None
    parts = []
    for key, words in (("blockedBy", "It waits for"), ("missingDependencies", "Missing"),
                       ("blockedAncestors", "Held back by parent")):
        values = details.get(key)
        if isinstance(values, list) and values:
            parts.append(f"{words}: {', '.join(map(str, values))}.")
    if not parts and isinstance(details.get("status"), str) and details["status"] != "pending":
        parts.append(f"Its status is {details['status']}.")
    return " ".join(parts) or None


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
    if status == 409 and server_code in CLAIM_CONFLICTS:
        code, exit_code, hint = CLAIM_CONFLICTS[server_code]
        hint = _waiting_hint(body.get("details")) or hint
        return CliError(code, message or server_code, exit_code=exit_code, details=details,
                        suggestion=hint)
    if status in (400, 409, 413, 415, 422):
        return CliError("invalid_request", message or "Invalid request", exit_code=EXIT_GENERAL,
                        details=details)
    if status >= 500:
        return CliError("server_error", message or f"Server error (HTTP {status})",
                        exit_code=EXIT_GENERAL, details=details,
                        suggestion="The server log says more.")
    return CliError("http_error", message or f"HTTP {status}", exit_code=EXIT_GENERAL,
                    details=details)
