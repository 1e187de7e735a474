"""`maestro task list|create|get|update|complete|block|children|delete` (SPEC §12.3, §7.3.6),
speaking the documented status words (`pending`, `in_progress`, `completed`, `blocked`; §14.4).
The views `task show` and `task tree` live in task_views.py; dependencies, ready work and claims
(§15) in coordination.py."""


import typer

from ..vocabulary import TASK_PRIORITIES, TASK_STATUSES
from .claims import claim_of, claim_text, fencing_headers, forget_token
from .client import seg
from .options import Run, command
from .output import (
    CliError,
    esc,
    fmt_time,
    key_values,
    priority_text,
    status_text,
    table,
    usage_error,
    warn,
)

app = typer.Typer(help="Tasks: list, create, show, update, complete, block, tree, delete; "
                       "dependencies, ready work and claims.", no_args_is_help=True)



def task_status(value: str) -> str:
    """A documented task status; `in-progress` is read as `in_progress`, and the original CLI's
    `todo` as `pending` (with a note), since agent prompts written for it still say so."""
    word = value.strip().lower().replace("-", "_")
    if word == "todo":
        warn("'todo' is the original CLI's word for 'pending'; using 'pending'")
        return "pending"
    if word not in TASK_STATUSES:
        raise usage_error(f"Unknown task status '{value}'.",
                          f"Use one of: {', '.join(TASK_STATUSES)}.")
    return word


def task_priority(value: str) -> str:
    word = value.strip().lower()
    if word not in TASK_PRIORITIES:
        raise usage_error(f"Unknown priority '{value}'.",
                          f"Use one of: {', '.join(TASK_PRIORITIES)}.")
    return word


def get_task(run: Run, task_id: str) -> dict:
    return run.api.get(f"/api/tasks/{seg(task_id)}")


def task_rows(tasks: list[dict]):
    with_parent = any(t.get("parentId") for t in tasks)
    columns = ["ID", "STATUS", "PRIORITY", "TITLE", "AGENT"] + (["PARENT"] if with_parent else [])
    t = table(*columns)
    for task in tasks:
        row = [esc(task.get("id")), status_text(task.get("status")),
               priority_text(task.get("priority")), esc(task.get("title")),
               status_text(task.get("sessionStatus")) if task.get("sessionStatus") else "-"]
        if with_parent:
            row.append(esc(task.get("parentId") or "-"))
        t.add_row(*row)
    return t


def render_tasks(tasks: list[dict], empty: str = "No tasks."):
    def render(out):
        if not tasks:
            out.print(empty)
        else:
            out.print(task_rows(tasks))
    return render


def task_summary_rows(task: dict) -> list[tuple[str, str]]:
    rows = [("ID", esc(task.get("id"))), ("Title", f"[bold]{esc(task.get('title'))}[/bold]"),
            ("Status", status_text(task.get("status"))),
            ("Priority", priority_text(task.get("priority")))]
    if task.get("sessionStatus"):
        rows.append(("Agent status", status_text(task.get("sessionStatus"))))
    rows += [("Project", esc(task.get("projectId"))), ("Parent", esc(task.get("parentId") or "-")),
             ("Depends on", esc(", ".join(task.get("dependencies") or []) or "-")),
             ("Claim", claim_text(claim_of(task))),
             ("Sessions", esc(", ".join(task.get("sessionIds") or []) or "-")),
             ("Created", fmt_time(task.get("createdAt")))]
    if task.get("startedAt"):
        rows.append(("Started", fmt_time(task.get("startedAt"))))
    if task.get("completedAt"):
        rows.append(("Completed", fmt_time(task.get("completedAt"))))
    if task.get("description"):
        rows.append(("Description", esc(task.get("description"))))
    return rows


def render_task(task: dict):
    return lambda out: key_values(out, task_summary_rows(task))


def filter_tasks(tasks: list[dict], status: str | None, priority: str | None) -> list[dict]:
    return [t for t in tasks if (status is None or t.get("status") == status)
            and (priority is None or t.get("priority") == priority)]


def note_status_change(run: Run, task_id: str, message: str) -> None:
    """Inside a session, record a task status change in the session timeline (E2). Only an
    audit trail: a failure here never fails the command."""
    if not run.ctx.session:
        return
    try:
        run.api.post(f"/api/sessions/{seg(run.ctx.session)}/timeline",
                     {"type": "task_status_changed", "message": message, "taskId": task_id},
                     minimal=True)
    except CliError as err:
        if not run.json:
            warn(f"could not add to the session timeline: {err.message}")


STATUS_OPTION = typer.Option(None, "--status", help="Only tasks with this status: pending, "
                             "in_progress, completed, blocked.")
PRIORITY_OPTION = typer.Option(None, "--priority", help="Only tasks with this priority: low, "
                               "medium, high.")


