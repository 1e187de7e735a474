"""`maestro mcp`: Maestro's tools for agents over MCP on stdin/stdout, and `maestro mcp install`,
which wires a person's own Claude Code or Codex to them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from ..vocabulary import AGENT_PROFILES
from . import options
from .context import Environment, Overrides, resolve
from .options import Run, command
from .output import CliError, esc, usage_error

app = typer.Typer(
    help="Serve Maestro's tools to an agent over MCP on stdin/stdout (the default), or "
         "configure an agent CLI to use them (`install`).\n\n"
         "Identity comes from the environment like every command's: MAESTRO_SERVER_URL, "
         "MAESTRO_SESSION_ID with MAESTRO_SESSION_TOKEN for an agent, MAESTRO_TOKEN and "
         "MAESTRO_PROJECT_ID for a person. A worker session sees the worker tools; an "
         "orchestrator session and a person see all of them.\n\n"
         "Example: claude mcp add maestro -- maestro mcp",
    invoke_without_command=True,
    no_args_is_help=False,
)

TOOLS_HELP = ("Narrow the tools: names or the groups worker, orchestrator, all, comma-separated "
              "[env MAESTRO_MCP_TOOLS].")


@app.callback()
def mcp(
    ctx: typer.Context,
    tools: str | None = typer.Option(None, "--tools", metavar="LIST", help=TOOLS_HELP),
    server: str | None = typer.Option(None, "--server", metavar="URL",
                                      help="Server URL [env MAESTRO_SERVER_URL]."),
    project: str | None = typer.Option(None, "--project", metavar="ID",
                                       help="Project id [env MAESTRO_PROJECT_ID]."),
    session: str | None = typer.Option(None, "--session", metavar="ID",
                                       help="Session id [env MAESTRO_SESSION_ID]."),
) -> None:
    """Serve the tools over stdio (nothing but the protocol on stdout).

    Example: MAESTRO_PROJECT_ID=proj_1 maestro mcp --tools worker
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..mcp.catalog import parse_tools, problem_text

    environment = Environment()
    narrowed, problems = parse_tools(tools if tools is not None
                                     else environment.get("MAESTRO_MCP_TOOLS"))
    if problems:
        print(f"maestro mcp: {problem_text(problems)}", file=sys.stderr)
        raise typer.Exit(1)
    overrides = options.root_overrides.merge(Overrides(server=server, project=project,
                                                       session=session))
    from ..mcp.stdio import run

    raise typer.Exit(run(resolve(overrides, environment), narrowed))


def _codex_config_path(env: dict) -> Path:
    home = env.get("CODEX_HOME") or os.path.join(env.get("HOME") or str(Path.home()), ".codex")
    return Path(home) / "config.toml"


@command(app, "install")
def install(
    run: Run,
    agent: str = typer.Option(..., "--agent", metavar="AGENT", help="claude or codex."),
    write: bool = typer.Option(False, "--write", help="Write the configuration (Claude Code: "
                               "./.mcp.json; Codex: $CODEX_HOME/config.toml, default "
                               "~/.codex/config.toml) instead of printing it."),
    tools: str | None = typer.Option(None, "--tools", metavar="LIST", help=TOOLS_HELP),
):
    """Print (or --write) the configuration that gives your own agent Maestro's tools.

    The entry runs this Maestro (`python -m maestro mcp`) with your server URL and project.
    A token is never written: Claude Code reads ${MAESTRO_TOKEN} from your environment,
    Codex forwards MAESTRO_TOKEN.

    Example: maestro mcp install --agent claude --write
    """
    from ..mcp import wiring
    from ..mcp.catalog import parse_tools, problem_text

    if agent not in AGENT_PROFILES:
        raise usage_error("--agent must be claude or codex.",
                          "Example: maestro mcp install --agent codex")
    if tools:
        narrowed, problems = parse_tools(tools)
        if problems:
            raise usage_error(problem_text(problems))
    ctx = run.ctx
    environ = ctx.env.environ if ctx.env is not None else dict(os.environ)
    env = {"MAESTRO_SERVER_URL": ctx.server}
    for name, value in (("MAESTRO_PROJECT_ID", ctx.project), ("MAESTRO_SESSION_ID", ctx.session),
                        ("MAESTRO_MCP_TOOLS", ",".join(narrowed) if tools else None),
                        ("PYTHONPATH", environ.get("PYTHONPATH"))):
        if value:
            env[name] = value
    # A person's token is referred to, never written: the agent reads it from the environment.
    token_var = "MAESTRO_TOKEN" if (ctx.token_source or "").startswith("MAESTRO_TOKEN") \
        else None
    if agent == "claude":
        secrets = {token_var: "${" + token_var + "}"} if token_var else {}
        config = wiring.claude_config(env, secrets)
        target = Path.cwd() / ".mcp.json"
        text = json.dumps(config, indent=2) + "\n"
        if write:
            current = {}
            if target.exists():
                try:
                    current = json.loads(target.read_text(encoding="utf-8"))
                except ValueError as exc:
                    raise CliError("invalid_file", f"{target} is not JSON ({exc}); fix or "
                                   "move it first.") from None
            servers = current.get("mcpServers") if isinstance(current.get("mcpServers"),
                                                               dict) else {}
            current["mcpServers"] = {**servers, **config["mcpServers"]}
            text = json.dumps(current, indent=2) + "\n"
    else:
        table = wiring.codex_table(env, token_var)
        target = _codex_config_path(environ)
        text = table
        if write:
            import tomllib

            existing = target.read_text(encoding="utf-8") if target.exists() else ""
            text = wiring.replace_codex_table(existing, table)
            try:
                tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise CliError("invalid_file", f"{target} would not be valid TOML ({exc}); "
                               "add this table by hand:\n" + table) from None
    if write:
        target.parent.mkdir(parents=True, exist_ok=True)
        spare = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        spare.write_text(text, encoding="utf-8")
        os.replace(spare, target)
    result = {"agent": agent, "file": str(target), "written": write, "content": text}

    def render(out):
        if write:
            out.print(f"[green]Wrote[/green] the {esc(agent)} configuration to {esc(target)}")
            return
        where = ("save as .mcp.json in your project, or pass with --mcp-config"
                 if agent == "claude" else f"add to {target}")
        print(f"# {where}")
        print(text, end="")
    run.emit(result, render)
