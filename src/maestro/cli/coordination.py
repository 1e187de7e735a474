"""How a team of agents shares work (SPEC §15): `maestro task ready|blocked` (what can start now
and what waits), `maestro task claim|release` (take a task so that nobody else does, give it
back) and `maestro task depend` (which task waits for which)."""

import typer

from .claims import claim_of, claim_text, forget_token, held_by, keep_token
from .client import seg
from .options import Run, command
from .output import (
    EXIT_CLAIMED,
    CliError,
    esc,
    print_table,
    priority_text,
    status_text,
    usage_error,
)
from .tasks import app, get_task, render_tasks

TTL_OPTION = typer.Option(None, "--ttl", metavar="SECONDS",
                          help="Lease length in seconds, 5 to 86400 [server default 600]. The "
                               "launcher renews the leases of a live agent.")


def readiness_of(run: Run, task_id: str) -> dict | None:
    """`GET /api/tasks/:id/readiness`, or None when the server cannot say."""
    try:
        answer = run.api.get(f"/api/tasks/{seg(task_id)}/readiness")
    except CliError:
        return None
    return answer if isinstance(answer, dict) else None


def waiting_text(readiness: dict | None) -> str:
    """What holds a pending task back, in one line (ids, as the server names them)."""
    if not readiness:
        return "-"
    parts = []
    if readiness.get("blockedBy"):
        parts.append("after " + ", ".join(map(str, readiness["blockedBy"])))
    if readiness.get("missingDependencies"):
        parts.append("missing " + ", ".join(map(str, readiness["missingDependencies"])))
    if readiness.get("blockedAncestors"):
        parts.append("held by parent " + ", ".join(map(str, readiness["blockedAncestors"])))
    if claim_of(readiness):
        parts.append(f"claimed by {readiness['claim'].get('sessionId')}")
    return esc("; ".join(parts)) if parts else "-"


@command(app, "ready")
def task_ready(
    run: Run,
    parent: str | None = typer.Option(None, "--parent", metavar="TASK_ID",
                                         help="Only tasks under this parent task."),
    all_projects: bool = typer.Option(False, "--all", help="All projects, ignoring "
                                      "MAESTRO_PROJECT_ID / --project."),
):
    """List tasks that can start now.

    Ready means: pending, every dependency completed, no blocked parent, nobody holding
    it. Highest priority first, then oldest; `task claim --next` takes the
    first one that has no unfinished subtasks.

    Example: maestro task ready --parent task_1706790000000_a1b2c3d4e
    """
    project = None if all_projects else run.ctx.project
    if project:
        run.project()
    tasks = run.api.get("/api/tasks", {"ready": "true", "projectId": project,
                                       "parentId": parent})
    run.emit(tasks, render_tasks(tasks, "Nothing is ready. `maestro task blocked` shows what "
                                        "waits."))


@command(app, "blocked")
def task_blocked(
    run: Run,
    all_projects: bool = typer.Option(False, "--all", help="All projects, ignoring "
                                      "MAESTRO_PROJECT_ID / --project."),
):
    """List pending tasks held back by dependencies or a parent, with what they wait for.

    In --json each task comes with the server's `readiness` object (blockedBy,
    missingDependencies, blockedAncestors, claim).

    Example: maestro task blocked --json
    """
    project = None if all_projects else run.ctx.project
    if project:
        run.project()
    tasks = run.api.get("/api/tasks", {"blocked": "true", "projectId": project})
    rows = [{**task, "readiness": readiness_of(run, task["id"])} for task in tasks
            if isinstance(task, dict) and isinstance(task.get("id"), str)]

    def render(out):
        print_table(out, rows, "Nothing is waiting.", ("ID", "PRIORITY", "TITLE", "WAITING FOR"),
                    lambda task: (esc(task.get("id")), priority_text(task.get("priority")),
                                  esc(task.get("title")), waiting_text(task.get("readiness"))))
    run.emit(rows, render)


def render_grant(result: dict, quiet: bool):
    def render(out):
        task, claim = result.get("task"), result.get("claim")
        if quiet:
            if task:
                print(task["id"])
            return
        if not task:
            out.print("Nothing is ready to claim.")
            return
        out.print(f"[green]Claimed task[/green] {esc(task.get('id'))}: "
                  f"[bold]{esc(task.get('title'))}[/bold]")
        out.print(f"[dim]claim: {claim_text(claim)}[/dim]")
    return render