@command(app, "list")
def task_list(
    run: Run,
    task_id: str | None = typer.Argument(None, metavar="TASK_ID",
                                            help="Show this task and its direct children."),
    status: str | None = STATUS_OPTION,
    priority: str | None = PRIORITY_OPTION,
    all_projects: bool = typer.Option(False, "--all", help="All projects, ignoring "
                                      "MAESTRO_PROJECT_ID / --project."),
    limit: int | None = typer.Option(None, "--limit", min=1, max=1000, help="One page of at "
                                     "most this many tasks (before --priority); the command "
                                     "for the next page goes to stderr."),
    cursor: str | None = typer.Option(None, "--cursor", help="The page after the one that "
                                      "named this cursor (with --limit)."),
):
    """List the tasks of the current project (or of every project with --all).

    Big lists are fetched a page at a time; --limit shows one page.

    Example: maestro task list --status in_progress --priority high --limit 100
    """
    status = task_status(status) if status else None
    priority = task_priority(priority) if priority else None
    if task_id:
        task = get_task(run, task_id)
        children = run.api.get(f"/api/tasks/{seg(task_id)}/children")
        children = filter_tasks(children, status, priority)

        def render(out):
            key_values(out, task_summary_rows(task))
            out.print()
            render_tasks(children, "No child tasks.")(out)
        run.emit({"task": task, "children": children}, render)
        return
    project = None if all_projects else run.ctx.project
    if project:
        run.project()
    query = {"projectId": project, "status": status}
    if limit is None and cursor is None:
        tasks = run.api.get_all("/api/tasks", query)
    else:
        tasks = run.api.get("/api/tasks", {**query, "limit": limit, "cursor": cursor})
        if run.api.next_cursor:
            warn(f"more tasks: add --cursor {run.api.next_cursor}")
    tasks = filter_tasks(tasks, status, priority)
    run.emit(tasks, render_tasks(tasks, "No tasks. Create one: maestro task create \"Title\""))


@command(app, "create")
def task_create(
    run: Run,
    title_arg: str | None = typer.Argument(None, metavar="TITLE", help="Task title."),
    title: str | None = typer.Option(None, "--title", "-t", help="Task title (instead of "
                                        "the argument)."),
    description: str = typer.Option("", "--desc", "-d", help="Description."),
    priority: str = typer.Option("medium", "--priority", help="low, medium or high."),
    parent: str | None = typer.Option(None, "--parent", metavar="TASK_ID",
                                         help="Parent task: makes this a child task."),
    depends_on: list[str] | None = typer.Option(None, "--depends-on", metavar="TASK_ID",
                                                   help="A task this one waits for (repeat "
                                                        "for several)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the new id."),
):
    """Create a task in the current project (or in its parent's project with --parent).

    Example: maestro task create "Add login" --priority high --depends-on task_1_abc
    """
    title = title or title_arg
    if not title or not title.strip():
        raise usage_error("A task needs a title.", 'Example: maestro task create "Add login"')
    priority = task_priority(priority)
    project = run.ctx.project
    if not project and parent:
        project = get_task(run, parent).get("projectId")
    if not project:
        run.need_project()
    body = {"projectId": project, "title": title, "description": description,
            "priority": priority, "parentId": parent}
    dependencies = [part.strip() for value in depends_on or [] for part in value.split(",")
                    if part.strip()]
    if dependencies:
        body["dependencies"] = dependencies
    task = run.api.post("/api/tasks", body)

    def render(out):
        if quiet:
            print(task["id"])
            return
        out.print(f"[green]Created task[/green] {esc(task['id'])}: {esc(task.get('title'))}")
    run.emit(task, render)


@command(app, "get")
def task_get(run: Run, task_id: str | None = typer.Argument(
        None, metavar="TASK_ID", help="Task id [default: the only id in MAESTRO_TASK_IDS].")):
    """Show one task (by default this session's task).

    Example: maestro task get task_1706790000000_a1b2c3d4e
    """
    if not task_id:
        if len(run.ctx.task_ids) == 1:
            task_id = run.ctx.task_ids[0]
        elif run.ctx.task_ids:
            raise usage_error("This session has several tasks; say which one.",
                              f"Task ids: {', '.join(run.ctx.task_ids)}")
        else:
            raise usage_error("No task id given and MAESTRO_TASK_IDS is not set.",
                              "Example: maestro task get <task-id>")
    task = get_task(run, task_id)
    run.emit(task, render_task(task))


