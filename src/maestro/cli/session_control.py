"""`maestro session stop|log|delete`: stop a session's agent, read or follow its output (like
`tail -f`), and remove a session. They register on the `session` group of sessions.py."""

import time

import typer

from .client import seg
from .options import Run, command
from .output import EXIT_NETWORK, CliError, esc, warn, write_json_line
from ..vocabulary import FINAL_SESSION_STATUSES
from .sessions import app, how_it_ended

POLL_SECONDS = 0.5


def _session_id(run: Run, session_id: str | None) -> str:
    return session_id or run.need_session()


SESSION_ARGUMENT = typer.Argument(None, metavar="SESSION_ID",
                                  help="Session id [default: MAESTRO_SESSION_ID].")


@command(app, "stop")
def session_stop(
    run: Run,
    session_id: str = typer.Argument(..., metavar="SESSION_ID", help="The session to stop."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the agent has ended and say "
                              "how."),
):
    """Stop a session's agent (SIGTERM, then SIGKILL after the server's MAESTRO_STOP_GRACE).

    The session ends as failed, marked "stopped by the user"; its claims are released. Only
    agents the server's launcher started can be stopped.

    Example: maestro session stop sess_1706792222222_lmn678abc --wait
    """
    result = run.api.post(f"/api/sessions/{seg(session_id)}/stop")
    session = result.get("session") if isinstance(result, dict) else None
    if wait:
        deadline = time.monotonic() + float(result.get("graceSeconds") or 5) + 15
        while time.monotonic() < deadline:
            session = run.api.get(f"/api/sessions/{seg(session_id)}")
            if session.get("status") in FINAL_SESSION_STATUSES:
                break
            time.sleep(POLL_SECONDS / 2)
        result = dict(result, session=session)

    def render(out):
        if wait and isinstance(session, dict) and session.get("status") in FINAL_SESSION_STATUSES:
            ended = how_it_ended(session) or session.get("status")
            out.print(f"[red]Stopped[/red] session {esc(session_id)}: {esc(ended)}")
            return
        signal = result.get("signal")
        out.print(f"[red]Stopping[/red] session {esc(session_id)}"
                  + (f" ({esc(signal)} sent, SIGKILL after {result.get('graceSeconds')} s)"
                     if signal else ""))
    run.emit(result, render)


@command(app, "log")
def session_log(
    run: Run,
    session_id: str | None = SESSION_ARGUMENT,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output as "
                                "the agent writes it, until the session ends (Ctrl-C to "
                                "stop)."),
    tail: int = typer.Option(50, "--tail", "-n", min=1, max=10000, help="How many of the "
                             "last lines to show first."),
):
    """Print the output of a session's agent (its terminal, as plain text), like `tail`.

    Example: maestro session log sess_1706792222222_lmn678abc -f
    """
    sid = _session_id(run, session_id)
    path = f"/api/sessions/{seg(sid)}/log"
    first = run.api.get(path, {"tail": tail})
    if not follow:
        def render(out):
            for line in first.get("lines") or []:
                print(line)
        run.emit(first, render)
        return
    _print_lines(run, sid, first.get("lines") or [])
    offset = first.get("nextOffset") or 0
    finished = bool(first.get("finished"))
    lost = False
    try:
        while not finished:
            time.sleep(POLL_SECONDS)
            try:
                answer = run.api.get(path, {"offset": offset})
            except CliError as err:
                if err.exit_code != EXIT_NETWORK:
                    raise
                if not lost:
                    warn(f"{err.message} Still trying (Ctrl-C to stop).")
                lost = True
                continue
            if lost:
                warn(f"reconnected to {run.ctx.server}")
                lost = False
            _print_lines(run, sid, answer.get("lines") or [])
            offset = answer.get("nextOffset", offset)
            finished = bool(answer.get("finished")) and not answer.get("lines")
    except KeyboardInterrupt:
        return
    if not run.json:
        session = run.api.get(f"/api/sessions/{seg(sid)}")
        warn(f"session {sid} {session.get('status')}"
             + (f": {how_it_ended(session)}" if how_it_ended(session) else ""))


def _print_lines(run: Run, sid: str, lines: list[str]) -> None:
    for line in lines:
        if run.json:
            write_json_line({"success": True, "data": {"sessionId": sid, "line": line}})
        else:
            print(line, flush=True)


@command(app, "delete")
def session_delete(run: Run, session_id: str = typer.Argument(..., metavar="SESSION_ID",
                                                              help="The session to delete.")):
    """Delete a session: its tasks are unlinked (their timelines say so), its claims are
    released, and an agent still running is stopped by the server.

    Example: maestro session delete sess_1706792222222_lmn678abc
    """
    before = run.api.get(f"/api/sessions/{seg(session_id)}")
    result = run.api.delete(f"/api/sessions/{seg(session_id)}")
    running = before.get("status") not in FINAL_SESSION_STATUSES

    def render(out):
        out.print(f"[red]Deleted session[/red] {esc(session_id)}"
                  + (" (its agent, if the server started one, is being stopped)"
                     if running else ""))
    run.emit(result, render)
