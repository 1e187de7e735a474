"""The options every client command shares (`--json`, `--server`, `--project`, `--session`),
added to each command by one decorator, plus the error handling every command gets: a
`CliError` becomes its envelope or one readable line and the exit code of SPEC §12.1, never a
traceback."""

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import typer

from .context import CliContext, Overrides, resolve
from .output import EXIT_GENERAL, EXIT_NOT_FOUND, CliError, emit, report_error, warn

# Flags given before the command name (`maestro --json task list`), set by the root callback.
root_overrides = Overrides()

_COMMON = [
    inspect.Parameter("opt_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                      default=typer.Option(False, "--json",
                                           help="Print the result as JSON: {\"success\": true, "
                                                "\"data\": ...} (errors: success false).")),
    inspect.Parameter("opt_server", inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                      default=typer.Option(None, "--server", metavar="URL",
                                           help="Server URL [env MAESTRO_API_URL, "
                                                "MAESTRO_SERVER_URL; default "
                                                "http://localhost:3000].")),
    inspect.Parameter("opt_project", inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                      default=typer.Option(None, "--project", metavar="ID",
                                           help="Project id [env MAESTRO_PROJECT_ID].")),
    inspect.Parameter("opt_session", inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                      default=typer.Option(None, "--session", metavar="ID",
                                           help="Session id [env MAESTRO_SESSION_ID].")),
]


class Run:
    """One command invocation: its context, a lazily created API client, and helpers for the
    things most commands need."""

    def __init__(self, ctx: CliContext):
        self.ctx = ctx
        self._api = None
        self._project: dict | None = None

    @property
    def json(self) -> bool:
        return self.ctx.json

    @property
    def api(self):
        if self._api is None:
            from .client import ApiClient

            self._api = ApiClient(self.ctx)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    def need_project(self) -> str:
        if not self.ctx.project:
            raise CliError("no_project", "No project given.",
                           suggestion="Set MAESTRO_PROJECT_ID or pass --project <id> "
                                      "(`maestro project list` shows the ids).")
        return self.ctx.project

    def project(self) -> dict:
        """The current project as the server knows it; an id the server does not know is
        exit 2 with a message saying where the id came from (a list filtered by an unknown
        project would otherwise just come back empty)."""
        project_id = self.need_project()
        if self._project is None or self._project.get("id") != project_id:
            from .client import seg

            try:
                self._project = self.api.get(f"/api/projects/{seg(project_id)}")
            except CliError as err:
                if err.exit_code != EXIT_NOT_FOUND:
                    raise
                raise CliError("project_not_found",
                               f"Project {project_id} not found "
                               f"(from {self.ctx.project_source or 'the command line'}).",
                               exit_code=EXIT_NOT_FOUND, details=err.details,
                               suggestion="`maestro project list` shows the projects; set "
                                          "MAESTRO_PROJECT_ID or --project to one of them."
                               ) from None
        return self._project

    def project_or_none(self) -> dict | None:
        """The current project (checked as in `project()`), or None when none is given."""
        return self.project() if self.ctx.project else None

    def need_session(self) -> str:
        if not self.ctx.session:
            raise CliError("no_session", "No session: MAESTRO_SESSION_ID is not set.",
                           suggestion="Run this inside a Maestro session, or pass "
                                      "--session <id>.")
        return self.ctx.session

    def emit(self, data: Any, render: Callable | None = None) -> None:
        emit(self.json, data, render)


def command(app: typer.Typer, name: str, *, hook: bool = False, **settings) -> Callable:
    """Register `fn(run, ...)` as command `name` of `app`, with the shared options.
    `hook=True` is for commands run by agent hooks: they report failures on stderr but
    always exit 0, so a hiccup never breaks the agent (§12.3)."""

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        own = [p for p in signature.parameters.values() if p.name != "run"]

        @functools.wraps(fn)
        def wrapper(*args, opt_json: bool = False, opt_server: str | None = None,
                    opt_project: str | None = None, opt_session: str | None = None,
                    **kwargs):
            overrides = root_overrides.merge(Overrides(json=opt_json, server=opt_server,
                                                       project=opt_project,
                                                       session=opt_session))
            ctx = resolve(overrides)
            # Agents and their hooks wait out a server restart; a person gets an answer at once.
            ctx.patient = hook or (bool(ctx.session) and not is_tty_stdin())
            run = Run(ctx)
            try:
                fn(run, *args, **kwargs)
            except CliError as err:
                if hook:
                    if run.json:
                        report_error(err, True)
                    else:
                        warn(f"{name}: {err.message}")
                    return
                report_error(err, run.json)
                raise typer.Exit(err.exit_code) from None
            except KeyboardInterrupt:
                raise typer.Exit(130) from None
            except (typer.Exit, typer.Abort):
                raise
            except Exception as exc:  # a defect in the CLI itself: one line, no traceback
                if run.ctx.debug:
                    raise
                err = CliError("unknown_error", f"{type(exc).__name__}: {exc}",
                               suggestion="Set MAESTRO_DEBUG=true to see the traceback.")
                report_error(err, run.json)
                raise typer.Exit(0 if hook else EXIT_GENERAL) from None
            finally:
                run.close()

        wrapper.__signature__ = signature.replace(parameters=own + _COMMON)
        wrapper.__annotations__ = {**getattr(fn, "__annotations__", {}),
                                   **{p.name: p.annotation for p in _COMMON}}
        wrapper.__annotations__.pop("run", None)
        app.command(name, **settings)(wrapper)
        return fn

    return decorate


def is_tty_stdin() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return True

