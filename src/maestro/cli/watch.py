"""`maestro watch`: the live WebSocket event stream (SPEC §10), one readable line per event,
filtered by project and task, reconnecting by itself when the server goes away and comes
back."""

import json
import sys
import time

import typer

from .options import Run, command
from .output import (
    EXIT_NETWORK,
    EXIT_NOT_FOUND,
    EXIT_PERMISSION,
    CliError,
    esc,
    fmt_clock,
    status_text,
    warn,
    write_json_line,
)

LINK_EVENTS = ("task:session_added", "task:session_removed", "session:task_added",
               "session:task_removed")
# Claim events name the task as `taskId` (SPEC §15.3); a task:updated follows each.
CLAIM_EVENTS = ("task:claimed", "task:claim_released", "task:claim_expired")
# Workspace events name their sessions as `sessionId` / `sessionIds` and carry the projectId.
WORKSPACE_EVENTS = ("session:merged", "session:overlap")


def _event_sessions(data: dict) -> list[str]:
    """The sessions a workspace event is about."""
    ids = data.get("sessionIds") if isinstance(data.get("sessionIds"), list) else []
    return [str(s) for s in ([data.get("sessionId")] if data.get("sessionId") else []) + ids]


class EventFilter:
    """Which events concern a project and/or a task. Deletions carry only an id, so the
    filter remembers the ids of the tasks and sessions it has seen belong to the scope."""

    def __init__(self, project: str | None, task: str | None):
        self.project = project
        self.task = task
        self.tasks: set[str] = set()
        self.sessions: set[str] = set()

    def seed(self, run: Run) -> None:
        """Learn the ids already in scope, so that their later deletion is recognised."""
        if self.project:
            run.project()
            self.tasks.update(t["id"] for t in run.api.get("/api/tasks",
                                                          {"projectId": self.project}))
            self.sessions.update(s["id"] for s in run.api.get("/api/sessions",
                                                             {"projectId": self.project}))
        if self.task:
            self.tasks.add(self.task)
            self.sessions.update(s["id"] for s in run.api.get("/api/sessions",
                                                             {"taskId": self.task}))

    def accepts(self, kind: str, data) -> bool:
        if not isinstance(data, dict):
            return not (self.project or self.task)
        return self._in_project(kind, data) and self._about_task(kind, data)

    def _in_project(self, kind: str, data: dict) -> bool:
        if not self.project:
            return True
        if kind.startswith("project:"):
            return data.get("id") == self.project
        if kind in ("task:created", "task:updated"):
            if data.get("projectId") == self.project:
                self.tasks.add(data.get("id"))
                return True
            return False
        if kind in ("session:created", "session:updated", "session:spawn_request"):
            session = data.get("session") if isinstance(data.get("session"), dict) else data
            if self.project in (data.get("projectId"), session.get("projectId")):
                self.sessions.add(session.get("id"))
                return True
            return False
        if kind == "task:deleted":
            return data.get("id") in self.tasks
        if kind == "session:deleted":
            return data.get("id") in self.sessions
        if kind in LINK_EVENTS:
            return data.get("taskId") in self.tasks or data.get("sessionId") in self.sessions
        if kind in CLAIM_EVENTS:
            return data.get("taskId") in self.tasks
        return data.get("projectId") == self.project

    def _about_task(self, kind: str, data: dict) -> bool:
        if not self.task:
            return True
        if kind.startswith("project:"):
            return False
        if kind in CLAIM_EVENTS:
            return data.get("taskId") == self.task
        if kind.startswith("task:") and kind not in LINK_EVENTS:
            return data.get("id") == self.task
        if kind in LINK_EVENTS:
            if data.get("taskId") == self.task:
                self.sessions.add(data.get("sessionId"))
                return True
            return False
        if kind == "session:deleted":
            return data.get("id") in self.sessions
        if kind in WORKSPACE_EVENTS:
            return any(s in self.sessions for s in _event_sessions(data))
        if kind.startswith("session:"):
            session = data.get("session") if isinstance(data.get("session"), dict) else data
            ids = data.get("taskIds") or session.get("taskIds") or []
            if self.task in ids:
                self.sessions.add(session.get("id"))
                return True
            return session.get("id") in self.sessions
        return data.get("taskId") == self.task


