"""Fast paths that write to uvicorn's connections directly, past the ASGI `send`.

Two answers dominate the server's traffic: small JSON responses and WebSocket events that go
to every client. Through plain ASGI each response passes uvicorn's `send` twice (head, then
body) with header checks of headers we built ourselves, and each event is framed once per
client. Here a whole response is one transport write, and an event is framed once for all
clients. Both depend on uvicorn's internals, so both check that those look as expected and
otherwise do nothing (the caller uses plain ASGI); the setting MAESTRO_FAST_PATHS=0 turns them
off altogether (`Router.fast_paths`, `Hub.fast_paths`)."""

from __future__ import annotations

try:  # uvicorn's httptools connection, for write_response
    from uvicorn.protocols.http.httptools_impl import (
        STATUS_LINE as _STATUS_LINE,
        RequestResponseCycle as _UvicornCycle,
    )
except ImportError:  # another server, or uvicorn without httptools: plain ASGI
    _UvicornCycle = None
    _STATUS_LINE = {}
_CYCLE_FIELDS = ("transport", "flow", "keep_alive", "default_headers", "response_started",
                 "response_complete", "disconnected", "access_log", "message_event",
                 "on_response", "waiting_for_100_continue")
if _UvicornCycle is not None:
    _probe = _UvicornCycle.__init__.__code__.co_names
    if not all(name in _probe for name in _CYCLE_FIELDS):
        _UvicornCycle = None  # a uvicorn whose connection state looks different: plain ASGI

# Bodies up to this size are joined to their head and sent in one write.
_JOIN_AT_MOST = 256 << 10
# The scope key under which the router keeps the server's own WebSocket `send`.
_WS_SEND = "maestro.ws_send"


# ------------------------------------------------------------------ HTTP responses
def write_response(send, status: int, body: bytes, head: bool, content_type: bytes,
                   headers: list[tuple[bytes, bytes]] | None = None) -> bool:
    """Write a whole answer to uvicorn's connection in one write and finish the request the
    way uvicorn's own `send` does, but without two passes through it (header checks of
    trusted headers, a head and a body written separately). Returns False, having done
    nothing, unless `send` is uvicorn's httptools cycle in a state where that is exact."""
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not _UvicornCycle:
        return False
    if cycle.response_started or cycle.disconnected or cycle.access_log \
            or cycle.flow.write_paused or status not in _STATUS_LINE:
        return False
    parts = [_STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        parts += (name.lower(), b": ", value, b"\r\n")
    parts += (b"content-type: ", content_type, b"\r\ncontent-length: ",
              str(len(body)).encode(), b"\r\n")
    for name, value in headers or ():
        parts += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    large = len(body) > _JOIN_AT_MOST
    if not head and not large:
        parts.append(body)
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.transport.write(b"".join(parts))
    if not head and large:  # not copied into one more buffer (a list of 50k tasks: ~25 MB)
        cycle.transport.write(body)
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


# ------------------------------------------------------------------ WebSocket frames
def remember_ws_send(scope: dict, send) -> None:
    """Keep the server's own `send` of a WebSocket connection, before any middleware wraps
    it: `raw_connection` finds uvicorn's protocol object through it."""
    scope[_WS_SEND] = send


def raw_connection(scope: dict):
    """uvicorn's protocol object behind a WebSocket connection, when frames can be written to
    it directly: the same bytes go to every client, so each event is framed once, not once
    per client. None otherwise."""
    proto = getattr(scope.get(_WS_SEND), "__self__", None)
    needed = ("transport", "writable", "close_sent", "conn")
    if proto is None or not all(hasattr(proto, name) for name in needed):
        return None
    if getattr(proto.conn, "extensions", None):  # e.g. compression: frames differ per client
        return None
    return proto


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame (RFC 6455 §5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def write_frame(raw, frame: bytes) -> bool:
    """Write a pre-built frame to the connection `raw` (from `raw_connection`) when it takes
    more; False when it does not (the frame must then go through the ASGI `send`)."""
    transport = raw.transport
    if raw.writable.is_set() and not raw.close_sent and transport is not None \
            and not transport.is_closing():
        transport.write(frame)
        return True
    return False
