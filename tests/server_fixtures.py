"""The server fixtures, written once: a real server and its clients, for the scope and settings
a test module asks for. conftest.py makes the default set; a module that needs other settings
assigns its own server (`srv = server_fixture(env={...})`), and the default clients follow it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import WsClient, http_client
from servers import ServerProcess, running_server


def server_fixture(scope: str = "module", env: dict | None = None, data: Path | None = None):
    """A fixture: a started server with the settings `env` (on a copy of the data directory
    `data`, if given), one for each test or each module as `scope` says."""

    @pytest.fixture(scope=scope)
    def server(tmp_path_factory) -> ServerProcess:
        yield from running_server(tmp_path_factory.mktemp("srv"), env, data)

    return server


def client_fixtures(server: str = "srv", scope: str = "module"):
    """Fixtures `(api, ws_conn, ws)` on the server fixture named `server`."""

    @pytest.fixture(scope=scope)
    def api(request):
        with http_client(request.getfixturevalue(server)) as client:
            yield client

    @pytest.fixture(scope=scope)
    def ws_conn(request):
        with WsClient(request.getfixturevalue(server).ws_url) as client:
            yield client

    @pytest.fixture
    def ws(ws_conn):
        ws_conn.barrier()
        return ws_conn

    return api, ws_conn, ws


def server_fixtures(scope: str = "module", env: dict | None = None, name: str = "srv"):
    """Fixtures `(server, api, ws_conn, ws)`: a server as `server_fixture` makes it, and the
    clients of `client_fixtures` on it (`name` is the name the server fixture is given in the
    module)."""
    return (server_fixture(scope, env), *client_fixtures(name, scope))
