"""`maestro task tree [ROOT]` (the hierarchy, coloured by status and priority) and
`maestro task show ID` (a task with its timeline and sessions)."""


import typer

from .client import seg
from .options import Run, command
from .output import esc, fmt_time, key_values, priority_text, status_text, table
from .tasks import app, get_task, task_status, task_summary_rows

STATUS_MARK = {"pending": "○", "in_progress": "◐", "completed": "●", "blocked": "✖"}


def node_label(task: dict, dim: bool = False) -> str:
    status = task.get("status")
    mark = STATUS_MARK.get(status, "·")
    label = (f"{status_text(mark) if status in STATUS_MARK else mark} "
             f"{'[dim]' if dim else '[bold]'}{esc(task.get('title'))}"
             f"{'[/dim]' if dim else '[/bold]'}  {status_text(status)}  "
             f"{priority_text(task.get('priority'))}")
    if task.get("sessionStatus"):
        label += f"  agent:{status_text(task.get('sessionStatus'))}"
    return label + f"  [dim]{esc(task.get('id'))}[/dim]"


def tree_of(title: str, nodes: list[dict]):
    """A rich Tree of nested task nodes (each a task with `children`)."""
    from rich.tree import Tree

    root = Tree(title, guide_style="dim")
    for node in nodes:
        _add(root, node)
    return root


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
        forest = build_forest(tasks, root_id, depth)
        title = f"[bold]{esc(top.get('title'))}[/bold] [dim]subtree[/dim]"
    elif run.ctx.project:
        tasks = run.api.get("/api/tasks", {"projectId": run.ctx.project})
        forest = build_forest(tasks, None, depth)
        title = f"[bold]Project[/bold] {esc(run.ctx.project)}"
    else:
        tasks = run.api.get("/api/tasks")
        projects = {p["id"]: p.get("name", p["id"]) for p in run.api.get("/api/projects")}
        forest = build_forest(tasks, None, depth)
        title = "[bold]All projects[/bold]"
    if status:
        forest = keep_status(forest, status)

    def render(out):
        if not forest:
            out.print("No tasks." if not status else f"No {status} tasks.")
            return
        if root_id or run.ctx.project:
            out.print(tree_of(title, forest))
            return
        from rich.tree import Tree

        top = Tree(title, guide_style="dim")
        for project_id in dict.fromkeys(n.get("projectId") for n in forest):
            name = projects.get(project_id, project_id)
            branch = top.add(f"[bold blue]{esc(name)}[/bold blue] [dim]{esc(project_id)}[/dim]")
            for node in forest:
                if node.get("projectId") == project_id:
                    _add(branch, node)
        out.print(top)

    run.emit(strip_private(forest), render)


def _add(branch, node: dict) -> None:
    child = branch.add(node_label(node, dim=node.get("_context", False)))
    for kid in node.get("children", []):
        _add(child, kid)


def merged_timeline(task: dict, sessions: list[dict]) -> list[dict]:
    """The task's own timeline plus what its sessions reported about it (session timeline
    entries naming the task, E2), oldest first."""
    entries = [{"timestamp": e.get("timestamp"), "type": e.get("type"),
                "message": e.get("message"), "sessionId": e.get("sessionId"), "source": "task"}
               for e in task.get("timeline") or [] if isinstance(e, dict)]
    for session in sessions:
        for e in session.get("timeline") or []:
            if isinstance(e, dict) and e.get("taskId") == task.get("id"):
                entries.append({"timestamp": e.get("timestamp"), "type": e.get("type"),
                                "message": e.get("message"), "sessionId": session.get("id"),
                                "source": "session"})
    entries.sort(key=lambda e: e["timestamp"] if isinstance(e["timestamp"], (int, float))
                 else 0)
    return [{k: v for k, v in e.items() if v is not None} for e in entries]


@command(app, "show")
def task_show(run: Run, task_id: str = typer.Argument(..., metavar="TASK_ID",
                                                      help="Task id.")):
    """Show a task with its timeline (including what its sessions reported), its sessions
    and its child tasks.

    Example: maestro task show task_1706790000000_a1b2c3d4e
    """
    task = get_task(run, task_id)
    sessions = run.api.get("/api/sessions", {"taskId": task_id})
    children = run.api.get(f"/api/tasks/{seg(task_id)}/children")
    timeline = merged_timeline(task, sessions)
    data = {"task": task, "timeline": timeline, "sessions": sessions, "children": children}

    def render(out):
        key_values(out, task_summary_rows(task))
        out.print()
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
