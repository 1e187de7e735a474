"""What the CLI prints: the `--json` envelope of SPEC §12.1 on stdout and nothing else, or rich
tables and trees for people; errors as one readable line on stderr, with the exit codes of
§12.1 (0 ok, 1 general/400, 2 not found, 3 server unreachable, 4 permission, 5 launch), plus two
of Maestro's own for claims (§15.3): 6 the task is claimed by someone else (or this session's
claim was lost), 7 the task is not ready."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

EXIT_OK = 0
EXIT_GENERAL = 1
EXIT_NOT_FOUND = 2
EXIT_NETWORK = 3
EXIT_PERMISSION = 4
EXIT_LAUNCH = 5
EXIT_CLAIMED = 6
EXIT_NOT_READY = 7

STATUS_STYLE = {
    "pending": "yellow", "in_progress": "cyan", "completed": "green", "blocked": "red",
    "spawning": "magenta", "running": "cyan", "failed": "red",
    "queued": "yellow", "working": "cyan", "needs_input": "magenta", "skipped": "dim",
}
PRIORITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "dim"}


class CliError(Exception):
    """A failure the user can act on: `code` is the envelope's `error`, `exit_code` the
    process exit status (§12.1)."""

    def __init__(self, code: str, message: str, *, exit_code: int = EXIT_GENERAL,
                 details: dict | None = None, suggestion: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
        self.details = details or {}
        self.suggestion = suggestion

    def envelope(self) -> dict:
        body: dict[str, Any] = {"success": False, "error": self.code, "message": self.message,
                                "details": self.details}
        if self.suggestion:
            body["suggestion"] = self.suggestion
        return body


def usage_error(message: str, suggestion: str | None = None) -> CliError:
    return CliError("invalid_usage", message, suggestion=suggestion)


def write_json(value: Any) -> None:
    """Pretty JSON on stdout (the original printed `JSON.stringify(x, null, 2)`)."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def write_json_line(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def console(stderr: bool = False):
    """A rich console that honours NO_COLOR and stays plain when not writing to a terminal;
    off a terminal it is wide enough that ids and titles are not cut."""
    from rich.console import Console

    from ..config import no_color, output_width

    stream = sys.stderr if stderr else sys.stdout
    is_tty = stream.isatty()
    width = None
    if not is_tty:
        width = output_width()
    return Console(file=stream, highlight=False, width=width, soft_wrap=not is_tty,
                   no_color=no_color() or None)


def emit(as_json: bool, data: Any, render: Callable[[Any], None] | None = None) -> None:
    """Print a command's result: the success envelope with `--json`, else `render(console)`."""
    if as_json:
        write_json({"success": True, "data": data})
    elif render is not None:
        render(console())


def report_error(err: CliError, as_json: bool) -> None:
    """Print an error: the error envelope on stdout with `--json`; always one line on stderr
    for a person (plus a hint line when there is one)."""
    if as_json:
        write_json(err.envelope())
        return
    out = console(stderr=True)
    from rich.markup import escape

    code = err.details.get("code") if isinstance(err.details, dict) else None
    tail = f" [dim]({escape(str(code))})[/dim]" if code else ""
    out.print(f"[bold red]Error:[/bold red] {escape(err.message)}{tail}")
    if err.suggestion:
        out.print(f"[dim]{escape(err.suggestion)}[/dim]")


def warn(message: str) -> None:
    """A note on stderr (never on stdout, which belongs to the result)."""
    sys.stderr.write(f"maestro: {message}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------ formatting helpers
def fmt_time(ms: Any) -> str:
    if not isinstance(ms, (int, float)) or isinstance(ms, bool) or ms <= 0:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def fmt_clock(ms: Any) -> str:
    if not isinstance(ms, (int, float)) or isinstance(ms, bool) or ms <= 0:
        ms = time.time() * 1000
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000))


def styled(value: Any, styles: dict[str, str]) -> str:
    from rich.markup import escape

    text = escape(str(value)) if value not in (None, "") else "-"
    style = styles.get(str(value))
    return f"[{style}]{text}[/{style}]" if style else text


def status_text(value: Any) -> str:
    return styled(value, STATUS_STYLE)


def priority_text(value: Any) -> str:
    return styled(value, PRIORITY_STYLE)


def esc(value: Any) -> str:
    from rich.markup import escape

    return escape("" if value is None else str(value))


def table(*columns: str, title: str | None = None):
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
              title_justify="left", header_style="bold")
    for name in columns:
        t.add_column(name, overflow="fold")
    return t


def print_table(out, items: list, empty: str, columns: tuple[str, ...],
                row: Callable[[Any], tuple]) -> None:
    """`items` as a table of `columns`, one `row(item)` each; the line `empty` when there are
    none."""
    if not items:
        out.print(empty)
        return
    t = table(*columns)
    for item in items:
        t.add_row(*row(item))
    out.print(t)


def key_values(out, rows: list[tuple[str, Any]]) -> None:
    """Aligned `key  value` lines (values may carry rich markup)."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value if isinstance(value, str) else esc(value))
    out.print(grid)
