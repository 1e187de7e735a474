"""A real Maestro server in a subprocess on a free loopback port, with its own temporary data
and session directories, and the test PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
# Stand-ins for agents, and data written by other programs, for tests of any layer.
AGENTS = ROOT / "tests" / "agents"
FIXTURES = ROOT / "tests" / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A `maestro serve` subprocess. `url`, `ws_url`, `data_dir`, `session_dir` describe it;
    `start()`, `stop()` (SIGTERM), `kill()` (SIGKILL) and `restart()` control it."""

    def __init__(self, tmp: Path, env: dict | None = None, port: int | None = None):
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.session_dir = tmp / "sessions"
        self.port = port or free_port()
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.log_path = tmp / f"server-{self.port}.log"
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
        env.update({"PORT": str(self.port), "HOST": "127.0.0.1",
                    "DATA_DIR": str(self.data_dir), "SESSION_DIR": str(self.session_dir),
                    "MAESTRO_WORKTREE_DIR": str(self.tmp / "worktrees"),
                    "LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True, timeout: float = 20.0) -> "ServerProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "maestro", "serve"], env=self.env(),
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT))
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0,
                             headers=self.auth_headers()).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not answer within {timeout}s:\n{self.log()}")

    def auth_headers(self) -> dict:
        token = self.extra_env.get("MAESTRO_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._close_log()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def restart(self) -> "ServerProcess":
        self.stop()
        return self.start()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def postgres_dsn() -> str | None:
    """DSN of the test PostgreSQL, or None when none answers (under CI=true that is a failure,
    never a skip)."""
    dsn = os.environ.get("MAESTRO_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg
        with psycopg.connect(dsn, connect_timeout=3):
            return dsn
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI but not reachable at {dsn}: {exc}")
        return None


def running_server(tmp: Path, env: dict | None = None,
                   data: Path | None = None) -> Iterator[ServerProcess]:
    """Body of a server fixture: a started server in `tmp` (on a copy of the data directory
    `data`, if given), stopped (killed if it will not stop) at teardown."""
    srv = ServerProcess(tmp, env)
    if data is not None:
        shutil.copytree(data, srv.data_dir)
    srv.start()
    try:
        yield srv
    finally:
        try:
            srv.stop()
        except Exception:
            srv.kill()


def with_search_path(dsn: str, schema: str) -> str:
    """`dsn` with `options=-csearch_path=<schema>` added (URL form)."""
    sep = "&" if "?" in dsn else "?"
    return dsn + sep + urllib.parse.urlencode({"options": f"-csearch_path={schema}"})


@contextlib.contextmanager
def postgres_schema(prefix: str = "maestro_test") -> Iterator[tuple[str, str]]:
    """(url, schema): a fresh schema of the test PostgreSQL, which the url's connections use,
    dropped afterwards. Skips the test when no PostgreSQL answers (see postgres_dsn)."""
    import psycopg

    dsn = postgres_dsn()
    if dsn is None:
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432 (database test)")
    schema = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(dsn, schema), schema
    finally:
        # A test's servers may still be running here (fixtures end in reverse order: a test
        # asking for make_server before database has its schema dropped first), and one of
        # their statements can deadlock with the DROP: it is then run again.
        with psycopg.connect(dsn, autocommit=True) as admin:
            for attempt in range(10):
                try:
                    admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                    break
                except psycopg.errors.DeadlockDetected:
                    if attempt == 9:
                        raise
                    time.sleep(0.2)


def pg_env(url: str) -> dict:
    """The settings of a server on the PostgreSQL database `url`."""
    return {"DATABASE_TYPE": "postgres", "DATABASE_URL": url}


# Whole documents as the API shows them (tasks and sessions keep their growing lists in tables
# of their own; these views put them back).
PG_DOCUMENTS = {"project": "maestro_projects", "task": "maestro_task_documents",
                "session": "maestro_session_documents"}


def pg_stored(url: str) -> dict[str, dict[str, dict]]:
    """Every entity in the PostgreSQL database `url`, parsed, by kind and id."""
    import json

    import psycopg

    out: dict[str, dict[str, dict]] = {}
    with psycopg.connect(url) as conn:
        for kind, table in PG_DOCUMENTS.items():
            rows = conn.execute(f"SELECT id, data::text FROM {table}").fetchall()
            out[kind] = {eid: json.loads(text) for eid, text in rows}
    return out


def processes(marker: bytes, *, arg: str | None = None, parent: int | None = None) -> list[int]:
    """Pids of the processes whose command line holds `marker` (and the argument `arg`, and
    whose parent is `parent`, when given): a server's helper processes."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if not any(marker in a for a in args):
            continue
        if arg is not None and arg.encode() not in args:
            continue
        if parent is not None and int(stat[stat.rindex(")") + 2:].split()[1]) != parent:
            continue
        found.append(int(pid))
    return found