@command(app, "claim")
def task_claim(
    run: Run,
    task_id: str | None = typer.Argument(None, metavar="TASK_ID",
                                            help="The task to claim (or use --next)."),
    next_ready: bool = typer.Option(False, "--next", help="Claim the first ready task of the "
                                    "project (highest priority, oldest) that has no "
                                    "unfinished subtasks."),
    parent: str | None = typer.Option(None, "--parent", metavar="TASK_ID",
                                         help="With --next: only under this parent task."),
    ttl: int | None = TTL_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the claimed task's "
                               "id (nothing when nothing is ready)."),
):
    """Claim a task (or the next ready one) for the current session.

    The session is MAESTRO_SESSION_ID or --session. The task becomes
    in_progress and no other session can take it while the lease lasts. Claiming a task the
    session already holds renews the lease. With --next, the server picks the task; when
    nothing is ready the answer is empty (`task` null in --json), exit 0.

    Exit codes: 6 another session holds the task, 7 the task is not ready (its dependencies
    are not completed, a parent is blocked, or it is not pending).

    Example: maestro task claim --next --ttl 1800
    """
    if bool(task_id) == next_ready:
        raise usage_error("Give a task id or --next (not both).",
                          "Example: maestro task claim --next")
    if parent and not next_ready:
        raise usage_error("--parent goes with --next.",
                          "Example: maestro task claim --next --parent <task-id>")
    session = run.need_session()
    body: dict = {"sessionId": session}
    if ttl is not None:
        body["ttlSeconds"] = ttl
    if task_id:
        result = run.api.post(f"/api/tasks/{seg(task_id)}/claim", body)
    else:
        project = run.ctx.project
        if not project and parent:
            project = get_task(run, parent).get("projectId")
        if not project:
            project = run.need_project()
        if parent:
            body["parentId"] = parent
        result = run.api.post(f"/api/projects/{seg(project)}/claim-next", body)
    granted, claim = result.get("task"), result.get("claim")
    if isinstance(granted, dict) and isinstance(claim, dict):
        keep_token(run, session, granted.get("id"), claim.get("token"))
    run.emit(result, render_grant(result, quiet))


@command(app, "release")
def task_release(
    run: Run,
    task_id: str = typer.Argument(..., metavar="TASK_ID", help="The claimed task."),
    reason: str | None = typer.Option(None, "--reason", help="Why the task is given back "
                                         "(kept with the release)."),
):
    """Give back a claimed task.

    The claim ends and a task that is not completed goes back to
    pending, ready for someone else. Inside a session only that session's own claim can be
    released (exit 6 when it does not hold the task); outside a session, a person releases
    whoever holds it (e.g. an agent that died).

    Example: maestro task release task_1706790000000_a1b2c3d4e --reason "needs a designer"
    """
    task = get_task(run, task_id)
    claim = claim_of(task)
    session = run.ctx.session
    if session:
        if not held_by(task, session):
            forget_token(run, session, task_id)
            holder = claim.get("sessionId") if claim else None
            raise CliError("claim_lost", f"Session {session} does not hold task {task_id}"
                           + (f" (held by {holder})." if holder else " (nobody holds it)."),
                           exit_code=EXIT_CLAIMED,
                           details={"taskId": task_id, "sessionId": session,
                                    "holder": claim})
    elif not claim:
        raise CliError("not_claimed", f"Task {task_id} is not claimed.",
                       details={"taskId": task_id},
                       suggestion="Nothing to release.")
    body: dict = {"sessionId": claim["sessionId"], "token": claim.get("token")}
    if reason:
        body["reason"] = reason
    result = run.api.post(f"/api/tasks/{seg(task_id)}/claim/release", body)
    forget_token(run, session, task_id)
    released = result.get("task") if isinstance(result, dict) else None

    def render(out):
        status = status_text((released or {}).get("status"))
        out.print(f"[green]Released task[/green] {esc(task_id)} (now {status})")
    run.emit(result, render)


def dependency_rows(run: Run, task: dict) -> list[dict]:
    """Each dependency of `task` as {id, title, status}, or {id, missing: true}."""
    rows = []
    for dep_id in task.get("dependencies") or []:
        try:
            dep = get_task(run, dep_id)
        except CliError as err:
            if err.exit_code != 2:
                raise
            rows.append({"id": dep_id, "missing": True})
            continue
        rows.append({"id": dep_id, "title": dep.get("title"), "status": dep.get("status")})
    return rows


@command(app, "depend")
def task_depend(
    run: Run,
    task_id: str = typer.Argument(..., metavar="TASK_ID", help="The task that waits."),
    on: list[str] = typer.Option(..., "--on", metavar="TASK_ID",
                                 help="The task it waits for (repeat for several)."),
    remove: bool = typer.Option(False, "--remove", help="Remove these dependencies instead "
                                "of adding them."),
):
    """Make a task wait for others (or, with --remove, stop waiting).

    It is ready only once every task it depends on is
    completed (its subtasks wait too). Adding an edge that is already there, or removing one
    that is not, changes nothing. A dependency must be in the same project and must not close
    a cycle (exit 1, DEPENDENCY_CYCLE, with the cycle).

    Example: maestro task depend task_1706790000000_a1b2c3d4e --on task_1706790000001_f5e6d7c8b
    """
    ids = [part.strip() for value in on for part in value.split(",") if part.strip()]
    if not ids:
        raise usage_error("Name at least one task with --on.",
                          "Example: maestro task depend <task-id> --on <other-task-id>")
    task = None
    for dep_id in ids:
        path = f"/api/tasks/{seg(task_id)}/dependencies/{seg(dep_id)}"
        task = run.api.delete(path) if remove else run.api.post(path)
    deps = task.get("dependencies") or []

    def render(out):
        verb = "no longer waits for" if remove else "waits for"
        out.print(f"[green]Task[/green] {esc(task_id)} {verb} {esc(', '.join(ids))}")
        out.print(f"[dim]dependencies now: {esc(', '.join(deps)) or 'none'}[/dim]")
    run.emit(task, render)


def readiness_rows(readiness: dict | None, task: dict) -> list[tuple[str, str]]:
    """One `Ready` row: yes, or what the task waits for."""
    if readiness is None:
        return []
    if readiness.get("ready"):
        return [("Ready", "[green]yes[/green]")]
    if task.get("status") != "pending":
        return [("Ready", f"no ({status_text(task.get('status'))})")]
    return [("Ready", f"[yellow]no[/yellow]: {waiting_text(readiness)}")]
