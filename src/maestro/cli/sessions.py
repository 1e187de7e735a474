"""`maestro session list|info|spawn|register|complete` (SPEC §12.3); `stop`, `log` and
`delete` live in session_control.py. `register` and `complete` run from agent hooks, so they
always exit 0; none of them ever invents a session id (§14.4)."""

import re

import typer

from ..session_names import session_name
from ..spawn.endings import end_message
from ..vocabulary import END_EVENT_TYPES, FINAL_SESSION_STATUSES, SESSION_STATUSES
from .client import seg
from .options import Run, command
from .output import (
    CliError,
    esc,
    fmt_time,
    key_values,
    print_table,
    status_text,
    table,
    usage_error,
)

app = typer.Typer(help="Sessions (agent runs): list, info (alias show), spawn, stop, log, "
                       "delete, register, complete.", no_args_is_help=True)

_TASK_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def end_event(session: dict) -> dict | None:
    """The data of the last event saying how the session's agent ended, if any."""
    for event in reversed(session.get("events") or []):
        if isinstance(event, dict) and event.get("type") in END_EVENT_TYPES \
                and isinstance(event.get("data"), dict):
            return event["data"]
    return None


def how_it_ended(session: dict) -> str | None:
    """What ended a session ("stopped by the user", "the agent exited with code 3: …"), from
    its metadata (`endMessage`, written by the launcher) or its last exit event."""
    meta = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
    if isinstance(meta.get("endMessage"), str) and meta["endMessage"]:
        return meta["endMessage"]
    if session.get("status") not in FINAL_SESSION_STATUSES:
        return None
    data = end_event(session)
    if data is None:
        return None
    if data.get("reason") is None and "exitCode" in data:  # written by `worker init`
        code = data.get("exitCode")
        return "the agent exited normally (code 0)" if code == 0 else \
            f"the agent exited with code {code}"
    return end_message(data, data.get("stoppedBy")) if data.get("reason") else \
        data.get("message")


def status_with_end(session: dict) -> str:
    """The status, and for a failed or stopped session what ended it ("stopped by the
    user")."""
    text = status_text(session.get("status"))
    meta = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
    if session.get("status") == "failed" or meta.get("endReason") == "stopped":
        ended = how_it_ended(session)
        if ended:
            text += f" [dim]({esc(ended if len(ended) <= 60 else ended[:60] + '...')})[/dim]"
    return text


def render_sessions(sessions: list[dict]):
    def render(out):
        print_table(out, sessions, "No sessions.",
                    ("ID", "NAME", "STATUS", "TASKS", "STARTED", "LAST ACTIVITY"),
                    lambda s: (esc(s.get("id")), esc(s.get("name")), status_with_end(s),
                               esc(", ".join(s.get("taskIds") or []) or "-"),
                               fmt_time(s.get("startedAt")), fmt_time(s.get("lastActivity"))))
    return render


def _event_summary(event: dict) -> str:
    data = event.get("data")
    if not isinstance(data, dict):
        return ""
    if event.get("type") in END_EVENT_TYPES:
        return how_it_ended({"status": "failed", "events": [event]}) or ""
    if event.get("type") == "process_started":
        return f"pid {data.get('pid')} ({data.get('mode')}): {data.get('command')}"
    if data.get("file"):
        return str(data["file"])
    return ", ".join(f"{k}={v}" for k, v in list(data.items())[:4])


def render_session(session: dict):
    def render(out):
        meta = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
        rows = [("ID", esc(session.get("id"))), ("Name", esc(session.get("name"))),
                ("Status", status_text(session.get("status"))),
                ("Project", esc(session.get("projectId"))),
                ("Tasks", esc(", ".join(session.get("taskIds") or []) or "-"))]
        if meta.get("role"):
            rows.append(("Role", esc(meta.get("role"))))
        if meta.get("agent"):
            rows.append(("Agent", esc(meta.get("agent"))))
        if meta.get("spawnedBy"):
            rows.append(("Spawned by", esc(meta.get("spawnedBy"))))
        from .workspaces import workspace_rows

        rows += workspace_rows(session)
        rows += [("Started", fmt_time(session.get("startedAt"))),
                 ("Last activity", fmt_time(session.get("lastActivity")))]
        if session.get("completedAt"):
            rows.append(("Completed", fmt_time(session.get("completedAt"))))
        ended = how_it_ended(session)
        if ended:
            rows.append(("Ended", f"[red]{esc(ended)}[/red]"
                         if session.get("status") == "failed" else esc(ended)))
        exit_data = end_event(session)
        if exit_data is not None and (exit_data.get("exitCode") is not None
                                      or exit_data.get("signal")):
            rows.append(("Exit", esc(f"code {exit_data.get('exitCode')}"
                                     if exit_data.get("exitCode") is not None
                                     else f"signal {exit_data.get('signal')}")))
        key_values(out, rows)
        timeline = [e for e in session.get("timeline") or [] if isinstance(e, dict)]
        if timeline:
            out.print()
            t = table("TIME", "TYPE", "TASK", "MESSAGE", title="Timeline")
            for e in timeline[-20:]:
                t.add_row(fmt_time(e.get("timestamp")), esc(e.get("type")),
                          esc(e.get("taskId") or ""), esc(e.get("message") or ""))
            out.print(t)
        events = [e for e in session.get("events") or [] if isinstance(e, dict)]
        if events:
            out.print()
            t = table("TIME", "EVENT", "DETAIL",
                      title="Events" + (f" (last 10 of {len(events)})" if len(events) > 10
                                        else ""))
            for e in events[-10:]:
                t.add_row(fmt_time(e.get("timestamp")), esc(e.get("type")),
                          esc(_event_summary(e)))
            out.print(t)
    return render


