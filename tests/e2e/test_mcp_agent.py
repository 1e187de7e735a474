"""Agents Maestro spawns find its MCP tools with no set-up: the launcher's `worker init` starts
Claude Code with a per-session `--mcp-config` file (a stand-in `claude` on PATH reads it, starts
the configured server and works through it), Codex with `mcp_servers` overrides that keep the
token off the command line; `maestro mcp install` prints or writes a person's configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from helpers import WsClient, ok
from test_agent_identity import USER_TOKEN
from test_launcher import AGENTS, Stream, log_lines, reap_agents, until_status

from maestro.mcp.wiring import AgentWiring, replace_codex_table, write_agent_config
from maestro.spawn.agent import agent_command

MANIFEST = {"tasks": [{"id": "task_1", "title": "T", "projectId": "proj_1",
                       "acceptanceCriteria": ["ok"]}],
            "session": {"model": "sonnet", "permissionMode": "acceptEdits"}}


@pytest.fixture
def fake_claude(tmp_path) -> Path:
    """A folder holding a `claude` that is tests/agents/mcp_agent.py."""
    folder = tmp_path / "bin"
    folder.mkdir()
    shim = folder / "claude"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{AGENTS / "mcp_agent.py"}" "$@"\n')
    shim.chmod(0o755)
    return folder


def test_a_spawned_claude_agent_works_through_the_mcp_tools(make_server, fake_claude,
                                                            tmp_path):
    srv = make_server(env={"MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_AGENT": "claude",
                           "MAESTRO_TMUX": "0",
                           "PATH": f"{fake_claude}{os.pathsep}{os.environ['PATH']}"})
    user = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {USER_TOKEN}"},
                        timeout=10)
    try:
        with WsClient(srv.ws_url + f"?token={USER_TOKEN}") as ws:
            project = ok(user.post("/api/projects", json={"name": "Shop",
                                                          "workingDir": str(tmp_path)}), 201)
            task = ok(user.post("/api/tasks", json={"projectId": project["id"],
                                                    "title": "Add login",
                                                    "priority": "high"}), 201)
            ok(user.post("/api/tasks", json={"projectId": project["id"], "title": "Later",
                                             "priority": "low"}), 201)
            stream = Stream(ws)
            sid = ok(user.post("/api/sessions/spawn", json={
                "projectId": project["id"], "taskIds": [task["id"]]}), 201)["sessionId"]
            stream.wait_for(until_status(sid, "completed", "failed"), timeout=90)
            lines = log_lines(user, sid)
            session = ok(user.get(f"/api/sessions/{sid}"))
            assert session["status"] == "completed", lines
        config_file = srv.session_dir / sid / "mcp.json"
        assert f"agent: mcp-config={config_file} allowedTools=Bash(maestro:*),mcp__maestro" \
            in lines
        assert "mcp: tools=session_context,task_ready,task_claim,task_get,task_report," \
               "task_release,task_create" in lines
        assert f"mcp: session={sid} role=worker tasks={task['id']}" in lines
        assert f"mcp: claimed={task['id']} token=1" in lines
        assert f"mcp: reported={task['id']} status=completed" in lines
        assert lines[-1] == "agent: done"

        done = ok(user.get(f"/api/tasks/{task['id']}"))
        assert done["status"] == "completed" and done.get("claim") is None
        assert [e["message"] for e in session["timeline"]
                if e["type"] == "task_completed"] == ["done through MCP"]
        # The per-session configuration: this server's Python, the session's identity and
        # its token (the file was readable by its user only, and is gone with the agent).
        entry = next(line for line in lines if line.startswith("agent: entry "))
        assert entry == (f"agent: entry mode=600 command={sys.executable} args=-m maestro mcp "
                         "env=HOME,MAESTRO_PROJECT_ID,MAESTRO_ROLE,MAESTRO_SERVER_URL,"
                         "MAESTRO_SESSION_ID,MAESTRO_SESSION_TOKEN,MAESTRO_TASK_IDS"
                         + (",PYTHONPATH" if os.environ.get("PYTHONPATH") else "")
                         + f" session={sid}")
        assert not config_file.exists()
        assert not any("mst." in line for line in lines)  # the token never reached the log
        token_digest = (srv.session_dir / sid / "token.sha256")
        assert not token_digest.exists()  # the session ended: its token is dead anyway
    finally:
        user.close()
        reap_agents(srv)


def test_codex_gets_the_server_without_the_token_on_its_command_line(tmp_path):
    env = {"MAESTRO_SERVER_URL": "http://localhost:3000", "MAESTRO_API_URL":
           "http://127.0.0.1:3000", "MAESTRO_SESSION_ID": "sess_1", "MAESTRO_PROJECT_ID":
           "proj_1", "MAESTRO_SESSION_TOKEN": "mst.sess_1.secret", "MAESTRO_ROLE": "worker",
           "PYTHONPATH": '/src/"quoted" path', "UNRELATED": "x"}
    wiring = write_agent_config(tmp_path, env)
    argv = agent_command("codex", MANIFEST, "Do it", tmp_path / "p.md", tmp_path / "m.json",
                         "sess_1", mcp=wiring)
    assert argv[:2] == ["codex", "exec"] and argv[-2:] == ["--skip-git-repo-check", "Do it"]
    assert not any("secret" in arg for arg in argv)
    overrides = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-c"]
    values = {}
    for override in overrides:
        key, _, value = override.partition("=")
        values[key] = tomllib.loads(f"v = {value}")["v"]
    assert values["mcp_servers.maestro.command"] == sys.executable
    assert values["mcp_servers.maestro.args"] == ["-m", "maestro", "mcp"]
    assert values["mcp_servers.maestro.env"] == {
        "MAESTRO_SERVER_URL": "http://127.0.0.1:3000", "MAESTRO_SESSION_ID": "sess_1",
        "MAESTRO_PROJECT_ID": "proj_1", "MAESTRO_ROLE": "worker",
        "PYTHONPATH": '/src/"quoted" path'}
    assert values["mcp_servers.maestro.env_vars"] == ["MAESTRO_SESSION_TOKEN"]
    interactive = dict(MANIFEST, session={"model": "opus", "permissionMode": "interactive"})
    argv = agent_command("claude", interactive, "Do it", tmp_path / "p.md",
                         tmp_path / "m.json", "sess_1", mcp=wiring)
    # `--mcp-config` takes several values: the prompt must not follow it.
    assert argv[:3] == ["claude", "--mcp-config", str(tmp_path / "mcp.json")]
    assert argv[-1] == "Do it" and argv[3].startswith("--")
    custom = agent_command("my-agent --tools {mcp_config} {prompt_file}", MANIFEST, "Do it",
                           tmp_path / "p.md", tmp_path / "m.json", "sess_1", mcp=wiring)
    assert custom == ["my-agent", "--tools", str(tmp_path / "mcp.json"), str(tmp_path / "p.md")]
    bare = agent_command("claude", MANIFEST, "Do it", tmp_path / "p.md", tmp_path / "m.json",
                         "sess_1")
    assert "--mcp-config" not in bare and bare[-1] == "Bash(maestro:*)"
    assert isinstance(wiring, AgentWiring) and wiring.token_var == "MAESTRO_SESSION_TOKEN"


def maestro(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maestro", *args], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_mcp_install_prints_or_writes_a_persons_configuration(tmp_path):
    home = tmp_path / "home"
    project_dir = tmp_path / "repo"
    project_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAESTRO_", "CODEX_"))}
    env.update(HOME=str(home), MAESTRO_SERVER_URL="http://127.0.0.1:4000",
               MAESTRO_PROJECT_ID="proj_9", MAESTRO_TOKEN="person-secret", NO_COLOR="1")

    shown = maestro("mcp", "install", "--agent", "claude", cwd=project_dir, env=env)
    assert shown.returncode == 0, shown.stderr
    printed = json.loads(shown.stdout.split("\n", 1)[1])
    entry = printed["mcpServers"]["maestro"]
    assert entry["command"] == sys.executable and entry["args"] == ["-m", "maestro", "mcp"]
    assert entry["env"]["MAESTRO_SERVER_URL"] == "http://127.0.0.1:4000"
    assert entry["env"]["MAESTRO_PROJECT_ID"] == "proj_9"
    assert entry["env"]["MAESTRO_TOKEN"] == "${MAESTRO_TOKEN}"
    assert "person-secret" not in shown.stdout
    assert not (project_dir / ".mcp.json").exists()

    (project_dir / ".mcp.json").write_text(json.dumps({"mcpServers": {"other": {
        "command": "other-server"}}}))
    written = maestro("mcp", "install", "--agent", "claude", "--write", cwd=project_dir,
                      env=env)
    assert written.returncode == 0, written.stderr
    merged = json.loads((project_dir / ".mcp.json").read_text())
    assert set(merged["mcpServers"]) == {"other", "maestro"}
    assert merged["mcpServers"]["maestro"] == entry

    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(
        'model = "o4"\n\n[mcp_servers.maestro]\ncommand = "old"\n\n'
        '[mcp_servers.maestro.env]\nOLD = "1"\n\n[mcp_servers.other]\ncommand = "x"\n')
    codex = maestro("mcp", "install", "--agent", "codex", "--write", "--json",
                    cwd=project_dir, env=env)
    assert codex.returncode == 0, codex.stderr
    assert json.loads(codex.stdout)["data"]["file"] == str(codex_home / "config.toml")
    config = tomllib.loads((codex_home / "config.toml").read_text())
    assert config["model"] == "o4" and config["mcp_servers"]["other"] == {"command": "x"}
    assert config["mcp_servers"]["maestro"] == {
        "command": sys.executable, "args": ["-m", "maestro", "mcp"],
        "env": {"MAESTRO_SERVER_URL": "http://127.0.0.1:4000", "MAESTRO_PROJECT_ID": "proj_9",
                **({"PYTHONPATH": env["PYTHONPATH"]} if env.get("PYTHONPATH") else {})},
        "env_vars": ["MAESTRO_TOKEN"]}
    bad = maestro("mcp", "install", "--agent", "cursor", cwd=project_dir, env=env)
    assert bad.returncode == 1 and "--agent must be claude or codex" in bad.stderr


def test_replacing_the_codex_table_keeps_everything_else():
    text = ('# mine\n[mcp_servers."maestro"]\ncommand = "old"\n[mcp_servers.maestro.env]\n'
            'A = "1"\n[[profiles]]\nname = "p"\n')
    out = replace_codex_table(text, '[mcp_servers.maestro]\ncommand = "new"\n')
    parsed = tomllib.loads(out)
    assert parsed["mcp_servers"]["maestro"] == {"command": "new"}
    assert parsed["profiles"] == [{"name": "p"}] and out.startswith("# mine\n")
    assert tomllib.loads(replace_codex_table("", '[mcp_servers.maestro]\ncommand = "x"\n'))


def test_the_prompt_tells_spawned_agents_about_the_tools():
    from maestro.spawn.agent import build_prompt

    prompt = build_prompt("worker", MANIFEST, "sess_1", {})
    assert "MCP server `maestro`" in prompt and "`task_claim`" in prompt
    assert prompt.index("`session_context`") < prompt.index("maestro whoami")
