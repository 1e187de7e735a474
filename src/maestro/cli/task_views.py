"""`maestro task tree [ROOT]` (the hierarchy, coloured by status and priority, with readiness,
dependencies and claims) and `maestro task show ID` (a task with its dependencies, readiness,
claim, timeline and sessions)."""


import typer

from ..domain.history import merged_history
from .claims import claim_of, lease_left_ms
from .client import seg
from .coordination import dependency_rows, readiness_of, readiness_rows
from .options import Run, command
from .output import (
    STATUS_STYLE,
    CliError,
    esc,
    fmt_clock,
    fmt_time,
    key_values,
    priority_text,
    status_text,
    table,
)
from .tasks import app, get_task, task_status, task_summary_rows

STATUS_MARK = {"pending": "○", "in_progress": "◐", "completed": "●", "blocked": "✖"}


READINESS_STYLE = {"ready": "[bold green]ready[/bold green]",
                   "blocked": "[yellow]blocked[/yellow]"}


def node_label(task: dict, dim: bool = False, titles: dict[str, dict] | None = None) -> str:
    """One tree line: status mark, title, status, priority, readiness of a pending task, the
    agent's status, the claim holder with its lease end, and what the task waits for."""
    status = task.get("status")
    mark = STATUS_MARK.get(status, "·")
    label = (f"{status_text(mark) if status in STATUS_MARK else mark} "
             f"{'[dim]' if dim else '[bold]'}{esc(task.get('title'))}"
             f"{'[/dim]' if dim else '[/bold]'}  {status_text(status)}  "
             f"{priority_text(task.get('priority'))}")
    if task.get("readiness") in READINESS_STYLE:
        label += f"  {READINESS_STYLE[task['readiness']]}"
    if task.get("sessionStatus"):
        label += f"  agent:{status_text(task.get('sessionStatus'))}"
    claim = claim_of(task)
    if claim:
        left = lease_left_ms(claim)
        until = "expired" if left is not None and left <= 0 else \
            f"until {fmt_clock(claim.get('leaseExpiresAt'))}"
        label += f"  [magenta]claimed by {esc(claim.get('sessionId'))} {until}[/magenta]"
    deps = task.get("dependencies") or []
    if deps:
        names = []
        for dep_id in deps:
            dep = (titles or {}).get(dep_id)
            if dep is None:
                names.append(f"[dim]{esc(dep_id)}[/dim]")
            else:
                style = STATUS_STYLE.get(str(dep.get("status")))
                name = esc(dep.get("title") or dep_id)
                names.append(f"[{style}]{name}[/{style}]" if style else name)
        label += "  after: " + ", ".join(names)
    return label + f"  [dim]{esc(task.get('id'))}[/dim]"


def tree_of(title: str, nodes: list[dict], titles: dict[str, dict] | None = None):
    """A rich Tree of nested task nodes (each a task with `children`)."""
    from rich.tree import Tree

    root = Tree(title, guide_style="dim")
    for node in nodes:
        _add(root, node, titles)
    return root


def mark_readiness(run: Run, tasks: list[dict], project: str | None) -> None:
    """Give every pending task a `readiness` of `ready` or `blocked` (held back by its
    dependencies or a parent), as the server computes it (SPEC §15.2). An older server that
    cannot say leaves them unmarked."""
    try:
        ready = {t.get("id") for t in run.api.get("/api/tasks", {"ready": "true",
                                                                 "projectId": project})}
        blocked = {t.get("id") for t in run.api.get("/api/tasks", {"blocked": "true",
                                                                   "projectId": project})}
    except CliError:
        return
    if ready & blocked:  # a server without these filters answers with every task
        return
    for task in tasks:
        if task.get("id") in ready:
            task["readiness"] = "ready"
        elif task.get("id") in blocked:
            task["readiness"] = "blocked"


