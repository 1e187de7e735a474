"""`maestro project list|get|create|update|delete` (SPEC §12.3); `delete --cascade` also removes
what the project holds, after stopping its running agents. `create` and `update` set where the
project's spawned sessions work (`--isolation`, `--base-ref`)."""

import os
import sys

import typer

from ..vocabulary import ACTIVE_SESSION_STATUSES
from .client import seg
from .options import Run, command, is_tty_stdin
from .output import CliError, esc, fmt_time, key_values, print_table, usage_error
from .workspaces import ISOLATION_HELP, isolation_choice, project_workspace_rows

app = typer.Typer(help="Projects: list, get (alias show), create, update, delete.",
                  no_args_is_help=True)

ISOLATION_OPTION = typer.Option(None, "--isolation", metavar="worktree|none",
                                help="Where spawned sessions work. " + ISOLATION_HELP
                                + " [default: worktree]")



def render_projects(projects: list[dict]):
    def render(out):
        print_table(out, projects, "No projects yet. Create one: maestro project create \"My app\"",
                    ("ID", "NAME", "WORKING DIR", "CREATED"),
                    lambda p: (esc(p.get("id")), esc(p.get("name")), esc(p.get("workingDir")),
                               fmt_time(p.get("createdAt"))))
    return render


def render_project(project: dict):
    def render(out):
        key_values(out, [("ID", esc(project.get("id"))), ("Name", esc(project.get("name"))),
                         ("Working dir", esc(project.get("workingDir") or "-")),
                         ("Description", esc(project.get("description") or "-")),
                         *project_workspace_rows(project),
                         ("Created", fmt_time(project.get("createdAt"))),
                         ("Updated", fmt_time(project.get("updatedAt")))])
    return render


@command(app, "list")
def project_list(run: Run):
    """List all projects.

    Example: maestro project list --json
    """
    projects = run.api.get("/api/projects")
    run.emit(projects, render_projects(projects))


def project_get(run: Run, project_id: str = typer.Argument(..., metavar="ID",
                                                            help="Project id.")):
    """Show one project, with where its spawned sessions work (isolation, base ref).

    Example: maestro project get proj_1706789123456_k2j4n5l6m
    """
    project = run.api.get(f"/api/projects/{seg(project_id)}")
    run.emit(project, render_project(project))


command(app, "get")(project_get)
command(app, "show", hidden=True)(project_get)  # as `task show` and `session show`


