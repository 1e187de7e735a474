"""Stopping the server with SIGTERM or SIGINT (SPEC §5.4, issue 2): it stops accepting
connections, finishes the requests in flight, closes WebSocket clients with a close frame,
flushes (empty journal, complete files) and exits 0."""

from __future__ import annotations

import json
import signal
import socket
import threading

import httpx
import pytest
from helpers import WsClient, ok, pretty, wait_until


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return False
    except OSError:
        return True


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of one HTTP/1.1 response with a Content-Length."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {raw!r}"
        raw += chunk
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int({k.lower(): v for k, v in headers.items()}["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        body += chunk
    return int(lines[0].split()[1]), json.loads(body[:length])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_finishes_in_flight_requests_closes_websockets_and_exits_0(make_server, signum):
    srv = make_server()
    with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as api:
        ok(api.post("/api/projects", json={"name": "before"}), 201)
    ws = WsClient(srv.ws_url)
    ws.barrier()

    # A request in flight: the application is already reading its body (it asked for it with
    # "100 Continue") when the signal arrives; the body comes after the signal.
    body = json.dumps({"name": "sent across the shutdown", "description": "x" * 2000}).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10.0)
    sock.sendall(b"POST /api/projects HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                 b"Expect: 100-continue\r\n\r\n" % (srv.port, len(body)))
    interim = b""
    while b"\r\n\r\n" not in interim:
        interim += sock.recv(1)
    assert interim.startswith(b"HTTP/1.1 100"), interim
    srv.proc.send_signal(signum)

    wait_until(lambda: refuses_connections(srv.port), what="listening socket closed")
    assert ws.closed.wait(10), "WebSocket client was not disconnected"
    assert ws.conn.close_code in (1001, 1012), ws.conn.close_code  # a close frame, not a drop
    assert srv.proc.poll() is None, "exited before the request in flight was answered"

    sock.sendall(body)
    status, created = read_response(sock)
    sock.close()
    ws.close()
    assert status == 201 and created["name"] == "sent across the shutdown"

    assert srv.proc.wait(timeout=15) == 0
    data = srv.data_dir
    assert (data / "journal").stat().st_size == 0
    assert (data / "projects" / f"{created['id']}.json").read_bytes() == pretty(created)
    assert len(list((data / "projects").iterdir())) == 2

    srv.start()  # the lock was released and everything reloads
    with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as api:
        assert [p["name"] for p in ok(api.get("/api/projects"))] \
            == ["before", "sent across the shutdown"]


def test_sigterm_under_concurrent_writes_keeps_every_acknowledged_one(make_server):
    srv = make_server()
    with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as api:
        project = ok(api.post("/api/projects", json={"name": "P"}), 201)
        task = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "t"}), 201)
    acknowledged: list[str] = []
    failures: list[str] = []
    started = threading.Barrier(5)

    def writer(n: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as api:
            started.wait()
            for i in range(10_000):
                message = f"w{n}-{i}"
                try:
                    resp = api.post(f"/api/tasks/{task['id']}/timeline",
                                    json={"message": message})
                except httpx.TransportError:
                    return  # not accepted any more: never acknowledged
                if resp.status_code != 200:
                    failures.append(f"{resp.status_code} {resp.text}")
                    return
                acknowledged.append(message)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    started.wait()
    wait_until(lambda: len(acknowledged) >= 40, what="writes under way")
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(20)
    assert srv.proc.wait(timeout=15) == 0
    assert failures == []
    assert (srv.data_dir / "journal").stat().st_size == 0
    path = srv.data_dir / "tasks" / project["id"] / f"{task['id']}.json"
    stored = json.loads(path.read_bytes())
    assert path.read_bytes() == pretty(stored)
    messages = {e.get("message") for e in stored["timeline"]}
    assert set(acknowledged) <= messages