def build_forest(tasks: list[dict], root_id: str | None = None,
                 max_depth: int | None = None) -> list[dict]:
    """Nest tasks under their parents. Roots are tasks without a parent, or whose parent is not
    among `tasks` (a deleted parent must not hide its children). A cycle in old data cannot
    loop: each task appears once."""
    by_id = {t["id"]: t for t in tasks if isinstance(t.get("id"), str)}
    children: dict[str, list[dict]] = {}
    for task in tasks:
        parent = task.get("parentId")
        if parent and parent in by_id and parent != task.get("id"):
            children.setdefault(parent, []).append(task)
    seen: set[str] = set()

    def nest(task: dict, depth: int) -> dict:
        seen.add(task["id"])
        kids = []
        if max_depth is None or depth < max_depth:
            kids = [nest(c, depth + 1) for c in children.get(task["id"], [])
                    if c["id"] not in seen]
        return {**task, "children": kids}

    if root_id is not None:
        return [nest(by_id[root_id], 1)] if root_id in by_id else []
    roots = [t for t in tasks if not t.get("parentId") or t.get("parentId") not in by_id]
    forest = [nest(t, 1) for t in roots if t["id"] not in seen]
    # Members of a parent cycle have no root; show them rather than lose them.
    forest += [nest(t, 1) for t in tasks if t["id"] not in seen]
    return forest


def keep_status(nodes: list[dict], status: str) -> list[dict]:
    """Only branches containing a task with `status`; ancestors kept for context are marked
    `_context` (drawn dim, dropped from JSON)."""
    kept = []
    for node in nodes:
        kids = keep_status(node.get("children", []), status)
        if node.get("status") == status:
            kept.append({**node, "children": kids})
        elif kids:
            kept.append({**node, "children": kids, "_context": True})
    return kept


def strip_private(nodes: list[dict]) -> list[dict]:
    return [{k: v for k, v in node.items() if k != "_context"} | {
        "children": strip_private(node.get("children", []))} for node in nodes]


@command(app, "tree")
def task_tree(
    run: Run,
    root_arg: str | None = typer.Argument(None, metavar="ROOT",
                                             help="Show only this task and its descendants."),
    root: str | None = typer.Option(None, "--root", metavar="TASK_ID",
                                       help="Same as ROOT."),
    depth: int | None = typer.Option(None, "--depth", min=1,
                                        help="Levels to show (1 = only the top tasks)."),
    status: str | None = typer.Option(None, "--status", help="Only branches with tasks "
                                         "of this status."),
):
    """Show the task hierarchy as a tree, coloured by status and priority.

    A pending task is marked `ready` (it can start now) or `blocked` (it waits for
    dependencies or a parent); a claimed task shows its holder and when the lease ends;
    `after:` names the tasks it waits for, coloured by their status. In --json each task has
    `readiness` (ready, blocked or absent).

    Example: maestro task tree --status blocked
    """
    root_id = root_arg or root
    status = task_status(status) if status else None
    projects: dict[str, str] = {}
    if root_id:
        top = get_task(run, root_id)
        tasks = run.api.get("/api/tasks", {"projectId": top.get("projectId")})
        if not any(t.get("id") == root_id for t in tasks):
            tasks.append(top)
        mark_readiness(run, tasks, top.get("projectId"))
        forest = build_forest(tasks, root_id, depth)
        title = f"[bold]{esc(top.get('title'))}[/bold] [dim]subtree[/dim]"
    elif run.ctx.project:
        project = run.project()
        tasks = run.api.get("/api/tasks", {"projectId": run.ctx.project})
        mark_readiness(run, tasks, run.ctx.project)
        forest = build_forest(tasks, None, depth)
        title = (f"[bold blue]{esc(project.get('name') or run.ctx.project)}[/bold blue] "
                 f"[dim]{esc(run.ctx.project)}[/dim]")
    else:
        tasks = run.api.get("/api/tasks")
        projects = {p["id"]: p.get("name", p["id"]) for p in run.api.get("/api/projects")}
        mark_readiness(run, tasks, None)
        forest = build_forest(tasks, None, depth)
        title = "[bold]All projects[/bold]"
    if status:
        forest = keep_status(forest, status)
    by_id = {t.get("id"): t for t in tasks}

    def render(out):
        if not forest:
            out.print("No tasks." if not status else f"No {status} tasks.")
            return
        if root_id or run.ctx.project:
            out.print(tree_of(title, forest, by_id))
            return
        from rich.tree import Tree

        top = Tree(title, guide_style="dim")
        for project_id in dict.fromkeys(n.get("projectId") for n in forest):
            name = projects.get(project_id, project_id)
            branch = top.add(f"[bold blue]{esc(name)}[/bold blue] [dim]{esc(project_id)}[/dim]")
            for node in forest:
                if node.get("projectId") == project_id:
                    _add(branch, node, by_id)
        out.print(top)

    run.emit(strip_private(forest), render)