@command(app, "create")
def project_create(
    run: Run,
    name: str = typer.Argument(..., help="Project name."),
    working_dir: str | None = typer.Option(None, "--dir", "-d", metavar="PATH",
                                              help="Working directory [default: the current "
                                                   "directory]."),
    description: str = typer.Option("", "--desc", help="Description."),
    isolation: str | None = ISOLATION_OPTION,
    base_ref: str | None = typer.Option(None, "--base-ref", metavar="REF",
                                           help="Branch or commit new worktrees start from "
                                                "[default: the main worktree's current "
                                                "branch at spawn time]."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the new id."),
):
    """Create a project.

    Sessions spawned for it work in a git worktree of their own when the working dir is in a
    git repository; --isolation none runs them in the working dir itself, --base-ref makes
    their branches start from another branch or commit.

    Example: export MAESTRO_PROJECT_ID=$(maestro project create "Shop" --dir ~/code/shop -q)

    Example: maestro project create "Shop" --dir ~/code/shop --base-ref develop
    """
    directory = os.path.abspath(os.path.expanduser(working_dir)) if working_dir else os.getcwd()
    body = {"name": name, "workingDir": directory, "description": description}
    if isolation is not None:
        body["isolation"] = isolation_choice(isolation)
    if base_ref:
        body["baseRef"] = base_ref
    project = run.api.post("/api/projects", body)

    def render(out):
        if quiet:
            print(project["id"])
            return
        out.print(f"[green]Created project[/green] {esc(project['id'])} "
                  f"({esc(project.get('name'))})")
    run.emit(project, render)


@command(app, "update")
def project_update(
    run: Run,
    project_id: str = typer.Argument(..., metavar="ID", help="Project id."),
    name: str | None = typer.Option(None, "--name", help="New name."),
    working_dir: str | None = typer.Option(None, "--dir", "-d", metavar="PATH",
                                              help="New working directory."),
    description: str | None = typer.Option(None, "--desc", help="New description."),
    isolation: str | None = ISOLATION_OPTION,
    base_ref: str | None = typer.Option(None, "--base-ref", metavar="REF",
                                           help="Branch or commit new worktrees start from; "
                                                "\"\" goes back to the main worktree's current "
                                                "branch."),
):
    """Change a project's name, working dir, description, or where the sessions spawned from
    now on work (--isolation, --base-ref; a spawn's own --isolation and --base win).

    Example: maestro project update proj_1706789123456_k2j4n5l6m --isolation none

    Example: maestro project update proj_1706789123456_k2j4n5l6m --base-ref develop
    """
    body: dict = {}
    if name is not None:
        body["name"] = name
    if working_dir is not None:
        body["workingDir"] = os.path.abspath(os.path.expanduser(working_dir))
    if description is not None:
        body["description"] = description
    if isolation is not None:
        body["isolation"] = isolation_choice(isolation)
    if base_ref is not None:
        body["baseRef"] = base_ref.strip()
    if not body:
        raise usage_error("Nothing to change.",
                          "Give --name, --dir, --desc, --isolation or --base-ref.")
    project = run.api.put(f"/api/projects/{seg(project_id)}", body)

    def render(out):
        out.print(f"[green]Updated project[/green] {esc(project['id'])} "
                  f"({esc(project.get('name'))})")
        render_project(project)(out)
    run.emit(project, render)


@command(app, "delete")
def project_delete(
    run: Run,
    project_id: str = typer.Argument(..., metavar="ID", help="Project id."),
    cascade: bool = typer.Option(False, "--cascade", help="Also delete its tasks and "
                                 "sessions, after stopping its running agents."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation "
                             "(needed with --cascade when not at a terminal)."),
):
    """Delete a project. Without --cascade it is refused while the project has tasks or
    sessions; with it, the project's running agents are stopped, then its sessions, tasks and
    the project are deleted in one step (asks first at a terminal, unless --yes).

    Example: maestro project delete proj_1706789123456_k2j4n5l6m --cascade --yes
    """
    if not cascade:
        try:
            result = run.api.delete(f"/api/projects/{seg(project_id)}")
        except CliError as err:
            if err.details.get("code") == "PROJECT_HAS_DEPENDENCIES":
                err.suggestion = ("`maestro project delete ID --cascade` deletes its tasks and "
                                  "sessions too (stopping its agents).")
            raise
        run.emit(result, lambda out: out.print(f"[green]Deleted project[/green] "
                                               f"{esc(project_id)}"))
        return
    project = run.api.get(f"/api/projects/{seg(project_id)}")
    tasks = run.api.get("/api/tasks", {"projectId": project_id})
    sessions = run.api.get("/api/sessions", {"projectId": project_id})
    active = [s for s in sessions if s.get("status") in ACTIVE_SESSION_STATUSES]
    what = (f'project "{project.get("name")}" ({project_id}) with its {len(tasks)} task(s) '
            f"and {len(sessions)} session(s)"
            + (f" ({len(active)} running agent(s) will be stopped)" if active else ""))
    if not yes:
        if not is_tty_stdin():
            raise usage_error(f"Refusing to delete {what}: pass --yes to confirm (standard "
                              "input is not a terminal, so nobody can be asked).",
                              f"maestro project delete {project_id} --cascade --yes")
        sys.stderr.write(f"Delete {what}? This cannot be undone. [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise CliError("cancelled", "Nothing deleted.")
    stopped = []
    for session in active:
        try:
            run.api.post(f"/api/sessions/{seg(session['id'])}/stop")
            stopped.append(session["id"])
        except CliError as err:  # not launched here, or already ending: deleting it is enough
            if err.details.get("status") not in (404, 409):
                raise
    result = run.api.delete(f"/api/projects/{seg(project_id)}", {"cascade": "true"})
    result = dict(result, stopped=stopped)
    deleted = result.get("deleted") if isinstance(result.get("deleted"), dict) else {}

    def render(out):
        out.print(f"[red]Deleted project[/red] {esc(project_id)} with "
                  f"{len(deleted.get('tasks') or [])} task(s) and "
                  f"{len(deleted.get('sessions') or [])} session(s)"
                  + (f"; stopped {len(stopped)} agent(s)" if stopped else ""))
    run.emit(result, render)
