"""deploy/haproxy.cfg in front of two real replicas (`maestro serve` on one PostgreSQL database):
REST and WebSockets reach both through it, both serve the same data, and when one replica stops
its clients carry on through the other (requests retried, WebSockets reconnected with
`?since=`, missing nothing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import wait_until
from servers import ROOT, free_port
from test_postgres_server import database, pg_env  # noqa: F401 - the PostgreSQL fixture
from websockets.sync.client import connect

CONFIG = ROOT / "deploy" / "haproxy.cfg"


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy",
                                                                        os.X_OK) else None)
    if found is None:
        message = "haproxy is not installed (scripts/install-test-deps.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def proxy_config(proxy_port: int, ports: list[int], folder: Path) -> Path:
    """The deploy configuration with its three addresses changed to the test's ports."""
    text = CONFIG.read_text()
    for old, new in (("127.0.0.1:8080", f"127.0.0.1:{proxy_port}"),
                     ("127.0.0.1:3001", f"127.0.0.1:{ports[0]}"),
                     ("127.0.0.1:3002", f"127.0.0.1:{ports[1]}")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = folder / "haproxy.cfg"
    path.write_text(text)
    return path


class Stream:
    """A WebSocket client through the proxy, collecting envelopes in the background."""

    def __init__(self, url: str):
        self.ws = connect(url, open_timeout=5)
        self.events: list[dict] = []
        self.closed = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for message in self.ws:
                self.events.append(json.loads(message))
        except Exception:
            pass
        finally:
            self.closed.set()

    def last_seq(self) -> int:
        return max(e["seq"] for e in self.events if "seq" in e)

    def saw(self, kind: str, entity_id: str) -> bool:
        return any(e.get("type") == kind and (e.get("data") or {}).get("id") == entity_id
                   for e in self.events)

    def close(self) -> None:
        self.ws.close()


def clients_of(srv) -> int:
    return httpx.get(srv.url + "/health", timeout=5).json()["websocket"]["clients"]


@pytest.fixture
def proxied(make_server, database, tmp_path):
    """Two replicas on one database and HAProxy in front of them: (proxy URL, replicas)."""
    binary = haproxy_binary()
    replicas = [make_server(env={"MAESTRO_REPLICA_ID": f"replica-{name}", **pg_env(database)})
                for name in ("a", "b")]
    proxy_port = free_port()
    config = proxy_config(proxy_port, [srv.port for srv in replicas], tmp_path)
    check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log = open(tmp_path / "haproxy.log", "wb")
    proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{proxy_port}"
    try:
        # Up, and both replicas seen healthy by its checks.
        wait_until(lambda: len(replicas_answering(url, 20)) == 2, timeout=15)
        yield url, replicas
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def replicas_answering(url: str, tries: int) -> set[str]:
    """The replicas that answered `tries` GET /health through the proxy, each on a new
    connection."""
    seen = set()
    for _ in range(tries):
        try:
            r = httpx.get(url + "/health", timeout=5)
        except httpx.HTTPError:
            continue
        if r.status_code == 200 and "replica" in r.json():
            seen.add(r.json()["replica"]["id"])
    return seen


def test_rest_and_websockets_reach_both_replicas_and_survive_one_stopping(proxied):
    url, (a, b) = proxied
    assert replicas_answering(url, 20) == {"replica-a", "replica-b"}
    # Both serve the same data, whichever one a write went to.
    with httpx.Client(base_url=url, timeout=10, trust_env=False) as api:
        project = api.post("/api/projects", json={"name": "through the proxy"}).json()
    for srv in (a, b):
        wait_until(lambda srv=srv: httpx.get(f"{srv.url}/api/projects/{project['id']}",
                                             timeout=5).status_code == 200, timeout=5)
    # WebSockets: new ones go to the replica holding fewer, so two land one on each.
    ws_url = url.replace("http", "ws") + "/"
    streams = [Stream(ws_url), Stream(ws_url)]
    wait_until(lambda: (clients_of(a), clients_of(b)) == (1, 1), timeout=5)
    with httpx.Client(base_url=url, timeout=10, trust_env=False) as api:
        task = api.post("/api/tasks", json={"projectId": project["id"], "title": "t"}).json()
    for stream in streams:
        wait_until(lambda s=stream: s.saw("task:created", task["id"]), timeout=5)

    # One replica stops: its WebSocket closes, every request goes on through the other.
    a.stop()
    wait_until(lambda: sum(s.closed.is_set() for s in streams) == 1, timeout=15)
    answered = []
    dropped_reads = 0
    with httpx.Client(base_url=url, timeout=10, trust_env=False) as api:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # across the moment the proxy marks it down
            try:
                r = api.get(f"/api/projects/{project['id']}")
            except httpx.TransportError:
                # At the very moment the proxy marks the replica down it may close a
                # connection of it; a client reads again once (as the CLI does).
                dropped_reads += 1
                r = api.get(f"/api/projects/{project['id']}")
            answered.append(r.status_code)
            time.sleep(0.05)
        later = api.post("/api/tasks", json={"projectId": project["id"], "title": "later"})
        assert later.status_code == 201, later.text
    assert dropped_reads <= 1
    assert set(answered) == {200}, answered
    # The client whose replica stopped reconnects through the proxy, to the replica still up,
    # asking for what it missed meanwhile.
    dropped = next(s for s in streams if s.closed.is_set())
    again = Stream(ws_url + f"?since={dropped.last_seq()}")
    try:
        wait_until(lambda: again.saw("task:created", later.json()["id"]), timeout=5)
        wait_until(lambda: clients_of(b) >= 2, timeout=5)
        with httpx.Client(base_url=url, timeout=10, trust_env=False) as api:
            last = api.post("/api/tasks", json={"projectId": project["id"],
                                                "title": "after"}).json()
        wait_until(lambda: again.saw("task:created", last["id"]), timeout=5)
        survivor = next(s for s in streams if not s.closed.is_set())
        wait_until(lambda: survivor.saw("task:created", last["id"]), timeout=5)
        assert sum(s.closed.is_set() for s in streams) == 1  # b's client never noticed
    finally:
        again.close()
        for stream in streams:
            stream.close()
