"""How an agent CLI finds Maestro's MCP server: the server entry (this Python running
`-m maestro mcp`, with the caller's MAESTRO_* values) as Claude Code's `--mcp-config` file and
as Codex's `mcp_servers` settings, for spawned sessions and for a person's own agent.

MCP clients start a stdio server with only a few variables of their own environment (PATH,
HOME and the like), so the entry names every value the server needs. The session token is
never put on a command line (other users can read those): Claude Code gets it in the
per-session file (mode 0600), Codex forwards it from its own environment (`env_vars`)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .catalog import SERVER_NAME

CONFIG_FILE = "mcp.json"
# What the MCP server process needs to know, besides a token.
ENTRY_VARS = ("MAESTRO_SERVER_URL", "MAESTRO_SESSION_ID", "MAESTRO_PROJECT_ID",
              "MAESTRO_TASK_IDS", "MAESTRO_ROLE", "MAESTRO_MCP_TOOLS", "MAESTRO_RETRIES",
              "MAESTRO_RETRY_DELAY", "MAESTRO_API_TIMEOUT", "MAESTRO_DEBUG", "PYTHONPATH", "HOME")
TOKEN_VARS = ("MAESTRO_SESSION_TOKEN", "MAESTRO_TOKEN")


def server_command() -> tuple[str, list[str]]:
    """The MCP server command: the very Python (and so the very Maestro) running now."""
    return sys.executable, ["-m", "maestro", "mcp"]


def entry_env(env: Mapping[str, str]) -> dict[str, str]:
    """The non-secret values of `env` the MCP server needs (the API URL as the server URL)."""
    out = {name: env[name] for name in ENTRY_VARS if env.get(name)}
    url = env.get("MAESTRO_API_URL") or env.get("MAESTRO_SERVER_URL")
    if url:
        out["MAESTRO_SERVER_URL"] = url
    return out


def token_name(env: Mapping[str, str]) -> str | None:
    """The variable holding the caller's token, if any (a session's own comes first)."""
    return next((name for name in TOKEN_VARS if env.get(name)), None)


@dataclass
class AgentWiring:
    """The MCP wiring of one spawned agent: its Claude Code config file and the values its
    server entry carries."""

    config_file: Path
    env: dict[str, str]  # non-secret values
    token_var: str | None  # the variable holding its token (forwarded, never on a command line)

    def claude_args(self) -> list[str]:
        return ["--mcp-config", str(self.config_file)]

    def codex_args(self) -> list[str]:
        """`-c` overrides adding the server to Codex's `mcp_servers` for this run."""
        command, args = server_command()
        key = f"mcp_servers.{SERVER_NAME}"
        out = ["-c", f"{key}.command={toml_value(command)}",
               "-c", f"{key}.args={toml_value(args)}",
               "-c", f"{key}.env={toml_value(self.env)}"]
        if self.token_var:
            out += ["-c", f"{key}.env_vars={toml_value([self.token_var])}"]
        return out


def claude_config(env: Mapping[str, str], secrets: Mapping[str, str] | None = None) -> dict:
    """Claude Code's MCP configuration (`--mcp-config` file or `.mcp.json`) for Maestro."""
    command, args = server_command()
    values = dict(env)
    values.update(secrets or {})
    return {"mcpServers": {SERVER_NAME: {"type": "stdio", "command": command, "args": args,
                                         "env": values}}}


def write_agent_config(folder: Path, env: Mapping[str, str]) -> AgentWiring:
    """Write a spawned agent's `--mcp-config` file (next to its manifest, readable by its user
    only, since it holds the session token) and return its wiring."""
    public = entry_env(env)
    name = token_name(env)
    secrets = {name: env[name]} if name else {}
    target = folder / CONFIG_FILE
    spare = folder / f".{CONFIG_FILE}.{os.getpid()}.tmp"
    fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(claude_config(public, secrets), fh, indent=2)
        fh.write("\n")
    os.replace(spare, target)
    return AgentWiring(target, public, name)


# ---------------------------------------------------------------------------- TOML
def toml_value(value) -> str:
    """A TOML value: strings, string lists and string tables (inline) as Codex reads them."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def codex_table(env: Mapping[str, str], token_var: str | None) -> str:
    """The `[mcp_servers.maestro]` table of Codex's config.toml."""
    command, args = server_command()
    lines = [f"[mcp_servers.{SERVER_NAME}]", f"command = {toml_value(command)}",
             f"args = {toml_value(args)}"]
    if env:
        lines.append(f"env = {toml_value(dict(env))}")
    if token_var:
        lines.append(f"env_vars = {toml_value([token_var])}")
    return "\n".join(lines) + "\n"


def replace_codex_table(text: str, table: str) -> str:
    """`text` (a config.toml) with its `[mcp_servers.maestro]` tables replaced by `table`."""
    header = f"mcp_servers.{SERVER_NAME}"
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            name = stripped.strip("[]").strip().replace('"', "")
            skipping = name == header or name.startswith(header + ".")
        elif stripped.startswith("[["):
            skipping = False
        if not skipping:
            kept.append(line)
    body = "\n".join(kept).rstrip()
    return (body + "\n\n" if body else "") + table
