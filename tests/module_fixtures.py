"""Module-scoped fixtures shared by the black-box API test modules: one real server per module,
an HTTP client on it, and a WebSocket listener reset to "no pending events" before each test.

Import them into a test module (`from module_fixtures import api, srv, ws, ws_conn`)."""

from __future__ import annotations

import pytest
from helpers import WsClient, http_client, module_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    yield from module_server(tmp_path_factory)


@pytest.fixture(scope="module")
def api(srv):
    with http_client(srv) as client:
        yield client


@pytest.fixture(scope="module")
def ws_conn(srv):
    with WsClient(srv.ws_url) as client:
        yield client


@pytest.fixture
def ws(ws_conn):
    ws_conn.barrier()
    return ws_conn
