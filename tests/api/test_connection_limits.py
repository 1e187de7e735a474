"""Connection limits through raw sockets on a real server: a request head or body that does not
arrive in time, an idle connection, a request head that is too large and one connection too
many are each answered (408, 431, 503 with the JSON error body) or closed, before any token is
needed; ordinary requests, kept-alive connections and WebSocket streams are left alone."""

from __future__ import annotations

import json
import select
import socket
import time

import httpx
import pytest
from helpers import WsClient, wait_until
from server_fixtures import server_fixture
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

# Tiny deadlines so that the tests need not wait; the keep-alive timeout is longer than the
# others so that a connection between two requests is kept (and must not be cut by them).
FAST = {"MAESTRO_HEADER_TIMEOUT": "1", "MAESTRO_BODY_TIMEOUT": "1",
        "MAESTRO_KEEPALIVE_TIMEOUT": "6", "MAESTRO_MAX_HEADER_BYTES": "4096"}
TOKEN = "connection-limits-test-token-0123456789"


fast = server_fixture(env={**FAST, "MAESTRO_TOKEN": TOKEN})


def _connect(srv, timeout: float = 20.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _request(srv, path: str = "/health", extra: str = "", token: bool = True) -> bytes:
    secret = srv.extra_env.get("MAESTRO_TOKEN") if token else None
    auth = f"Authorization: Bearer {secret}\r\n" if secret else ""
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n{auth}{extra}\r\n"
            ).encode()


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict, bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a full response: {bytes(buf)!r}"
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[:end + 4]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return int(lines[0].split()[1]), headers, body


def _closed(sock: socket.socket) -> bool:
    """True once the server has closed the connection (waits up to the socket's timeout)."""
    try:
        while True:
            if sock.recv(65536) == b"":
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _error(status_expected: int, code: str, response: tuple[int, dict, bytes]) -> None:
    status, headers, body = response
    assert status == status_expected, (status, body)
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["connection"] == "close"
    parsed = json.loads(body)
    assert parsed["error"] is True and parsed["code"] == code and parsed["message"]


def _healthy(srv) -> None:
    with _connect(srv) as sock:
        sock.sendall(_request(srv))
        status, _, body = _read_response(sock, bytearray())
        assert status == 200 and json.loads(body)["status"] == "ok"


# ------------------------------------------------------------------ deadlines
def test_a_connection_that_sends_nothing_is_closed(fast):
    with _connect(fast) as sock:
        assert _closed(sock)
    _healthy(fast)


