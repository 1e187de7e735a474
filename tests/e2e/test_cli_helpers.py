"""Helpers for the CLI tests (no tests here): the real `maestro` CLI run as a subprocess against
a real server, in a clean environment: no MAESTRO_* variables leak in, HOME and the working
directory are temporary (so no `.env` or `~/.maestro/config` of the machine is read), and there
are no retries unless a test asks for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from server_fixtures import client_fixtures
from servers import ROOT


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        """stdout parsed as one JSON document (fails if anything else was printed)."""
        return json.loads(self.stdout)

    @property
    def data(self) -> Any:
        body = self.json
        assert body["success"] is True, body
        return body["data"]


def cli_env(home: Path, server_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env.update({"HOME": str(home), "MAESTRO_RETRIES": "0", "NO_COLOR": "1", "COLUMNS": "200",
                "PYTHONPATH": str(ROOT / "src")})
    env.pop("FORCE_COLOR", None)
    if server_url:
        env["MAESTRO_SERVER_URL"] = server_url
    env.update(extra)
    return env


class Cli:
    """`cli("task", "list", "--json", env={...})` runs `python -m maestro task list --json`."""

    def __init__(self, home: Path, server_url: str | None):
        self.home = home
        self.cwd = home / "work"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.server_url = server_url

    def env(self, **extra: str) -> dict[str, str]:
        return cli_env(self.home, self.server_url, **extra)

    def __call__(self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None,
                 cwd: Path | None = None, timeout: float = 60) -> Result:
        proc = subprocess.run([sys.executable, "-m", "maestro", *args], env=self.env(**(env or {})),
                              cwd=str(cwd or self.cwd), input=stdin if stdin is not None else "",
                              capture_output=True, text=True, timeout=timeout, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kwargs) -> Result:
        result = self(*args, **kwargs)
        assert result.code == 0, f"maestro {' '.join(args)} exited {result.code}:\n" \
            f"{result.stdout}\n{result.stderr}"
        return result

    def data(self, *args: str, **kwargs) -> Any:
        """Run with --json and return the envelope's data."""
        return self.ok(*args, "--json", **kwargs).data

    def many(self, *calls: tuple) -> list[Result]:
        """Run independent invocations side by side (each CLI start costs a few hundred ms):
        `cli.many(("task", "list"), (("task", "get", id), {"env": {...}}))`."""
        from concurrent.futures import ThreadPoolExecutor

        def one(call):
            if len(call) == 2 and isinstance(call[0], tuple) and isinstance(call[1], dict):
                return self(*call[0], **call[1])
            return self(*call)

        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(one, calls))


# ------------------------------------------------------------------ fixtures
# Used by the CLI test modules through `pytest_plugins = ["test_cli_helpers"]`, on the module's
# server (`srv`). `rest`: an HTTP client on it, to set up and check what the CLI did.
rest = client_fixtures()[0]


@pytest.fixture
def cli(srv, tmp_path):
    return Cli(tmp_path, srv.url)


@pytest.fixture
def project(rest):
    resp = rest.post("/api/projects", json={"name": "CLI project", "workingDir": "/tmp/shop"})
    assert resp.status_code == 201
    return resp.json()


def new_task(rest, project_id, **fields):
    """Create a task through the API (the CLI under test is not used to set up)."""
    resp = rest.post("/api/tasks", json={"projectId": project_id, "title": "Task", **fields})
    assert resp.status_code == 201, resp.text
    return resp.json()
