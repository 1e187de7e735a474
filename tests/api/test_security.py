"""Secure defaults through the real server: binding, Origin and Host checks, CORS, bearer tokens
on REST and WebSocket, hostile ids, and secrets kept out of logs."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from server_fixtures import client_fixtures, server_fixture
from servers import ROOT, free_port

TOKEN = "s3cret-user-token-0123456789abcdef"

# A server of its own for each test (`server`), and clients on it.
api, ws_conn, ws = client_fixtures("server", scope="function")


def data_snapshot(root) -> dict:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        if ".spares" in dirs:  # blank files the store makes ahead of time, never read
            dirs.remove(".spares")
        for name in files:
            if name in ("journal", "journal.old", ".maestro.lock"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def all_files(*roots) -> set[str]:
    found = set()
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            if ".spares" in dirs:  # numbered blank files made ahead of time, never read
                dirs.remove(".spares")
            # journal.old lives only while a checkpoint syncs it in the background
            found.update(os.path.join(dirpath, f) for f in files if f != "journal.old")
    return found


# ------------------------------------------------------------------ binding
def test_non_loopback_bind_without_token_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env.update({"HOST": "0.0.0.0", "PORT": str(free_port()),
                "DATA_DIR": str(tmp_path / "data")})
    proc = subprocess.run([sys.executable, "-m", "maestro", "serve"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "MAESTRO_TOKEN" in proc.stderr
    assert "0.0.0.0" in proc.stderr
    assert not (tmp_path / "data").exists(), "nothing is created when start-up is refused"


@pytest.mark.parametrize("name, value, message", [
    ("MAESTRO_CHECKPOINT_BYTES", "lots", "must be a number"),
    ("MAESTRO_CHECKPOINT_BYTES", "100", "at least 4096"),
    ("MAESTRO_PIPELINE_MIN_OPS", "0", "at least 1"),
    ("MAESTRO_AGENT_ENV", "AWS_PROFILE,DATABASE_URL", "DATABASE_URL is never handed to agents"),
    ("MAESTRO_AGENT_ENV", "PGPASSWORD", "PGPASSWORD is never handed to agents"),
    ("MAESTRO_AGENT_ENV", "MAESTRO_TOKEN", "MAESTRO_TOKEN is never handed to agents"),
    ("MAESTRO_AGENT_ENV", "MAESTRO_AGENT_ENV", "is never handed to agents"),
    ("MAESTRO_AGENT_ENV", "SESSION_DIR", "is never handed to agents"),
    ("MAESTRO_AGENT_ENV", "GH-TOKEN", "not a variable name"),
    ("MAESTRO_AGENT_ENV", "*", "not a variable name"),
    ("MAESTRO_HEADER_TIMEOUT", "0", "more than 0"),
    ("MAESTRO_BODY_TIMEOUT", "nan", "more than 0"),
    ("MAESTRO_KEEPALIVE_TIMEOUT", "a while", "number of seconds"),
    ("MAESTRO_MAX_CONNECTIONS", "0", "at least 1"),
    ("MAESTRO_MAX_HEADER_BYTES", "100", "at least 1024"),
    ("MAESTRO_MAX_HEADER_BYTES", str(1 << 30), "at most"),
])
def test_a_bad_setting_stops_the_start_with_its_name(tmp_path, name, value, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env.update({"PORT": str(free_port()), "DATA_DIR": str(tmp_path / "data"), name: value})
    proc = subprocess.run([sys.executable, "-m", "maestro", "serve"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert name in proc.stderr and message in proc.stderr
    assert not (tmp_path / "data").exists(), "nothing is created when start-up is refused"


def test_default_bind_is_loopback(server):
    # The server fixture sets HOST explicitly; a server without HOST must bind 127.0.0.1 too.
    from maestro.config import Settings
    assert Settings.from_env({}).host == "127.0.0.1"
    assert httpx.get(server.url + "/health").status_code == 200


# ------------------------------------------------------------------ browsers
def test_cross_origin_post_refused_and_nothing_changed(server, api):
    before = data_snapshot(server.data_dir)
    r = api.post("/api/projects", json={"name": "evil"},
                 headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    body = r.json()
    assert body["error"] is True and body["code"] == "ORIGIN_NOT_ALLOWED"
    assert "access-control-allow-origin" not in r.headers
    assert api.get("/api/projects").json() == []
    assert data_snapshot(server.data_dir) == before
    # The same page may not open the event stream either.
    with pytest.raises(InvalidStatus):
        connect(server.ws_url, origin="https://evil.example", open_timeout=5).close()


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:9999",
                                    "tauri://localhost"])
def test_local_origins_allowed_with_cors_headers(api, origin):
    r = api.post("/api/projects", json={"name": "ok"}, headers={"Origin": origin})
    assert r.status_code == 201
    assert r.headers["access-control-allow-origin"] == origin
    assert "origin" in r.headers["vary"].lower()
    assert r.headers.get("access-control-allow-origin") != "*"


def test_cross_origin_read_gets_no_cors_header(api):
    r = api.get("/api/projects", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200  # a read is answered, but the browser may not hand it over
    assert "access-control-allow-origin" not in r.headers


def test_configured_cors_origin_and_preflight(make_server):
    srv = make_server(env={"CORS_ORIGINS": "https://team.example"})
    r = httpx.options(srv.url + "/api/tasks", headers={
        "Origin": "https://team.example", "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "content-type,authorization"})
    assert r.status_code == 204 and r.content == b""
    assert r.headers["access-control-allow-origin"] == "https://team.example"
    assert "PATCH" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "content-type,authorization"
    r = httpx.options(srv.url + "/api/tasks", headers={"Origin": "https://evil.example"})
    assert r.status_code == 204 and "access-control-allow-origin" not in r.headers
    r = httpx.post(srv.url + "/api/projects", json={"name": "x"},
                   headers={"Origin": "https://team.example"})
    assert r.status_code == 201


def test_dns_rebinding_host_refused(server, api):
    before = data_snapshot(server.data_dir)
    r = api.post("/api/projects", json={"name": "x"}, headers={"Host": "attacker.example"})
    assert r.status_code in (421, 403)
    assert r.json()["error"] is True
    r = api.get("/api/projects", headers={"Host": f"attacker.example:{server.port}"})
    assert r.status_code in (421, 403)
    assert data_snapshot(server.data_dir) == before
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"[::1]:{server.port}"):
        assert api.get("/health", headers={"Host": host}).status_code == 200


def test_allowed_hosts_setting(make_server):
    srv = make_server(env={"MAESTRO_ALLOWED_HOSTS": "maestro.internal"})
    r = httpx.get(srv.url + "/health", headers={"Host": "maestro.internal:3000"})
    assert r.status_code == 200
    r = httpx.get(srv.url + "/health", headers={"Host": "other.internal"})
    assert r.status_code in (421, 403)


# ------------------------------------------------------------------ tokens
token_server = server_fixture("function", env={"MAESTRO_TOKEN": TOKEN})


def test_token_required_on_rest(token_server):
    url = token_server.url
    for method, path, body in [("GET", "/api/projects", None), ("GET", "/ws-status", None),
                               ("POST", "/api/projects", {"name": "x"})]:
        r = httpx.request(method, url + path, json=body)
        assert r.status_code == 401, path
        assert r.json()["code"] == "UNAUTHORIZED"
        r = httpx.request(method, url + path, json=body,
                          headers={"Authorization": "Bearer wrong-token"})
        assert r.status_code == 401
    assert httpx.get(url + "/api/projects").status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(url + "/api/projects", json={"name": "ok"}, headers=auth).status_code == 201
    assert len(httpx.get(url + "/api/projects", headers=auth).json()) == 1
    # Loopback gives no exemption, and the token never reaches the log.
    assert TOKEN not in token_server.log()


def test_health_without_credentials_is_a_bare_liveness_answer(token_server):
    """A load balancer's health check needs no token and learns nothing but "alive"; the
    details need the token, and a wrong token is still refused."""
    url = token_server.url
    r = httpx.get(url + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert httpx.get(url + "/health/").json() == {"status": "ok"}
    head = httpx.head(url + "/health")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == r.headers["content-length"]
    wrong = httpx.get(url + "/health", headers={"Authorization": "Bearer wrong-token"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "UNAUTHORIZED"
    full = httpx.get(url + "/health", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert full["status"] == "ok" and "storage" in full and "counts" in full
    # Only /health: everything else still needs the token.
    assert httpx.get(url + "/ws-status").status_code == 401


def test_health_on_a_server_without_a_token_has_the_details(api):
    body = api.get("/health").json()
    assert body["status"] == "ok" and "storage" in body


def test_short_token_on_an_exposed_address_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env.update({"HOST": "0.0.0.0", "PORT": str(free_port()), "MAESTRO_TOKEN": "tiny9",
                "DATA_DIR": str(tmp_path / "data")})
    proc = subprocess.run([sys.executable, "-m", "maestro", "serve"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "MAESTRO_TOKEN" in proc.stderr and "0.0.0.0" in proc.stderr and "32" in proc.stderr
    assert "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'" in proc.stderr
    assert "tiny9" not in proc.stderr  # the token itself is never printed
    assert not (tmp_path / "data").exists(), "nothing is created when start-up is refused"


def test_token_length_rule_applies_to_exposed_addresses_only():
    from maestro.config import ConfigError, Settings
    for host in ("0.0.0.0", "::", "192.0.2.10", "maestro.example.com"):
        with pytest.raises(ConfigError, match="at least 32"):
            Settings.from_env({"HOST": host, "MAESTRO_TOKEN": "x" * 31})
        assert Settings.from_env({"HOST": host, "MAESTRO_TOKEN": "x" * 32}).host == host
    for host in ("127.0.0.1", "localhost", "::1"):
        assert Settings.from_env({"HOST": host, "MAESTRO_TOKEN": "abc"}).token == "abc"


def test_token_required_on_websocket(token_server):
    with pytest.raises(InvalidStatus):
        connect(token_server.ws_url, open_timeout=5).close()
    with pytest.raises(InvalidStatus):
        connect(token_server.ws_url + "?token=nope", open_timeout=5).close()
    with connect(token_server.ws_url + f"?token={TOKEN}", open_timeout=5) as ws:
        ws.send('{"type":"ping"}')
        assert '"pong"' in ws.recv(timeout=5)
    with connect(token_server.ws_url,
                 additional_headers={"Authorization": f"Bearer {TOKEN}"}, open_timeout=5) as ws:
        httpx.post(token_server.url + "/api/projects", json={"name": "live"},
                   headers={"Authorization": f"Bearer {TOKEN}"})
        assert '"project:created"' in ws.recv(timeout=5)
    # The URL with the token is logged by the HTTP layer: never the token itself.
    log = token_server.log()
    assert "WebSocket /?token=[redacted]" in log
    assert TOKEN not in log and "token=nope" not in log


def test_preflight_needs_no_token(token_server):
    r = httpx.options(token_server.url + "/api/projects",
                      headers={"Origin": "http://localhost:5173",
                               "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204


# ------------------------------------------------------------------ hostile ids
HOSTILE = ["../../etc/passwd", "..", "/abs/path", "a/b", "x\x00y", "sess\u2215x", "ｓｅｓｓ",
           "a" * 129, "..\\..\\win", "sess_ok_but_%2e%2e"]


def test_hostile_client_session_ids_refused_nothing_written(server, api):
    p = api.post("/api/projects", json={"name": "p"}).json()
    before = all_files(server.data_dir, server.session_dir)
    for bad in HOSTILE:
        r = api.post("/api/sessions", json={"id": bad, "projectId": p["id"], "taskIds": []})
        assert r.status_code == 400, bad
        assert r.json()["code"] == "VALIDATION_ERROR"
    after = all_files(server.data_dir, server.session_dir)
    assert after == before
    assert api.get("/api/sessions").json() == []
    outside = all_files(server.tmp)
    assert all(f.startswith(str(server.tmp)) for f in outside)


@pytest.mark.parametrize("bad", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "x%00y", "%E2%88%95x"])
def test_hostile_url_ids_are_plain_lookups(server, api, bad):
    before = all_files(server.data_dir)
    for method in ("GET", "PATCH", "DELETE"):
        for base in ("/api/tasks/", "/api/sessions/", "/api/projects/"):
            r = api.request(method, base + bad, json={} if method == "PATCH" else None)
            assert r.status_code in (400, 404), (method, base, r.status_code)
            assert r.json()["error"] is True
    assert all_files(server.data_dir) == before


def test_hostile_ids_in_bodies(server, api):
    p = api.post("/api/projects", json={"name": "p"}).json()
    before = all_files(server.data_dir)
    for bad in HOSTILE:
        r = api.post("/api/tasks", json={"projectId": bad, "title": "t"})
        assert r.status_code in (400, 404)
        r = api.post("/api/tasks", json={"projectId": p["id"], "title": "t", "parentId": bad})
        assert r.status_code in (400, 404)
        r = api.post("/api/sessions", json={"projectId": p["id"], "taskIds": [bad]})
        assert r.status_code in (400, 404)
    assert all_files(server.data_dir) == before


def test_deeply_nested_json_refused_cleanly(server, api):
    deep = b"[" * 100_000 + b"]" * 100_000
    r = api.post("/api/projects", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 413)
    nested = b'{"name":"x","description":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"
    r = api.post("/api/projects", content=nested, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert api.get("/health").status_code == 200


def test_secret_env_values_never_logged(make_server):
    srv = make_server(env={"LOG_LEVEL": "debug"})
    with httpx.Client(base_url=srv.url) as api:
        p = api.post("/api/projects", json={"name": "p"}).json()
        secret = "sk-live-abcdef0123456789"
        s = api.post("/api/sessions", json={"projectId": p["id"], "taskIds": [],
                                            "env": {"OPENAI_API_KEY": secret}}).json()
        api.patch(f"/api/sessions/{s['id']}", json={"env": {"GITHUB_TOKEN": secret + "2"}})
        # The user's own requests see their data unchanged.
        assert api.get(f"/api/sessions/{s['id']}").json()["env"]["OPENAI_API_KEY"] == secret
    srv.stop()
    log = srv.log()
    assert secret not in log
