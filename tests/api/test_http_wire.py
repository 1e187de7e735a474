"""HTTP/1.1 on the wire, through raw sockets: API answers leave as one complete response
(status line, headers, JSON body) on keep-alive connections, pipelined requests are answered
in order, HEAD gets the headers without the body, and HTTP/1.0 or `Connection: close` closes
the connection after the answer."""

from __future__ import annotations

import json
import socket

from helpers import ok


def _connect(srv) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket, buf: bytearray, head: bool = False):
    """One response from `buf` + the socket: (status, headers, body); the rest stays in buf."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a full response"
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[:end + 4]
    status = int(lines[0].split()[1])
    assert lines[0].startswith("HTTP/1.1 ")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"duplicate header {name}"
        headers[name.lower()] = value.strip()
    length = 0 if head else int(headers["content-length"])
    while len(buf) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a body"
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return status, headers, body


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _project(api) -> dict:
    return ok(api.post("/api/projects", json={"name": "wire"}), 201)


def test_pipelined_keep_alive_requests_are_answered_in_order(srv, api):
    project = _project(api)
    tasks = [ok(api.post("/api/tasks", json={"projectId": project["id"], "title": f"t{i}"}),
                201) for i in range(3)]
    host = f"127.0.0.1:{srv.port}"
    requests = b"".join(
        f"GET /api/tasks/{t['id']} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for t in tasks)
    requests += f"GET /api/tasks/task_missing HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    body = json.dumps({"title": "patched over the wire"}).encode()
    requests += (f"PATCH /api/tasks/{tasks[0]['id']} HTTP/1.1\r\nHost: {host}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                 ).encode() + body
    with _connect(srv) as sock:
        sock.sendall(requests)
        buf = bytearray()
        for task in tasks:
            status, headers, got = _read_response(sock, buf)
            assert status == 200
            assert headers["content-type"] == "application/json; charset=utf-8"
            assert "connection" not in headers
            assert json.loads(got) == task
        status, _, got = _read_response(sock, buf)
        assert status == 404 and json.loads(got)["code"] == "TASK_NOT_FOUND"
        status, _, got = _read_response(sock, buf)
        assert status == 200 and json.loads(got)["title"] == "patched over the wire"
        # Still open: one more request on the same connection.
        sock.sendall(f"GET /api/projects/{project['id']} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                     .encode())
        status, _, got = _read_response(sock, buf)
        assert status == 200 and json.loads(got) == project
        assert buf == b""


def test_head_gets_the_headers_of_get_without_a_body(srv, api):
    project = _project(api)
    host = f"127.0.0.1:{srv.port}"
    with _connect(srv) as sock:
        buf = bytearray()
        sock.sendall(f"GET /api/projects/{project['id']} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                     .encode())
        _, get_headers, body = _read_response(sock, buf)
        sock.sendall(f"HEAD /api/projects/{project['id']} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                     f"GET /api/projects/{project['id']} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                     .encode())
        status, headers, _ = _read_response(sock, buf, head=True)
        assert status == 200
        assert headers["content-length"] == str(len(body))
        assert headers["content-type"] == get_headers["content-type"]
        # The next answer starts right after HEAD's headers: no body was sent for HEAD.
        status, _, again = _read_response(sock, buf)
        assert status == 200 and again == body


def test_http_1_0_and_connection_close_end_the_connection_after_the_answer(srv, api):
    project = _project(api)
    host = f"127.0.0.1:{srv.port}"
    for request in (f"GET /api/projects/{project['id']} HTTP/1.0\r\nHost: {host}\r\n\r\n",
                    f"GET /api/projects/{project['id']} HTTP/1.1\r\nHost: {host}\r\n"
                    "Connection: close\r\n\r\n"):
        with _connect(srv) as sock:
            sock.sendall(request.encode())
            buf = bytearray()
            status, headers, body = _read_response(sock, buf)
            assert status == 200 and json.loads(body) == project
            assert headers["connection"] == "close"
            assert buf == b"" and _closed(sock)


def test_a_large_answer_arrives_whole_and_the_next_one_follows_it(srv, api):
    """A list larger than what is joined to its head in one write (256 KiB) is written as head
    + body: on a pipelined connection its bytes still come whole and in order, and so does the
    HEAD answer and the small answer behind it."""
    project = _project(api)
    text = "x" * 120_000
    for i in range(4):
        ok(api.post("/api/tasks", json={"projectId": project["id"], "title": f"big {i}",
                                        "description": text}), 201)
    expected = ok(api.get("/api/tasks", params={"projectId": project["id"]}))
    path = f"/api/tasks?projectId={project['id']}"
    host = f"127.0.0.1:{srv.port}"
    requests = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                f"HEAD {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"
                f"GET /api/projects/{project['id']} HTTP/1.1\r\nHost: {host}\r\n\r\n").encode()
    with _connect(srv) as sock:
        sock.sendall(requests)
        buf = bytearray()
        status, headers, body = _read_response(sock, buf)
        assert status == 200 and int(headers["content-length"]) == len(body) > 256 << 10
        assert json.loads(body) == expected
        status, head_headers, _ = _read_response(sock, buf, head=True)
        assert status == 200 and head_headers["content-length"] == headers["content-length"]
        status, _, body = _read_response(sock, buf)
        assert status == 200 and json.loads(body) == project
        assert not buf