@command(app, "update")
def task_update(
    run: Run,
    task_id: str = typer.Argument(..., metavar="TASK_ID", help="Task id."),
    status: str | None = typer.Option(None, "--status", help="pending, in_progress, "
                                         "completed or blocked."),
    priority: str | None = typer.Option(None, "--priority", help="low, medium or high."),
    title: str | None = typer.Option(None, "--title", help="New title."),
    description: str | None = typer.Option(None, "--desc", help="New description."),
):
    """Change a task's status, priority, title or description.

    Example: maestro task update task_1706790000000_a1b2c3d4e --status in_progress
    """
    body: dict = {}
    if status is not None:
        body["status"] = task_status(status)
    if priority is not None:
        body["priority"] = task_priority(priority)
    if title is not None:
        body["title"] = title
    if description is not None:
        body["description"] = description
    if not body:
        raise usage_error("Nothing to change.", "Give --status, --priority, --title or --desc.")
    task = run.api.patch(f"/api/tasks/{seg(task_id)}", body,
                         headers=fencing_headers(run, task_id))
    if "status" in body:
        note_status_change(run, task_id, f"Task status changed to {body['status']}")

    def render(out):
        changes = ", ".join(f"{k}={v}" for k, v in body.items() if k != "description")
        out.print(f"[green]Updated task[/green] {esc(task_id)}"
                  + (f" ({esc(changes)})" if changes else ""))
    run.emit(task, render)


@command(app, "complete")
def task_complete(run: Run, task_id: str = typer.Argument(..., metavar="TASK_ID",
                                                          help="Task id.")):
    """Mark a task completed.

    This ends its claim, and tasks that wait for it may become ready. Inside a session that
    holds the task's claim, the claim's token is sent along, so the write is refused (exit 6)
    if the claim was lost meanwhile.

    Example: maestro task complete task_1706790000000_a1b2c3d4e
    """
    task = run.api.patch(f"/api/tasks/{seg(task_id)}", {"status": "completed"},
                         headers=fencing_headers(run, task_id))
    forget_token(run, run.ctx.session, task_id)  # completing a task ends its claim
    note_status_change(run, task_id, "Task completed")
    run.emit(task, lambda out: out.print(f"[green]Completed task[/green] {esc(task_id)}"))


@command(app, "block")
def task_block(
    run: Run,
    task_id: str = typer.Argument(..., metavar="TASK_ID", help="Task id."),
    reason: str = typer.Option(..., "--reason", help="What blocks the task."),
):
    """Mark a task blocked, recording the reason in its timeline.

    Example: maestro task block task_1706790000000_a1b2c3d4e --reason "waiting for API keys"
    """
    if not reason.strip():
        raise usage_error("--reason must not be empty.")
    entry = {"type": "blocker", "message": reason}
    if run.ctx.session:
        entry["sessionId"] = run.ctx.session
    task = run.api.patch(f"/api/tasks/{seg(task_id)}", {"status": "blocked",
                                                        "timeline": [entry]},
                         headers=fencing_headers(run, task_id))
    note_status_change(run, task_id, f"Task blocked: {reason}")
    run.emit(task, lambda out: out.print(f"[red]Blocked task[/red] {esc(task_id)}: "
                                         f"{esc(reason)}"))


def descendants(run: Run, task_id: str, seen: set[str]) -> list[dict]:
    """Children of a task, each with its own `children`, one request per task."""
    nodes = []
    for child in run.api.get(f"/api/tasks/{seg(task_id)}/children"):
        if child.get("id") in seen:
            continue
        seen.add(child["id"])
        nodes.append({**child, "children": descendants(run, child["id"], seen)})
    return nodes


@command(app, "children")
def task_children(
    run: Run,
    task_id: str = typer.Argument(..., metavar="TASK_ID", help="Parent task id."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Children of children "
                                   "too (as a tree)."),
):
    """List the child tasks of a task.

    Example: maestro task children task_1706790000000_a1b2c3d4e --recursive
    """
    if not recursive:
        children = run.api.get(f"/api/tasks/{seg(task_id)}/children")
        run.emit(children, render_tasks(children, "No child tasks."))
        return
    nodes = descendants(run, task_id, {task_id})

    def render(out):
        from .task_views import tree_of

        if not nodes:
            out.print("No child tasks.")
        else:
            out.print(tree_of(esc(task_id), nodes))
    run.emit(nodes, render)


@command(app, "delete")
def task_delete(
    run: Run,
    task_id: str = typer.Argument(..., metavar="TASK_ID", help="Task id."),
    cascade: bool = typer.Option(False, "--cascade", help="Also delete all its subtasks "
                                 "(without it, a task with subtasks is refused)."),
):
    """Delete a task (with --cascade, also its subtasks).

    It is unlinked from its sessions, removed from the dependencies of the
    tasks that waited for it, and its claim ends. A task with subtasks needs --cascade.

    Example: maestro task delete task_1706790000000_a1b2c3d4e --cascade
    """
    result = run.api.delete(f"/api/tasks/{seg(task_id)}",
                            {"cascade": "true"} if cascade else None)
    forget_token(run, run.ctx.session, task_id)

    def render(out):
        deleted = result.get("deleted") if isinstance(result, dict) else None
        more = len(deleted) - 1 if isinstance(deleted, list) and len(deleted) > 1 else 0
        out.print(f"[red]Deleted task[/red] {esc(task_id)}"
                  + (f" and {more} subtask(s)" if more else ""))
    run.emit(result, render)
