"""The fixtures every layer shares, defined once.

The tests are in layers, one folder each: domain (pure rules), service (the service on the
in-memory store), store (the store contract and what lies under it), api (HTTP and WebSocket
through a real server), e2e (CLI, launcher, agents, MCP, crashes) and browser (the dashboard
in Chromium). Support modules shared by the layers stay in tests/.

A test module gets one real server for all its tests: `srv` (a started `ServerProcess`), `api`
(an HTTP client on it), `ws_conn` (a WebSocket client on it) and `ws` (that client with no
event pending, for each test). A module that needs other settings replaces `srv` with
`srv = server_fixture(env={...})` (server_fixtures.py) and the clients follow it. `server` is a
fresh server for each test (`client_fixtures("server", scope="function")` gives clients on it),
and `make_server` makes as many as a test wants."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings
from in_process import IN_PROCESS_LAYERS, forbid_processes
from server_fixtures import server_fixture, server_fixtures
from servers import ServerProcess

# Property tests that name no number of examples draw few for a quick run of a layer and many
# for the whole suite (`make test` sets HYPOTHESIS_PROFILE=thorough).
settings.register_profile("quick", max_examples=40)
settings.register_profile("thorough", max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))

srv, api, ws_conn, ws = server_fixtures()
server = server_fixture("function")


@pytest.fixture
def make_server(tmp_path):
    """Factory: make_server(env={...}) -> started ServerProcess (stopped at teardown)."""
    servers: list[ServerProcess] = []

    def factory(env: dict | None = None, start: bool = True, tmp: Path | None = None,
                port: int | None = None) -> ServerProcess:
        base = tmp or (tmp_path / f"srv{len(servers)}")
        base.mkdir(parents=True, exist_ok=True)
        srv = ServerProcess(base, env, port)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield factory
    for srv in servers:
        try:
            srv.stop()
        except Exception:
            srv.kill()


@pytest.fixture(autouse=True)
def in_process_layer(request, monkeypatch):
    """The tests of tests/domain and tests/service start no process (see in_process.py)."""
    if request.path.parent.name in IN_PROCESS_LAYERS:
        forbid_processes(monkeypatch)
