"""How an agent tells Maestro what it is doing: `maestro report progress|complete|blocked|error|
needs-input` (SPEC §12.4), the deprecated `update*` aliases, and the `track-file` hook."""

import json
import sys
from datetime import UTC, datetime

import typer

from ..vocabulary import REPORT_KINDS
from .claims import fencing_headers
from .client import seg
from .context import split_ids
from .options import Run, command, is_tty_stdin
from .output import esc, usage_error, warn

app = typer.Typer(help="Report progress from inside a session (sets the agent status of tasks "
                       "and writes the session timeline).", no_args_is_help=True)

# sub-command -> (sessionStatus written to tasks, session timeline type), SPEC §12.4
REPORTS = {command: REPORT_KINDS[kind] for command, kind in (
    ("progress", "progress"), ("complete", "completed"), ("blocked", "blocked"),
    ("error", "failed"), ("needs-input", "needs_input"))}

DESCRIPTIONS = {
    "progress": "Report progress on your work.",
    "complete": "Report that your work is done (without --task this also completes the "
                "session).",
    "blocked": "Report that you are blocked.",
    "error": "Report an error that stops your work.",
    "needs-input": "Report that you need input from a person.",
}

EXAMPLES = {
    "progress": 'maestro report progress "Login form done, writing tests" --task task_1_abc',
    "complete": 'maestro report complete "All tests pass" --task task_1_abc',
    "blocked": 'maestro report blocked "Need the API key for staging" --task task_1_abc',
    "error": 'maestro report error "Build fails: missing libssl"',
    "needs-input": 'maestro report needs-input "Which database should I use?"',
}


def send_report(run: Run, kind: str, message: str, task_ids: list[str]) -> dict:
    """§12.4: with tasks, set each task's sessionStatus (E3) then add a session timeline entry
    per task (E2); without, one timeline entry, and `complete` also completes the session.
    A task the session holds a claim on is written with the claim's token (§15.3), so a report
    made after the claim was lost is refused (exit 6) rather than mixed into the new holder's
    work."""
    if not message.strip():
        raise usage_error("The report needs a message.", f"Example: {EXAMPLES[kind]}")
    sid = run.need_session()
    session_status, timeline_type = REPORTS[kind]
    session_path = f"/api/sessions/{seg(sid)}"
    tasks = []
    for task_id in task_ids:
        tasks.append(run.api.patch(f"/api/tasks/{seg(task_id)}",
                                   {"sessionStatus": session_status, "updateSource": "session",
                                    "sessionId": sid},
                                   headers=fencing_headers(run, task_id)))
    session = None
    for task_id in task_ids:
        session = run.api.post(f"{session_path}/timeline", {"type": timeline_type,
                                                            "message": message,
                                                            "taskId": task_id})
    if not task_ids:
        session = run.api.post(f"{session_path}/timeline", {"type": timeline_type,
                                                            "message": message})
        if kind == "complete":
            session = run.api.patch(session_path, {"status": "completed"})
    return {"sessionId": sid, "type": timeline_type, "message": message,
            "sessionStatus": session_status if task_ids else None, "taskIds": task_ids,
            "tasks": tasks, "session": session}


def _report_command(kind: str):
    def report(
        run: Run,
        message: str = typer.Argument(..., metavar="MESSAGE", help="What to report."),
        task: str | None = typer.Option(None, "--task", metavar="ID[,ID...]",
                                           help="Task(s) the report is about; their agent "
                                                "status becomes "
                                                f"'{REPORTS[kind][0]}'."),
    ):
        result = send_report(run, kind, message, split_ids(task))

        def render(out):
            where = f" for {esc(', '.join(result['taskIds']))}" if result["taskIds"] else ""
            out.print(f"Reported {kind}{where}: {esc(message)}")
        run.emit(result, render)

    report.__doc__ = f"{DESCRIPTIONS[kind]}\n\nExample: {EXAMPLES[kind]}"
    report.__name__ = f"report_{kind.replace('-', '_')}"
    return report


for _kind in REPORTS:
    command(app, _kind)(_report_command(_kind))


def _alias_command(alias: str, kind: str):
    def alias_command(run: Run, message: str = typer.Argument(..., metavar="MESSAGE",
                                                              help="What to report.")):
        warn(f"'{alias}' is deprecated; use 'maestro report {kind}'")
        result = send_report(run, kind, message, [])
        run.emit(result, lambda out: out.print(f"Reported {kind}: {esc(message)}"))

    alias_command.__doc__ = (f"Deprecated: use `maestro report {kind}`.\n\n"
                             f'Example: maestro {alias} "message"')
    alias_command.__name__ = "alias_" + alias.replace(":", "_").replace("-", "_")
    return alias_command


def register_aliases(root: typer.Typer) -> None:
    """The original's deprecated `update`, `update:<kind>` commands: a report without --task."""
    aliases = {"update": "progress", "update:progress": "progress", "update:blocked": "blocked",
               "update:needs-input": "needs-input", "update:complete": "complete",
               "update:error": "error"}
    for alias, kind in aliases.items():
        command(root, alias, hidden=True, deprecated=True)(_alias_command(alias, kind))


def _file_from_hook_input() -> str | None:
    """An after-edit hook may pass its tool input as JSON on stdin instead of an argument."""
    if is_tty_stdin():
        return None
    try:
        payload = json.loads(sys.stdin.read() or "null")
    except ValueError:
        return None
    if isinstance(payload, dict):
        tool_input = payload.get("tool_input") if isinstance(payload.get("tool_input"),
                                                             dict) else payload
        for key in ("file_path", "path", "file"):
            if isinstance(tool_input.get(key), str):
                return tool_input[key]
    return None


def register_track_file(root: typer.Typer) -> None:
    @command(root, "track-file", hook=True)
    def track_file(run: Run, path: str | None = typer.Argument(
            None, metavar="PATH", help="The file that was modified [default: read from the "
                                       "hook's JSON on stdin].")):
        """Record that a file was modified (agent after-edit hook). Silent; always exits 0.

        Example: maestro track-file src/app/login.py
        """
        if not run.ctx.session:
            return  # outside a session there is nothing to record; never invent an id
        path = path or _file_from_hook_input()
        if not path:
            return
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        # Runs after every edit: without --json nothing is printed, so the answer need not
        # carry the whole session (which grows with every edit).
        session = run.api.post(f"/api/sessions/{seg(run.ctx.session)}/events",
                               {"type": "file_modified",
                                "data": {"file": path, "timestamp": stamp.replace("+00:00",
                                                                                  "Z")}},
                               minimal=not run.json)
        if run.json:
            run.emit(session)