def test_a_half_sent_request_head_gets_408_and_is_closed(fast):
    with _connect(fast) as sock:
        sock.sendall(b"GET /api/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        buf = bytearray()
        _error(408, "REQUEST_TIMEOUT", _read_response(sock, buf))
        assert buf == b"" and _closed(sock)
    _healthy(fast)


def test_a_head_trickling_in_byte_by_byte_is_still_cut_off(fast):
    """Every byte arriving in time does not extend the deadline of the whole head."""
    with _connect(fast) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        buf = bytearray()
        deadline = time.monotonic() + 20
        sock.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
        assert time.monotonic() < deadline, "the trickling head was never cut off"
        assert buf == b"" or buf.startswith(b"HTTP/1.1 408 "), bytes(buf)


def test_a_half_sent_body_gets_408_and_the_request_changes_nothing(fast):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = httpx.get(fast.url + "/api/projects", headers=auth).json()
    with _connect(fast) as sock:
        body = json.dumps({"name": "never finished"}).encode()
        sock.sendall((f"POST /api/projects HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:5])
        buf = bytearray()
        _error(408, "REQUEST_TIMEOUT", _read_response(sock, buf))
        assert _closed(sock)
    assert httpx.get(fast.url + "/api/projects", headers=auth).json() == before


def test_deadlines_apply_before_any_token_is_checked(fast):
    """Without a token a client gets no further, and no longer, than with one."""
    with _connect(fast) as sock:
        sock.sendall(b"GET /api/projects HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        _error(408, "REQUEST_TIMEOUT", _read_response(sock, bytearray()))
        assert _closed(sock)


def test_kept_alive_connections_and_whole_requests_are_served(fast):
    with _connect(fast) as sock:
        buf = bytearray()
        # Pipelined, then one by one on the same connection: all answered.
        sock.sendall(_request(fast) + _request(fast, "/api/projects"))
        assert _read_response(sock, buf)[0] == 200
        assert _read_response(sock, buf)[0] == 200
        # Longer than the head deadline between two requests: the keep-alive timeout rules
        # there, and the connection is still open.
        time.sleep(2.0)
        body = json.dumps({"name": "in two parts"}).encode()
        sock.sendall((f"POST /api/projects HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:4])
        sock.sendall(body[4:])
        status, _, got = _read_response(sock, buf)
        assert status == 201 and json.loads(got)["name"] == "in two parts"
        # Idle after the answer: closed by the keep-alive timeout, without an answer.
        assert _closed(sock) and buf == b""


def test_a_websocket_stream_outlives_every_deadline(fast):
    with WsClient(fast.ws_url + f"?token={TOKEN}") as ws:
        ws.barrier()
        time.sleep(3.0)  # several head and body deadlines
        assert not ws.closed.is_set()
        assert ws.barrier() == []
        httpx.post(fast.url + "/api/projects", json={"name": "live"},
                   headers={"Authorization": f"Bearer {TOKEN}"})
        assert ws.next()["type"] == "project:created"


# ------------------------------------------------------------------ head size
def test_a_head_over_the_limit_gets_431_and_is_closed(fast):
    with _connect(fast) as sock:
        sock.sendall(_request(fast, extra=f"X-Big: {'a' * 8000}\r\n", token=False))
        buf = bytearray()
        _error(431, "HEADERS_TOO_LARGE", _read_response(sock, buf))
        assert _closed(sock)
    # Many small headers count together, and so does the URL.
    many = "".join(f"X-H{i}: {'b' * 60}\r\n" for i in range(100))
    with _connect(fast) as sock:
        sock.sendall(_request(fast, extra=many))
        _error(431, "HEADERS_TOO_LARGE", _read_response(sock, bytearray()))
    with _connect(fast) as sock:
        sock.sendall(_request(fast, path="/api/tasks/" + "c" * 5000))
        _error(431, "HEADERS_TOO_LARGE", _read_response(sock, bytearray()))
    # A head within the limit is served as before.
    with _connect(fast) as sock:
        sock.sendall(_request(fast, extra=f"X-Fine: {'d' * 2000}\r\n"))
        assert _read_response(sock, bytearray())[0] == 200


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_huge_header_is_refused_without_being_buffered(make_server):
    srv = make_server()
    with _connect(srv) as sock:  # a header of 100 KB, default limit 64 KiB
        sock.sendall(_request(srv, extra=f"X-Big: {'a' * 100_000}\r\n", token=False))
        _error(431, "HEADERS_TOO_LARGE", _read_response(sock, bytearray()))
        assert _closed(sock)
    for _ in range(20):
        _healthy(srv)
    before = _rss_kib(srv.proc.pid)
    sent = 0
    answer = b""
    with _connect(srv) as sock:  # up to 20 MB of one header line that never ends
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
        chunk = b"e" * 65536
        try:
            while sent < 20 * 1024 * 1024 and not answer:
                sock.sendall(chunk)
                sent += len(chunk)
                if select.select([sock], [], [], 0)[0]:
                    answer = sock.recv(65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = answer or sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert sent < 20 * 1024 * 1024, "the server read the whole endless header"
    grown = _rss_kib(srv.proc.pid) - before
    assert grown < 4096, f"server memory grew by {grown} KiB"
    _healthy(srv)


# ------------------------------------------------------------------ connection count
def test_one_connection_past_the_limit_gets_503_and_the_server_recovers(make_server):
    srv = make_server(env={"MAESTRO_MAX_CONNECTIONS": "4", "MAESTRO_KEEPALIVE_TIMEOUT": "120"})
    held = []
    for _ in range(2):  # kept-alive HTTP connections
        sock = _connect(srv)
        sock.sendall(_request(srv))
        assert _read_response(sock, bytearray())[0] == 200
        held.append(sock)
    streams = [WsClient(srv.ws_url) for _ in range(2)]  # WebSocket streams count too
    try:
        for ws in streams:
            ws.barrier()
        with _connect(srv) as sock:
            sock.sendall(_request(srv))
            _error(503, "TOO_MANY_CONNECTIONS", _read_response(sock, bytearray()))
            assert _closed(sock)
        with pytest.raises(InvalidStatus):
            connect(srv.ws_url, open_timeout=10).close()
        # The connections already open are served as before.
        held[0].sendall(_request(srv))
        assert _read_response(held[0], bytearray())[0] == 200
        assert streams[0].barrier() == []
        # One closes: a new connection is accepted again.
        held.pop().close()

        def served() -> bool:
            with _connect(srv) as sock:
                sock.sendall(_request(srv))
                return _read_response(sock, bytearray())[0] == 200

        wait_until(served, what="a connection accepted after one closed")
    finally:
        for sock in held:
            sock.close()
        for ws in streams:
            ws.close()
    assert "refused a connection" in srv.log()
