"""`maestro manifest generate` (SPEC §9.6, §12.3): the agent manifest for some tasks, read
through the API (never from the data directory, §14.4) and built by the same code as the
server's spawn endpoint."""

import typer

from .client import seg
from .context import normalize_server, split_ids
from .options import Run, command
from .output import CliError, esc, usage_error, warn

app = typer.Typer(help="Agent manifests.", no_args_is_help=True)


@command(app, "generate")
def manifest_generate(
    run: Run,
    role: str = typer.Option(..., "--role", help="worker or orchestrator."),
    project_id: str = typer.Option(..., "--project-id", metavar="ID", help="Project id."),
    task_ids: str = typer.Option(..., "--task-ids", metavar="ID[,ID...]",
                                 help="Task ids, comma-separated, in manifest order."),
    skills: str = typer.Option("maestro-worker", "--skills", metavar="NAME[,NAME...]",
                               help="Skills, comma-separated ('' for none)."),
    strategy: str = typer.Option("simple", "--strategy", help="simple or queue."),
    output: str = typer.Option(..., "--output", "-o", metavar="PATH",
                               help="Where to write the manifest."),
):
    """Write the manifest an agent session starts from. Progress goes to stderr.

    Example: maestro manifest generate --role worker --project-id proj_1 --task-ids task_1,task_2 --output /tmp/manifest.json
    """
    from ..spawn.manifest import ManifestError, build_manifest, write_manifest

    ids = split_ids(task_ids)
    if not ids:
        raise usage_error("--task-ids needs at least one task id.")
    if run.ctx.server_source == "default":
        # Run by a server in MANIFEST_GENERATOR=cli mode: its own URL is in SERVER_URL.
        url, source = run.ctx.env.lookup("SERVER_URL")
        if url:
            run.ctx.server, run.ctx.server_source = normalize_server(url), source
    warn(f"reading project {project_id} and {len(ids)} task(s) from {run.ctx.server}")
    project = run.api.get(f"/api/projects/{seg(project_id)}")
    tasks = [run.api.get(f"/api/tasks/{seg(task_id)}") for task_id in ids]
    try:
        manifest = build_manifest(role=role, project=project, tasks=tasks,
                                  skills=split_ids(skills),
                                  strategy=None if strategy == "simple" else strategy)
    except ManifestError as exc:
        raise CliError("invalid_manifest", str(exc)) from None
    try:
        path = write_manifest(output, manifest)
    except OSError as exc:
        raise CliError("write_failed", f"Cannot write {output}: {exc.strerror or exc}") from None
    warn(f"manifest written to {path}")
    run.emit({"path": str(path), "manifest": manifest},
             lambda out: out.print(f"[green]Manifest written[/green] {esc(str(path))}"))