@command(app, "list")
def session_list(
    run: Run,
    task: str | None = typer.Option(None, "--task", metavar="TASK_ID",
                                       help="Only sessions working on this task."),
    status: str | None = typer.Option(None, "--status", help="spawning, running, "
                                         "completed or failed."),
    active: bool = typer.Option(False, "--active", help="Only sessions not completed or "
                                "failed."),
):
    """List the sessions of the current project.

    Example: maestro session list --task task_1706790000000_a1b2c3d4e --active
    """
    if status and status not in SESSION_STATUSES:
        raise usage_error(f"Unknown session status '{status}'.",
                          f"Use one of: {', '.join(SESSION_STATUSES)}.")
    run.project_or_none()
    sessions = run.api.get("/api/sessions", {"projectId": run.ctx.project, "taskId": task,
                                             "status": status,
                                             "active": "true" if active else None})
    run.emit(sessions, render_sessions(sessions))


def session_info(run: Run, session_id: str | None = typer.Argument(
        None, metavar="SESSION_ID", help="Session id [default: MAESTRO_SESSION_ID].")):
    """Show a session (by default the current one): its tasks, how its agent ended, its
    timeline and its last events.

    Example: maestro session info sess_1706792222222_lmn678abc
    """
    sid = session_id or run.need_session()
    session = run.api.get(f"/api/sessions/{seg(sid)}")
    run.emit(session, render_session(session))


command(app, "info")(session_info)
command(app, "show", hidden=True)(session_info)  # `task show` and `project show` say so too


@command(app, "spawn")
def session_spawn(
    run: Run,
    tasks: list[str] = typer.Option(..., "--task", metavar="TASK_ID", help="A task the new "
                                    "session works on (repeat, or separate with commas, for "
                                    "several)."),
    agent: str | None = typer.Option(None, "--agent", metavar="NAME|COMMAND",
                                        help="The agent to run: claude, codex, or a command "
                                             "line ({prompt_file}, {manifest}, {prompt}, "
                                             "{session_id} and {model} are filled in) "
                                             "[default: the server's MAESTRO_AGENT]."),
    skill: str = typer.Option("maestro-worker", "--skill", help="Skill of the new agent; "
                              "maestro-orchestrator makes it an orchestrator."),
    name: str | None = typer.Option(None, "--name", help="Session name [default: "
                                       "'Worker: <first task title>' (+N more)]."),
    reason: str | None = typer.Option(None, "--reason", help="Why it is spawned."),
    include_related: bool = typer.Option(False, "--include-related", help="Pass the tasks' "
                                         "dependencies to the new agent as context."),
    isolation: str | None = typer.Option(None, "--isolation", metavar="worktree|none",
                                            help="Where the agent works: worktree (a git "
                                                 "worktree and branch of its own) or none (the "
                                                 "project's working dir itself) [default: the "
                                                 "project's setting, else worktree]."),
    base: str | None = typer.Option(None, "--base", metavar="REF",
                                       help="Branch or commit the session's branch starts "
                                            "from [default: the project's base ref, else the "
                                            "main worktree's current branch]."),
):
    """Spawn a new agent session for one or more tasks of a project.

    With the server's local launcher the agent starts at once (or waits for a free slot);
    the answer says which, with its pid, and where it works (its branch, or the project's
    folder and why). Follow it with `maestro session log ID -f`, stop it with
    `maestro session stop ID`.

    Example: maestro session spawn --task task_1706790000000_a1b2c3d4e --agent codex

    Example: maestro session spawn --task task_1706790000000_a1b2c3d4e --base develop

    Example: maestro session spawn --task task_1706790000000_a1b2c3d4e --isolation none
    """
    from .workspaces import isolation_choice

    isolation = isolation_choice(isolation)
    base = base.strip() if base is not None else None
    if base is not None and (not base or base.startswith("-") or any(c.isspace() for c in base)):
        raise usage_error(f"Invalid --base '{base}'.", "Name a branch or commit, e.g. "
                          "--base develop.")
    task_ids = [part.strip() for value in tasks for part in value.split(",") if part.strip()]
    if not task_ids:
        raise usage_error("Name at least one task with --task.",
                          "Example: maestro session spawn --task <task-id>")
    for task in task_ids:
        if not _TASK_ID.match(task):
            raise usage_error(f"Invalid task id '{task}'.", "Task ids contain only letters, "
                              "digits, '_' and '-'.")
    if agent is not None and not agent.strip():
        raise usage_error("--agent must not be empty.",
                          "Use claude, codex or a command line.")
    found = [run.api.get(f"/api/tasks/{seg(task)}") for task in dict.fromkeys(task_ids)]
    primary = found[0]
    projects = {t.get("projectId") for t in found}
    if len(projects) > 1:
        raise usage_error("The tasks belong to different projects; a session works in one.",
                          f"Projects: {', '.join(sorted(map(str, projects)))}")
    role = "orchestrator" if skill == "maestro-orchestrator" else "worker"
    context: dict = {
        "primaryTask": {k: primary.get(k) for k in ("id", "title", "description", "priority",
                                                     "status")},
        "initialCommands": ["maestro whoami", f"maestro task get {primary['id']}",
                            f'maestro report progress "<what you did>" --task {primary["id"]}'],
    }
    if reason:
        context["reason"] = reason
    if include_related:
        related = []
        for dep in dict.fromkeys(d for t in found for d in t.get("dependencies") or []):
            try:
                dep_task = run.api.get(f"/api/tasks/{seg(dep)}")
            except CliError:
                continue
            related.append({k: dep_task.get(k) for k in ("id", "title", "status")})
        context["relatedTasks"] = related
    body: dict = {"projectId": primary.get("projectId"), "taskIds": [t["id"] for t in found],
                  "role": role, "skills": [skill], "context": context,
                  # The documented fields (§14.4): an agent spawning a helper is an orchestrator.
                  "spawnSource": "orchestrator" if run.ctx.session else "cli"}
    if name:
        body["sessionName"] = name  # else the server names it after the tasks
    if agent:
        body["agent"] = agent.strip()
    if run.ctx.session:
        body["spawnedBy"] = run.ctx.session
    if reason:
        body["spawnReason"] = reason
    if isolation:
        body["isolation"] = isolation
    if base:
        body["baseRef"] = base
    result = run.api.post("/api/sessions/spawn", body)

    def render(out):
        sid = result.get("sessionId")
        session = result.get("session") if isinstance(result.get("session"), dict) else {}
        out.print(f"[green]Spawned[/green] session {esc(sid)} \"{esc(session.get('name'))}\"")
        if result.get("message"):
            out.print(esc(result["message"]))
        where = _where_it_works(session.get("workspace"))
        if where:
            out.print(where)
        launch = result.get("launch") if isinstance(result.get("launch"), dict) else {}
        if launch.get("attach"):
            out.print(f"[dim]watch it: {esc(launch['attach'])}[/dim]")
        out.print(f"[dim]follow its output: maestro session log {esc(sid)} -f; stop it: "
                  f"maestro session stop {esc(sid)}[/dim]")
    run.emit(result, render)