class LineFormatter:
    """One human line per event; for session updates it says what was added (a report, a
    modified file) rather than repeating the whole session."""

    def __init__(self):
        self.timeline_seen: dict[str, int] = {}
        self.events_seen: dict[str, int] = {}

    def line(self, kind: str, data, timestamp) -> str:
        colour = ("green" if kind.endswith(("created", "_added", "claimed", "merged")) else
                  "red" if kind.endswith(("deleted", "_removed")) else
                  "yellow" if kind.endswith(("_released", "_expired", "overlap")) else
                  "magenta" if kind.endswith("spawn_request") else "cyan")
        return (f"[dim]{fmt_clock(timestamp)}[/dim] [{colour}]{esc(kind):<22}[/{colour}] "
                f"{self.summary(kind, data)}")

    def summary(self, kind: str, data) -> str:
        if not isinstance(data, dict):
            return esc(json.dumps(data))
        if kind.startswith("project:"):
            name = f' "{esc(data.get("name"))}"' if data.get("name") else ""
            return f"{esc(data.get('id'))}{name}"
        if kind in LINK_EVENTS:
            return f"task {esc(data.get('taskId'))} · session {esc(data.get('sessionId'))}"
        if kind in CLAIM_EVENTS:
            return self._claim(kind, data)
        if kind == "session:merged":
            return self._merged(data)
        if kind == "session:overlap":
            return self._overlap(data)
        if kind.startswith("task:"):
            if kind == "task:deleted":
                return esc(data.get("id"))
            text = (f"{esc(data.get('id'))} \"{esc(data.get('title'))}\" "
                    f"{status_text(data.get('status'))} {esc(data.get('priority'))}")
            if data.get("sessionStatus"):
                text += f" agent:{status_text(data.get('sessionStatus'))}"
            return text
        if kind == "session:spawn_request":
            session = data.get("session") if isinstance(data.get("session"), dict) else {}
            return (f"{esc(session.get('id'))} \"{esc(data.get('name'))}\" for "
                    f"{esc(', '.join(data.get('taskIds') or []))} "
                    f"[dim]({esc(data.get('command'))})[/dim]")
        if kind.startswith("session:"):
            if kind == "session:deleted":
                return esc(data.get("id"))
            return self._session(data)
        return esc(json.dumps(data, ensure_ascii=False)[:200])

    @staticmethod
    def _claim(kind: str, data: dict) -> str:
        task, session = esc(data.get("taskId")), esc(data.get("sessionId"))
        token = f" [dim](token {esc(data.get('token'))})[/dim]" \
            if data.get("token") is not None else ""
        if kind == "task:claimed":
            return f"task {task} claimed by session {session}{token}"
        if kind == "task:claim_released":
            return f"task {task} released by session {session}{token}"
        return f"task {task}: the claim of session {session} expired{token}"

    @staticmethod
    def _merged(data: dict) -> str:
        commit = esc(str(data.get("commit") or "")[:10])
        how = ("already merged" if data.get("alreadyMerged") else
               "fast-forward" if data.get("fastForward") else "merge commit")
        text = (f"session {esc(data.get('sessionId'))} merged {esc(data.get('branch'))} into "
                f"{esc(data.get('baseRef'))} ({how}, {commit})")
        files = data.get("files") if isinstance(data.get("files"), list) else []
        if files:
            shown = ", ".join(str(f) for f in files[:5])
            text += f" · {len(files)} file(s): {esc(shown)}" + (" …" if len(files) > 5 else "")
        if data.get("removed"):
            text += " [dim]· worktree removed[/dim]"
        return text

    @staticmethod
    def _overlap(data: dict) -> str:
        sessions = data.get("sessionIds") if isinstance(data.get("sessionIds"), list) else []
        branches = data.get("branches") if isinstance(data.get("branches"), list) else []
        named = [f"{esc(sid)}" + (f" ({esc(branches[i])})" if i < len(branches)
                                  and branches[i] else "")
                 for i, sid in enumerate(sessions)]
        files = data.get("files") if isinstance(data.get("files"), list) else []
        return (f"sessions {' and '.join(named)} both change "
                f"{esc(', '.join(str(f) for f in files))}")

    def _session(self, data: dict) -> str:
        sid = data.get("id")
        text = f"{esc(sid)} \"{esc(data.get('name'))}\" {status_text(data.get('status'))}"
        timeline = [e for e in data.get("timeline") or [] if isinstance(e, dict)]
        events = [e for e in data.get("events") or [] if isinstance(e, dict)]
        new_timeline = timeline[self.timeline_seen.get(sid, len(timeline)):]
        new_events = events[self.events_seen.get(sid, len(events)):]
        self.timeline_seen[sid] = len(timeline)
        self.events_seen[sid] = len(events)
        for entry in new_timeline[-3:]:
            task = f" [dim]({esc(entry.get('taskId'))})[/dim]" if entry.get("taskId") else ""
            text += f" · {esc(entry.get('type'))}: \"{esc(entry.get('message'))}\"{task}"
        for event in new_events[-3:]:
            detail = event.get("data")
            if isinstance(detail, dict) and detail.get("file"):
                text += f" · {esc(event.get('type'))}: {esc(detail.get('file'))}"
            else:
                text += f" · {esc(event.get('type'))}"
        return text


