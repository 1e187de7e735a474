"""Limits on HTTP connections, enforced in uvicorn's httptools protocol before any request
reaches the application.

Uvicorn on its own keeps a connection open for as long as the client likes while a request's
head or body trickles in (or before anything arrives at all), buffers a request head of any
size, and accepts any number of connections. Each of those lets one client that never needs a
token hold the server's file descriptors or memory. This protocol adds:

- a deadline for a request's head (from the connection's start, or from the first byte of a
  later request on a kept-alive connection) and one for its body (from the end of its head);
  each is checked only while the server is reading, so a client whose pipelined request waits
  behind a slow answer is never blamed for the wait;
- a size limit on a request head: past it the client gets 431 and the connection closes, and
  at most one read (256 KiB) more than the limit is ever held for it;
- a limit on open connections, HTTP and WebSocket together: one past it is answered 503 as
  soon as its request head is in (or closed if that takes more than a moment).

An idle kept-alive connection is closed by uvicorn's own keep-alive timeout. After the
WebSocket handshake none of these deadlines apply (a live event stream stays open; its pings
detect a dead peer). Refusals carry the usual JSON error body and are followed by a short
lingering close (the rest of the request is read and dropped for a moment), so that the client
reads the answer instead of a connection reset."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .. import jsonio

log = logging.getLogger("maestro.http")

# How long a refused connection is read and drained before it is closed for good.
LINGER_SECONDS = 2.0

# Where a connection is in its current request.
_IDLE, _HEAD, _BODY, _UPGRADED, _CLOSING = range(5)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int
    max_header_bytes: int


class _Refusal(Exception):
    """Raised inside a parser callback to stop parsing a request that is refused."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, a head size limit and a connection limit.
    Use `protocol_class(limits)` to get a class to hand to `uvicorn.Config(http=...)`."""

    limits: ConnectionLimits

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stage = _IDLE
        self._timer = None
        self._timer_kind = _IDLE
        self._chunk = 0
        # Bytes of the current head: an upper bound (every read since the one it began in,
        # that one whole) and the size of the read it began in.
        self._head_upper = 0
        self._head_first = 0
        self._over_limit = False

    # ------------------------------------------------------------------ connection
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # Answered 503 once its request head is in (clients expect an answer after their
            # request), and given only a moment for that.
            log.warning("refused a connection: %d open, the limit is %d "
                        "(MAESTRO_MAX_CONNECTIONS)", len(self.connections) - 1,
                        self.limits.max_connections)
            self._over_limit = True
            self._arm(_HEAD, min(LINGER_SECONDS, self.limits.header_timeout))
            return
        self._arm(_HEAD, self.limits.header_timeout)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        stage = self._stage
        if stage >= _UPGRADED:
            return  # refused: the rest of the request is dropped unread
        self._unset_keepalive_if_required()
        self._chunk = size = len(data)
        if stage == _HEAD:
            self._head_upper += size
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._stage == _CLOSING:  # a callback refused the request (_Refusal)
                self._refuse_parsed()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        stage = self._stage
        if stage == _HEAD:
            # Every read after the one the head began in is head, whole: a lower bound.
            if self._head_upper - self._head_first > self.limits.max_header_bytes:
                self._refuse_head()
                return
            if self._timer is None:
                self._arm(_HEAD, self.limits.header_timeout)
        elif stage == _BODY:
            if self._timer is None:
                self._arm(_BODY, self.limits.body_timeout)
        elif stage == _IDLE and self._timer is None and not self._busy():
            # Bytes that begin no request (blank lines) get no more time than a head.
            self._arm(_HEAD, self.limits.header_timeout)

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._stage = _HEAD
        self._head_upper = self._head_first = self._chunk

    def on_headers_complete(self) -> None:
        limit = self.limits.max_header_bytes
        if self._over_limit or (self._head_upper > limit and self._head_size() > limit):
            self._stage = _CLOSING  # answered by data_received, once the parser has stopped
            raise _Refusal()
        self._disarm()
        if self.parser.should_upgrade() and self._should_upgrade():
            self._stage = _UPGRADED
        else:
            self._stage = _BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._stage == _BODY:
            self._stage = _IDLE
            if self._timer is not None:
                self._disarm()
        super().on_message_complete()

    def _head_size(self) -> int:
        """At most the size of the head just parsed (its URL and headers as received)."""
        return len(self.url) + sum(len(name) + len(value) + 3 for name, value in self.headers)

    # ------------------------------------------------------------------ deadlines
    def _arm(self, kind: int, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_kind = kind
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _busy(self) -> bool:
        """An answer to an earlier request is still being made or sent."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def _expired(self) -> None:
        self._timer = None
        kind = self._timer_kind
        if self.transport.is_closing():
            return
        if kind == _CLOSING:
            self.transport.close()
            return
        if self.flow.read_paused and self._stage < _UPGRADED:
            # Reading stopped on this side (pipelined requests wait for an answer, or the
            # application has not taken the body yet): the wait is not the client's.
            self._arm(kind, self.limits.body_timeout if kind == _BODY
                      else self.limits.header_timeout)
            return
        if kind == _HEAD and self._stage == _IDLE:
            self.transport.close()  # nothing was asked: no answer is owed
            return
        if self._over_limit:
            self._refuse_parsed()
            return
        what = "body" if kind == _BODY else "head"
        log.info("closed a connection whose request %s did not arrive in time", what)
        self._refuse(408, "REQUEST_TIMEOUT", f"The request {what} did not arrive in time",
                     current=kind == _BODY)

    # ------------------------------------------------------------------ refusals
    def _refuse_parsed(self) -> None:
        """Answer a request refused while its head was parsed."""
        if self._over_limit:
            self._refuse(503, "TOO_MANY_CONNECTIONS",
                         "The server has too many open connections; try again shortly")
        else:
            self._refuse_head()

    def _refuse_head(self) -> None:
        log.warning("refused a request head over %d bytes (MAESTRO_MAX_HEADER_BYTES)",
                    self.limits.max_header_bytes)
        self._refuse(431, "HEADERS_TOO_LARGE",
                     f"Request head too large (limit {self.limits.max_header_bytes} bytes)")

    def _refuse(self, status: int, code: str, message: str, current: bool = False) -> None:
        """Answer `status` with an error body and close the connection. `current`: the
        refused request is the one the application is working on (its body is late). When
        an answer is already on its way (or one to an earlier request is being made), the
        connection is only closed."""
        self._stage = _CLOSING
        self._disarm()
        self.pipeline.clear()
        transport = self.transport
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started or not current:
                transport.close()
                return
            # The application waits for this request's body: it gets a disconnect and its
            # answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        body = jsonio.dumps({"error": True, "code": code, "message": message})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        head += (b"content-type: application/json; charset=utf-8\r\ncontent-length: ",
                 str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body)
        transport.write(b"".join(head))
        if transport.can_write_eof():
            transport.write_eof()
        self.flow.resume_reading()
        self._arm(_CLOSING, LINGER_SECONDS)


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` enforcing `limits`."""
    return type("MaestroHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
