"""The CLI where it meets a server's life: `maestro watch` following events made by other
commands and surviving a server restart, retries while a server comes up, tokens, and
`session spawn`."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading

import httpx
from helpers import wait_for_item, wait_until
from server_fixtures import server_fixture
from test_cli_helpers import Cli


class Lines:
    """Collects a subprocess's stdout lines on a thread, so a test can wait for one."""

    def __init__(self, stream):
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.queue.put(line.rstrip("\n"))

    def wait_for(self, predicate, timeout: float = 20.0) -> str:
        return wait_for_item(lambda left: self.queue.get(timeout=left), predicate, timeout,
                             self.seen, "line")


def ws_clients(url: str) -> int:
    try:
        return httpx.get(f"{url}/ws-status", timeout=2).json()["connectedClients"]
    except httpx.HTTPError:
        return -1


def start_watch(cli: Cli, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "maestro", "watch", *args],
                            env=cli.env(**(env or {})), cwd=str(cli.cwd), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def test_watch_follows_other_commands_and_survives_a_restart(server, tmp_path):
    cli = Cli(tmp_path, server.url)
    project, other = (cli.data("project", "create", name) for name in ("Watched", "Other"))
    task = cli.data("task", "create", "Watched task", "--project", project["id"])

    as_json = start_watch(cli, "--json", "--project", project["id"])
    readable = start_watch(cli, "--task", task["id"])
    try:
        json_lines, human_lines = Lines(as_json.stdout), Lines(readable.stdout)
        wait_until(lambda: ws_clients(server.url) == 2, what="both watchers connected")

        # Events of another project are filtered out; they happen first, so had they passed
        # the filter they would show up before the ones waited for below.
        cli.ok("task", "create", "Elsewhere", "--project", other["id"])
        created = cli.data("task", "create", "Second", "--project", project["id"])
        env = {"MAESTRO_SESSION_ID": "sess_watched", "MAESTRO_PROJECT_ID": project["id"],
               "MAESTRO_TASK_IDS": task["id"]}
        cli.ok("session", "register", env=env)
        cli.ok("report", "progress", "halfway there", "--task", task["id"], env=env)

        first = json.loads(json_lines.wait_for(lambda line: "task:created" in line))
        assert first["success"] is True
        assert first["data"]["type"] == "task:created"
        assert first["data"]["data"]["id"] == created["id"]
        json_lines.wait_for(lambda line: '"session:created"' in line)
        report = json_lines.wait_for(lambda line: "halfway there" in line)
        assert json.loads(report)["data"]["type"] == "session:updated"
        assert all(json.loads(line)["data"]["data"].get("title") != "Elsewhere"
                   for line in json_lines.seen)

        # One readable line per event, only about the watched task and its session.
        line = human_lines.wait_for(lambda text: "agent:working" in text)
        assert "task:updated" in line and task["id"] in line and "Watched task" in line
        said = human_lines.wait_for(lambda text: "halfway there" in text)
        assert "session:updated" in said and "sess_watched" in said and "progress" in said
        assert not any("Second" in text for text in human_lines.seen)

        server.restart()
        wait_until(lambda: ws_clients(server.url) == 2, timeout=30,
                   what="both watchers reconnected")
        after = cli.data("task", "create", "After restart", "--project", project["id"])
        again = json.loads(json_lines.wait_for(lambda text: after["id"] in text))
        assert again["data"]["type"] == "task:created"
    finally:
        notes = stop(as_json)
        stop(readable)
    assert "reconnected" in notes
    assert "Traceback" not in notes


def test_retries_wait_for_a_server_that_comes_up(make_server, tmp_path):
    srv = make_server(start=False)
    cli = Cli(tmp_path, srv.url)
    proc = subprocess.Popen([sys.executable, "-m", "maestro", "project", "list", "--json"],
                            env=cli.env(MAESTRO_RETRIES="8", MAESTRO_RETRY_DELAY="200"),
                            cwd=str(cli.cwd), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    srv.start()
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert json.loads(out) == {"success": True, "data": []}

    # A 4xx is an answer, never retried: with a one-minute retry delay this still returns at
    # once (the subprocess timeout would fail the test otherwise).
    not_found = cli("project", "get", "proj_missing",
                    env={"MAESTRO_RETRIES": "3", "MAESTRO_RETRY_DELAY": "60000"}, timeout=30)
    assert not_found.code == 2


def test_token_is_sent_as_bearer_and_never_shown(make_server, tmp_path):
    token = "cli-test-token-0123456789"
    srv = make_server(env={"MAESTRO_TOKEN": token})
    cli = Cli(tmp_path, srv.url)
    refused, allowed, watch_refused = cli.many(
        ("project", "list"), (("project", "list", "--json"), {"env": {"MAESTRO_TOKEN": token}}),
        ("watch", "--all"))
    assert refused.code == 4
    assert "token" in refused.stderr.lower()
    assert allowed.data == []
    assert watch_refused.code == 4
    assert token not in allowed.stdout + allowed.stderr

    watcher = start_watch(cli, "--json", "--all", env={"MAESTRO_TOKEN": token})
    try:
        lines = Lines(watcher.stdout)
        wait_until(lambda: httpx.get(f"{srv.url}/ws-status", timeout=2,
                                     headers={"Authorization": f"Bearer {token}"}
                                     ).json()["connectedClients"] == 1,
                   what="the watcher connected with its token")
        made = cli.data("project", "create", "Secret", env={"MAESTRO_TOKEN": token})
        assert json.loads(lines.wait_for(lambda text: made["id"] in text))["data"]["type"] == \
            "project:created"
    finally:
        stop(watcher)


# The UI launcher only broadcasts the spawn request; no agent process is started.
ui_server = server_fixture("function", env={"MAESTRO_LAUNCHER": "ui"})


def test_session_spawn_asks_the_server_for_an_agent(ui_server, tmp_path):
    cli = Cli(tmp_path, ui_server.url)
    project = cli.data("project", "create", "Spawn", "--dir", str(tmp_path))
    task = cli.data("task", "create", "Build the thing with a rather long title", "--project",
                    project["id"])
    parent = cli.data("session", "register",
                      env={"MAESTRO_SESSION_ID": "sess_orchestrator_1",
                           "MAESTRO_PROJECT_ID": project["id"], "MAESTRO_ROLE": "orchestrator"})

    result = cli.data("session", "spawn", "--task", task["id"], "--reason", "split the work",
                      env={"MAESTRO_SESSION_ID": parent["id"]})
    session = httpx.get(f"{ui_server.url}/api/sessions/{result['sessionId']}").json()
    assert session["status"] == "spawning"
    assert session["taskIds"] == [task["id"]]
    assert session["name"] == "Worker: " + task["title"][:30] + "..."
    assert session["metadata"]["spawnedBy"] == parent["id"]
    assert session["metadata"]["spawnSource"] == "orchestrator"
    assert session["metadata"]["role"] == "worker"
    assert session["metadata"]["context"]["reason"] == "split the work"
    assert not any("task start" in c for c in session["metadata"]["context"]["initialCommands"])

    missing, bad_id = cli.many(("session", "spawn", "--task", "task_missing"),
                               ("session", "spawn", "--task", "a/b"))
    assert missing.code == 2 and "Task not found" in missing.stderr
    assert bad_id.code == 1 and "Invalid task id" in bad_id.stderr