def _add(branch, node: dict, titles: dict[str, dict] | None = None) -> None:
    child = branch.add(node_label(node, dim=node.get("_context", False), titles=titles))
    for kid in node.get("children", []):
        _add(child, kid, titles)


def merged_timeline(task: dict, sessions: list[dict]) -> list[dict]:
    """The task's own timeline plus what its sessions reported about it (session timeline
    entries naming the task, E2), oldest first: the rule of `GET /api/tasks/:id/history`."""
    return merged_history(task, sessions)


@command(app, "show")
def task_show(run: Run, task_id: str = typer.Argument(..., metavar="TASK_ID",
                                                      help="Task id.")):
    """Show a task with its readiness, claim, dependencies, timeline and sessions.

    It says whether the task is ready (or what it waits for), who holds its claim and until
    when, the tasks it depends on, its timeline (including what its sessions reported),
    its sessions and its child tasks.

    Example: maestro task show task_1706790000000_a1b2c3d4e
    """
    task = get_task(run, task_id)
    sessions = run.api.get("/api/sessions", {"taskId": task_id})
    children = run.api.get(f"/api/tasks/{seg(task_id)}/children")
    readiness = readiness_of(run, task_id)
    dependencies = dependency_rows(run, task)
    timeline = merged_timeline(task, sessions)
    data = {"task": task, "readiness": readiness, "dependencies": dependencies,
            "timeline": timeline, "sessions": sessions, "children": children}

    def render(out):
        rows = task_summary_rows(task)
        rows[4:4] = readiness_rows(readiness, task)  # right after status and priority
        key_values(out, rows)
        out.print()
        if dependencies:
            d = table("DEPENDS ON", "STATUS", "TITLE", title="Dependencies")
            for dep in dependencies:
                if dep.get("missing"):
                    d.add_row(esc(dep["id"]), "[red]missing[/red]", "")
                else:
                    d.add_row(esc(dep["id"]), status_text(dep.get("status")),
                              esc(dep.get("title")))
            out.print(d)
        t = table("TIME", "TYPE", "MESSAGE", "SESSION", title="Timeline")
        for e in timeline:
            kind = esc(e.get("type"))
            if e.get("source") == "session":
                kind = f"[magenta]{kind}[/magenta]"
            t.add_row(fmt_time(e.get("timestamp")), kind, esc(e.get("message") or ""),
                      esc(e.get("sessionId") or ""))
        out.print(t)
        if sessions:
            s = table("SESSION", "NAME", "STATUS", "STARTED", "LAST ACTIVITY", title="Sessions")
            for session in sessions:
                s.add_row(esc(session.get("id")), esc(session.get("name")),
                          status_text(session.get("status")), fmt_time(session.get("startedAt")),
                          fmt_time(session.get("lastActivity")))
            out.print(s)
        else:
            out.print("[dim]No sessions.[/dim]")
        if children:
            c = table("CHILD", "STATUS", "PRIORITY", "TITLE", title="Child tasks")
            for child in children:
                c.add_row(esc(child.get("id")), status_text(child.get("status")),
                          priority_text(child.get("priority")), esc(child.get("title")))
            out.print(c)

    run.emit(data, render)
