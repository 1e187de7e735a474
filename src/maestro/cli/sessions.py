"""`maestro session list|info|spawn|register|complete` (SPEC §12.3). `register` and `complete`
run from agent hooks, so they always exit 0; none of them ever invents a session id (§14.4)."""

import re

import typer

from .client import seg
from .options import Run, command
from .output import CliError, esc, fmt_time, key_values, status_text, table, usage_error

app = typer.Typer(help="Sessions (agent runs): list, show, spawn, register, complete.",
                  no_args_is_help=True)

SESSION_STATUSES = ("spawning", "running", "completed", "failed")
_TASK_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def render_sessions(sessions: list[dict]):
    def render(out):
        if not sessions:
            out.print("No sessions.")
            return
        t = table("ID", "NAME", "STATUS", "TASKS", "STARTED", "LAST ACTIVITY")
        for s in sessions:
            t.add_row(esc(s.get("id")), esc(s.get("name")), status_text(s.get("status")),
                      esc(", ".join(s.get("taskIds") or []) or "-"),
                      fmt_time(s.get("startedAt")), fmt_time(s.get("lastActivity")))
        out.print(t)
    return render


def render_session(session: dict):
    def render(out):
        meta = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
        rows = [("ID", esc(session.get("id"))), ("Name", esc(session.get("name"))),
                ("Status", status_text(session.get("status"))),
                ("Project", esc(session.get("projectId"))),
                ("Tasks", esc(", ".join(session.get("taskIds") or []) or "-"))]
        if meta.get("role"):
            rows.append(("Role", esc(meta.get("role"))))
        from .workspaces import workspace_rows

        rows += workspace_rows(session)
        rows += [("Started", fmt_time(session.get("startedAt"))),
                 ("Last activity", fmt_time(session.get("lastActivity")))]
        if session.get("completedAt"):
            rows.append(("Completed", fmt_time(session.get("completedAt"))))
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
            out.print(f"[dim]{len(events)} session event(s); last: "
                      f"{esc(events[-1].get('type'))} at "
                      f"{fmt_time(events[-1].get('timestamp'))}[/dim]")
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
    sessions = run.api.get("/api/sessions", {"projectId": run.ctx.project, "taskId": task,
                                             "status": status,
                                             "active": "true" if active else None})
    run.emit(sessions, render_sessions(sessions))


@command(app, "info")
def session_info(run: Run, session_id: str | None = typer.Argument(
        None, metavar="SESSION_ID", help="Session id [default: MAESTRO_SESSION_ID].")):
    """Show a session (by default the current one).

    Example: maestro session info
    """
    sid = session_id or run.need_session()
    session = run.api.get(f"/api/sessions/{seg(sid)}")
    run.emit(session, render_session(session))


def _short(title: str) -> str:
    return title if len(title) <= 30 else title[:30] + "..."


@command(app, "spawn")
def session_spawn(
    run: Run,
    task: str = typer.Option(..., "--task", metavar="TASK_ID", help="Task the new session "
                             "works on."),
    skill: str = typer.Option("maestro-worker", "--skill", help="Skill of the new agent; "
                              "maestro-orchestrator makes it an orchestrator."),
    name: str | None = typer.Option(None, "--name", help="Session name [default: "
                                       "'Worker: <task title>']."),
    reason: str | None = typer.Option(None, "--reason", help="Why it is spawned."),
    include_related: bool = typer.Option(False, "--include-related", help="Pass the task's "
                                         "dependencies to the new agent as context."),
):
    """Ask the server to spawn a new agent session for a task.

    Example: maestro session spawn --task task_1706790000000_a1b2c3d4e --reason "split work"
    """
    if not _TASK_ID.match(task):
        raise usage_error(f"Invalid task id '{task}'.", "Task ids contain only letters, digits, "
                          "'_' and '-'.")
    primary = run.api.get(f"/api/tasks/{seg(task)}")
    role = "orchestrator" if skill == "maestro-orchestrator" else "worker"
    context: dict = {
        "primaryTask": {k: primary.get(k) for k in ("id", "title", "description", "priority",
                                                     "status")},
        "initialCommands": ["maestro whoami", f"maestro task get {task}",
                            f'maestro report progress "<what you did>" --task {task}'],
    }
    if reason:
        context["reason"] = reason
    if include_related:
        related = []
        for dep in primary.get("dependencies") or []:
            try:
                dep_task = run.api.get(f"/api/tasks/{seg(dep)}")
            except CliError:
                continue
            related.append({k: dep_task.get(k) for k in ("id", "title", "status")})
        context["relatedTasks"] = related
    body: dict = {"projectId": primary.get("projectId"), "taskIds": [task], "role": role,
                  "skills": [skill], "context": context,
                  "sessionName": name or f"{role.capitalize()}: {_short(primary.get('title', ''))}",
                  # The documented fields (§14.4): an agent spawning a helper is an orchestrator.
                  "spawnSource": "orchestrator" if run.ctx.session else "cli"}
    if run.ctx.session:
        body["spawnedBy"] = run.ctx.session
    if reason:
        body["spawnReason"] = reason
    result = run.api.post("/api/sessions/spawn", body)

    def render(out):
        out.print(f"[green]Spawn requested:[/green] session {esc(result.get('sessionId'))} "
                  f"for task {esc(task)}")
        if result.get("manifestPath"):
            out.print(f"[dim]manifest: {esc(result['manifestPath'])}[/dim]")
    run.emit(result, render)


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
            "name": f"{run.ctx.role}: {sid[:16]}", "status": "running",
            "strategy": run.ctx.strategy, "metadata": {"role": run.ctx.role}})
    run.emit(session, lambda out: out.print(f"Session {esc(sid)} registered (running)"))


@command(app, "complete", hook=True)
def session_complete(run: Run):
    """Mark the current session completed (agent end hook). Always exits 0.

    Example: maestro session complete
    """
    sid = run.need_session()
    session = run.api.patch(f"/api/sessions/{seg(sid)}", {"status": "completed"})
    run.emit(session, lambda out: out.print(f"Session {esc(sid)} completed"))

