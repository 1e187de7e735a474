"""The `maestro` command line: `maestro serve` runs the server; the other commands talk to it
(SPEC §12). Command modules import only typer at start-up; httpx, rich and websockets are
imported when a command needs them, so that an agent's many short calls start fast."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .. import __version__
from . import options

app = typer.Typer(
    name="maestro",
    help="Maestro: coordinate a team of AI coding agents (projects, tasks, sessions, live "
         "events).\n\nContext comes from MAESTRO_SERVER_URL, MAESTRO_PROJECT_ID, "
         "MAESTRO_SESSION_ID, MAESTRO_TASK_IDS and MAESTRO_TOKEN (also read from .env and "
         "~/.maestro/config); flags override them. Every command takes --json.\n\n"
         "Exit codes: 0 ok, 1 invalid request or usage, 2 not found, 3 server unreachable, "
         "4 not allowed, 5 agent could not be started, 6 task claimed by another session (or "
         "this session's claim was lost), 7 task not ready.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"maestro {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    as_json: bool = typer.Option(False, "--json", help="JSON output for every command."),
    server: str | None = typer.Option(None, "--server", metavar="URL",
                                      help="Server URL [env MAESTRO_API_URL, "
                                           "MAESTRO_SERVER_URL]."),
    project: str | None = typer.Option(None, "--project", metavar="ID",
                                       help="Project id [env MAESTRO_PROJECT_ID]."),
    session: str | None = typer.Option(None, "--session", metavar="ID",
                                       help="Session id [env MAESTRO_SESSION_ID]."),
) -> None:
    """Maestro command line."""
    options.root_overrides = options.Overrides(json=as_json, server=server, project=project,
                                               session=session)


@app.command()
def serve(
    port: Optional[int] = typer.Option(None, "--port", "-p", help="Port for HTTP and WebSocket "
                                       "[env PORT, default 3000]."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind [env HOST, default "
                                       "127.0.0.1]. A non-loopback address needs a MAESTRO_TOKEN "
                                       "of 32 characters or more."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data directory [env "
                                            "DATA_DIR, default ~/.maestro/data]."),
    session_dir: Optional[Path] = typer.Option(None, "--session-dir", help="Where spawn writes "
                                               "manifests [env SESSION_DIR, default "
                                               "~/.maestro/sessions]."),
    server_url: Optional[str] = typer.Option(None, "--server-url", help="URL given to agents "
                                             "[env SERVER_URL, default http://localhost:PORT]."),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="error, warn, info or "
                                            "debug [env LOG_LEVEL, default info]."),
    debug: Optional[bool] = typer.Option(None, "--debug/--no-debug", help="Verbose logging "
                                         "[env DEBUG]."),
    launcher: Optional[str] = typer.Option(None, "--launcher", help="local: the server starts "
                                           "agents itself; ui: only broadcast spawn requests "
                                           "[env MAESTRO_LAUNCHER, default local]."),
) -> None:
    """Start the Maestro server (REST API, WebSocket events and dashboard on one port).

    Example: maestro serve --port 3000 --data-dir ~/.maestro/data
    """
    from ..config import ConfigError, Settings
    from ..server.run import serve as run_server

    overrides = dict(port=port, host=host, data_dir=data_dir, session_dir=session_dir,
                     server_url=server_url, log_level=log_level.lower() if log_level else None,
                     debug=debug, launcher=launcher.lower() if launcher else None)
    if debug and not log_level:
        overrides["log_level"] = "debug"
    try:
        settings = Settings.from_env(**overrides)
    except ConfigError as exc:  # one line and exit 1, like every other refusal to start
        print(f"maestro: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    raise typer.Exit(run_server(settings))


def _register_commands() -> None:
    from . import (
        coordination,
        info,
        manifest_cmd,
        projects,
        reporting,
        session_control,
        sessions,
        task_views,
        tasks,
        watch,
    )

    from . import workspaces

    # These register their commands on the task and session groups themselves.
    del coordination, task_views, session_control, workspaces
    info.register(app)
    app.add_typer(projects.app, name="project")
    app.add_typer(tasks.app, name="task")
    app.add_typer(sessions.app, name="session")
    app.add_typer(reporting.app, name="report")
    reporting.register_aliases(app)
    reporting.register_track_file(app)
    watch.register(app)
    app.add_typer(manifest_cmd.app, name="manifest")
    from .import_data import register as register_import_data
    register_import_data(app)
    from .db import app as db_app
    app.add_typer(db_app, name="db")
    from .mcp_cmd import app as mcp_app
    app.add_typer(mcp_app, name="mcp")


_register_commands()
# Agent launchers (`maestro worker init`, `maestro orchestrator init`) are added below.
from .init_commands import orchestrator_app, worker_app  # noqa: E402

app.add_typer(worker_app, name="worker")
app.add_typer(orchestrator_app, name="orchestrator")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. A bad flag or argument prints the usage message and exits 1 (the original
    CLI's code for a usage error; 2 means "not found" here, SPEC §12.1)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = app(args=args, prog_name="maestro", standalone_mode=False)
    except Exception as exc:  # click's usage errors, duck-typed across click versions
        if not (hasattr(exc, "show") and hasattr(exc, "exit_code")):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()
            sys.exit(0)
        exc.show()
        if "--json" in args:
            from .output import usage_error, write_json

            text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            write_json(usage_error(text).envelope())
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