def _where_it_works(ws) -> str | None:
    """One line for a spawn's answer: the session's branch, or the folder it shares and why."""
    if not isinstance(ws, dict):
        return None
    if ws.get("mode") == "worktree":
        return (f"Works on branch {esc(ws.get('branch'))} from {esc(ws.get('baseRef'))} "
                f"[dim]({esc(str(ws.get('baseCommit') or '')[:10])}, in "
                f"{esc(ws.get('path'))})[/dim]")
    return (f"Works in {esc(ws.get('path') or 'no folder')} "
            f"[dim]({esc(ws.get('reason') or 'no worktree')})[/dim]")


@command(app, "register", hook=True)
def session_register(run: Run):
    """Register the current session with the server (agent start hook). Marks it running,
    creating it if the server does not know it. Always exits 0.

    Example: MAESTRO_SESSION_ID=sess_1 MAESTRO_PROJECT_ID=proj_1 maestro session register
    """
    sid = run.need_session()
    path = f"/api/sessions/{seg(sid)}"
    try:
        run.api.get(path)
        exists = True
    except CliError as err:
        if err.exit_code != 2:
            raise
        exists = False
    if exists:
        session = run.api.patch(path, {"status": "running"})
    else:
        project = run.need_project()
        session = run.api.post("/api/sessions", {
            "id": sid, "projectId": project, "taskIds": run.ctx.task_ids,
            "name": _register_name(run, sid), "status": "running",
            "strategy": run.ctx.strategy, "metadata": {"role": run.ctx.role}})
    run.emit(session, lambda out: out.print(f"Session {esc(sid)} registered (running)"))


def _register_name(run: Run, sid: str) -> str:
    """A session the server does not know yet is named after its tasks, as a spawned one is
    (the original's `<role>: <session id>` when their titles cannot be read)."""
    titles = []
    for task_id in run.ctx.task_ids:
        try:
            titles.append(run.api.get(f"/api/tasks/{seg(task_id)}").get("title") or task_id)
        except CliError:
            titles.append(task_id)
    return session_name(run.ctx.role, titles) if titles else f"{run.ctx.role}: {sid[:16]}"


@command(app, "complete", hook=True)
def session_complete(run: Run):
    """Mark the current session completed (agent end hook). Always exits 0.

    Example: maestro session complete
    """
    sid = run.need_session()
    session = run.api.patch(f"/api/sessions/{seg(sid)}", {"status": "completed"})
    run.emit(session, lambda out: out.print(f"Session {esc(sid)} completed"))

