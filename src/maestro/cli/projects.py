"""`maestro project list|get|create|delete` (SPEC §12.3)."""

import os

import typer

from .client import seg
from .options import Run, command
from .output import esc, fmt_time, key_values, table

app = typer.Typer(help="Projects: list, show, create, delete.", no_args_is_help=True)


def render_projects(projects: list[dict]):
    def render(out):
        if not projects:
            out.print("No projects yet. Create one: maestro project create \"My app\"")
            return
        t = table("ID", "NAME", "WORKING DIR", "CREATED")
        for p in projects:
            t.add_row(esc(p.get("id")), esc(p.get("name")), esc(p.get("workingDir")),
                      fmt_time(p.get("createdAt")))
        out.print(t)
    return render


def render_project(project: dict):
    def render(out):
        key_values(out, [("ID", esc(project.get("id"))), ("Name", esc(project.get("name"))),
                         ("Working dir", esc(project.get("workingDir") or "-")),
                         ("Description", esc(project.get("description") or "-")),
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


@command(app, "get")
def project_get(run: Run, project_id: str = typer.Argument(..., metavar="ID",
                                                            help="Project id.")):
    """Show one project.

    Example: maestro project get proj_1706789123456_k2j4n5l6m
    """
    project = run.api.get(f"/api/projects/{seg(project_id)}")
    run.emit(project, render_project(project))


@command(app, "create")
def project_create(
    run: Run,
    name: str = typer.Argument(..., help="Project name."),
    working_dir: str | None = typer.Option(None, "--dir", "-d", metavar="PATH",
                                              help="Working directory [default: the current "
                                                   "directory]."),
    description: str = typer.Option("", "--desc", help="Description."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the new id."),
):
    """Create a project.

    Example: export MAESTRO_PROJECT_ID=$(maestro project create "Shop" --dir ~/code/shop -q)
    """
    directory = os.path.abspath(os.path.expanduser(working_dir)) if working_dir else os.getcwd()
    project = run.api.post("/api/projects", {"name": name, "workingDir": directory,
                                             "description": description})

    def render(out):
        if quiet:
            print(project["id"])
            return
        out.print(f"[green]Created project[/green] {esc(project['id'])} "
                  f"({esc(project.get('name'))})")
    run.emit(project, render)


@command(app, "delete")
def project_delete(run: Run, project_id: str = typer.Argument(..., metavar="ID",
                                                               help="Project id.")):
    """Delete a project (refused while it still has tasks or sessions).

    Example: maestro project delete proj_1706789123456_k2j4n5l6m
    """
    result = run.api.delete(f"/api/projects/{seg(project_id)}")
    run.emit(result, lambda out: out.print(f"[green]Deleted project[/green] {esc(project_id)}"))