def _print(out, text: str) -> None:
    out.print(text)
    sys.stdout.flush()


def stream(run: Run, flt: EventFilter, count: int | None) -> None:
    """Follow the event stream until interrupted (or `count` events shown); on a lost
    connection wait and reconnect, with a note on stderr, forever."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
    from websockets.sync.client import connect

    from .output import console

    out = None if run.json else console()
    fmt = LineFormatter()
    headers = {"Authorization": f"Bearer {run.ctx.token}"} if run.ctx.token else {}
    shown = 0
    delay = 0.5
    lost_since: float | None = None
    first = True
    while True:
        try:
            with connect(run.ctx.ws_url, additional_headers=headers, open_timeout=5,
                         ping_interval=10, ping_timeout=10, close_timeout=1,
                         max_size=None) as ws:
                try:
                    flt.seed(run)
                except CliError as err:
                    if err.exit_code in (EXIT_PERMISSION, EXIT_NOT_FOUND):
                        raise
                if first:
                    warn(f"watching {run.ctx.server} (Ctrl-C to stop)")
                elif lost_since is not None:
                    warn(f"reconnected to {run.ctx.server}; events during the "
                         f"{time.monotonic() - lost_since:.0f} s gap were not seen")
                first, lost_since, delay = False, None, 0.5
                for message in ws:
                    try:
                        event = json.loads(message)
                    except ValueError:
                        continue
                    if not isinstance(event, dict) or event.get("type") in (None, "pong"):
                        continue
                    kind, data = str(event.get("type")), event.get("data")
                    if not flt.accepts(kind, data):
                        continue
                    if run.json:
                        write_json_line({"success": True, "data": {
                            "type": kind, "data": data, "timestamp": event.get("timestamp")}})
                    else:
                        _print(out, fmt.line(kind, data, event.get("timestamp")))
                    shown += 1
                    if count is not None and shown >= count:
                        return
            _lost(run, lost_since, first, "closed by the server")
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise CliError("unauthorized" if status == 401 else "permission_denied",
                               f"The server at {run.ctx.server} refused the event stream "
                               f"(HTTP {status}).", exit_code=EXIT_PERMISSION,
                               suggestion="Set MAESTRO_TOKEN to a token the server accepts."
                               ) from None
            _lost(run, lost_since, first, f"HTTP {status}")
        except ConnectionClosed:
            _lost(run, lost_since, first, "closed by the server")
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else \
                type(exc).__name__
            _lost(run, lost_since, first, reason)
        if lost_since is None:
            lost_since = time.monotonic()
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def _lost(run: Run, lost_since: float | None, first: bool, why: str) -> None:
    if lost_since is not None:
        return  # already said so for this outage
    if first:
        warn(f"waiting for the server at {run.ctx.server} ({why}); start it with "
             "`maestro serve`")
    else:
        warn(f"connection to {run.ctx.server} lost ({why}); reconnecting...")


def watch(
    run: Run,
    task: str | None = typer.Option(None, "--task", metavar="TASK_ID",
                                       help="Only events about this task and its sessions."),
    all_projects: bool = typer.Option(False, "--all", help="Every project, ignoring "
                                      "MAESTRO_PROJECT_ID."),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after this many "
                                        "events."),
):
    """Follow live events (one line each), by project (--project) and task (--task): tasks,
    sessions, claims ("task … claimed by session …"), merges of a session's branch ("session …
    merged maestro/… into main (fast-forward, 7e24a4e936)") and sessions changing the same
    files ("sessions … and … both change src/app.py"). Reconnects by itself when the server
    restarts. With --json: one envelope per line.

    Example: maestro watch --project proj_1706789123456_k2j4n5l6m
    """
    project = None if all_projects else run.ctx.project
    if project:
        try:
            run.project()
        except CliError as err:
            if err.exit_code != EXIT_NETWORK:
                raise  # a server that is not up yet is waited for; it is checked then
    try:
        stream(run, EventFilter(project, task), count)
    except KeyboardInterrupt:
        pass


def register(root: typer.Typer) -> None:
    command(root, "watch")(watch)
