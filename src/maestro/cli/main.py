"""The `maestro` command line: `maestro serve` runs the server; the other commands talk to it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .. import __version__

app = typer.Typer(
    name="maestro",
    help="Maestro: coordinate a team of AI coding agents (projects, tasks, sessions, live events).",
    no_args_is_help=True,
    add_completion=False,
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
) -> None:
    """Maestro command line."""


@app.command()
def serve(
    port: Optional[int] = typer.Option(None, "--port", "-p", help="Port for HTTP and WebSocket "
                                       "[env PORT, default 3000]."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind [env HOST, default "
                                       "127.0.0.1]. A non-loopback address needs MAESTRO_TOKEN."),
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
    except ConfigError as exc:
        print(f"maestro: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    raise typer.Exit(run_server(settings))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
