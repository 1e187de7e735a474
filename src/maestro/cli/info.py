"""`maestro whoami`, `maestro status` and `maestro commands` (SPEC §12.3, §12.6): who the CLI
speaks as, what the project looks like, and which commands a session's role may use."""

import json

import typer

from ..vocabulary import AGENT_ROLES, BOARD_ORDER, PRIORITY_ORDER
from .options import Run, command
from .output import CliError, esc, key_values, priority_text, status_text, table

# Who may run what (SPEC §12.6), by command id (`task:complete` is `maestro task complete`).
# Every id names a command of the real command tree (see `command_catalog`; a test checks).
CORE = ["whoami", "status", "commands"]
WORKER = CORE + ["watch", "report:*", "task:list", "task:get", "task:show", "task:create",
                 "task:children", "task:ready", "task:blocked", "task:claim", "task:release",
                 "task:complete", "session:info", "session:log", "session:register",
                 "session:complete", "track-file", "worker:init"]
ORCHESTRATOR = [c for c in WORKER if c != "worker:init"] + [
    "task:update", "task:block", "task:tree", "task:depend", "task:delete", "session:list",
    "session:spawn", "session:stop", "project:list", "project:get", "project:create",
    "project:delete", "orchestrator:init"]
# Hidden second names of a command; they are allowed wherever the command is.
ALIASES = {"project:show": "project:get", "session:show": "session:info"}


def _syntax(path: list[str], cmd) -> str:
    words = ["maestro", *path]
    for param in cmd.params:
        if getattr(param, "param_type_name", None) == "argument":
            name = param.metavar or param.name.upper()
            words.append(name if param.required else f"[{name}]")
    return " ".join(words)


def command_catalog(include_hidden: bool = False) -> list[dict]:
    """Every command of the CLI as {command, syntax, description}, read from the command tree
    itself, so the list `maestro commands` shows cannot drift from what exists."""
    from typer.main import get_command

    from .main import app

    entries = []

    def visit(path: list[str], cmd) -> None:
        if getattr(cmd, "hidden", False) and not include_hidden:
            return
        subcommands = getattr(cmd, "commands", None)
        if subcommands is not None:
            for name, sub in subcommands.items():
                visit([*path, name], sub)
            return
        entries.append({"command": ":".join(path), "syntax": _syntax(path, cmd),
                        "description": cmd.get_short_help_str(limit=90)})

    for name, cmd in get_command(app).commands.items():
        visit([name], cmd)
    return entries


def command_id(name: str) -> str:
    """`maestro task complete`, `task complete` and `task:complete` all name `task:complete`."""
    words = name.strip().split()
    if words and words[0] == "maestro":
        words = words[1:]
    return ":".join(words)


def load_manifest(path: str | None) -> tuple[dict | None, str | None]:
    """(manifest, error): the manifest named by MAESTRO_MANIFEST_PATH, read leniently."""
    if not path:
        return None, None
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as exc:
        return None, f"cannot read manifest {path}: {exc}"
    if not isinstance(manifest, dict):
        return None, f"manifest {path} is not a JSON object"
    return manifest, None


def allowed_commands(role: str, manifest: dict | None) -> list[str]:
    """The role's defaults, replaced by `session.allowedCommands` when the manifest has it
    (core commands always stay; SPEC §12.6)."""
    session = manifest.get("session") if manifest else None
    custom = session.get("allowedCommands") if isinstance(session, dict) else None
    if isinstance(custom, list):
        chosen = CORE + [c for c in custom if isinstance(c, str) and c not in CORE]
    else:
        chosen = list(ORCHESTRATOR if role == "orchestrator" else WORKER)
    return chosen


def is_allowed(name: str, allowed: list[str]) -> bool:
    name = command_id(name)
    name = ALIASES.get(name, name)
    return any(name == rule or (rule.endswith(":*") and name.startswith(rule[:-1]))
               for rule in allowed)


def _role(run: Run, manifest: dict | None) -> str:
    if manifest and manifest.get("role") in AGENT_ROLES:
        return manifest["role"]
    return run.ctx.role


def whoami(run: Run):
    """Show which server, project, session and tasks this CLI uses, and where each setting
    comes from (flags, environment, .env, ~/.maestro/config). Token values are never shown.

    Example: maestro whoami --json
    """
    ctx = run.ctx
    manifest, manifest_error = load_manifest(ctx.manifest_path)
    role = _role(run, manifest)
    data = {
        "server": ctx.server, "projectId": ctx.project, "sessionId": ctx.session,
        "taskIds": ctx.task_ids, "role": role, "strategy": ctx.strategy,
        "tokenSet": bool(ctx.token),
        "sources": {"server": ctx.server_source, "projectId": ctx.project_source,
                    "sessionId": ctx.session_source, "taskIds": ctx.task_ids_source,
                    "token": ctx.token_source},
        "manifestPath": ctx.manifest_path,
    }
    if manifest is not None:
        tasks = [t for t in manifest.get("tasks") or [] if isinstance(t, dict)]
        data["manifest"] = {"role": manifest.get("role"), "skills": manifest.get("skills"),
                            "tasks": [{"id": t.get("id"), "title": t.get("title"),
                                       "priority": t.get("priority", "medium")} for t in tasks],
                            "allowedCommands": allowed_commands(role, manifest)}
        if not ctx.project and tasks:
            data["projectId"] = tasks[0].get("projectId")
            data["sources"]["projectId"] = "manifest"
    if manifest_error:
        data["manifestError"] = manifest_error

    def render(out):
        def src(value, source):
            if value in (None, "", []):
                return "[dim]not set[/dim]"
            return f"{esc(value)} [dim]({esc(source)})[/dim]"
        rows = [("Server", src(data["server"], ctx.server_source)),
                ("Project", src(data["projectId"], data["sources"]["projectId"])),
                ("Session", src(ctx.session, ctx.session_source)),
                ("Tasks", src(", ".join(ctx.task_ids), ctx.task_ids_source)),
                ("Role", esc(role)), ("Strategy", esc(ctx.strategy)),
                ("Token", f"set [dim]({esc(ctx.token_source)})[/dim]" if ctx.token
                 else "[dim]not set[/dim]")]
        if ctx.manifest_path:
            rows.append(("Manifest", esc(ctx.manifest_path)))
        key_values(out, rows)
        if manifest_error:
            out.print(f"[yellow]{esc(manifest_error)}[/yellow]")
        if manifest is not None and data["manifest"]["tasks"]:
            out.print()
            t = table("TASK", "PRIORITY", "TITLE", title="Manifest tasks")
            for task in data["manifest"]["tasks"]:
                t.add_row(esc(task["id"]), priority_text(task["priority"]), esc(task["title"]))
            out.print(t)
    run.emit(data, render)


def status(run: Run):
    """Summary of the current project: tasks per status and priority, active sessions.

    Example: maestro status --project proj_1706789123456_k2j4n5l6m
    """
    project_entity = run.project()
    project = project_entity["id"]
    tasks = run.api.get("/api/tasks", {"projectId": project})
    sessions = run.api.get("/api/sessions", {"projectId": project})
    by_status: dict[str, int] = {}
    by_priority: dict[str, int] = {}
    for task in tasks:
        by_status[str(task.get("status"))] = by_status.get(str(task.get("status")), 0) + 1
        by_priority[str(task.get("priority"))] = by_priority.get(str(task.get("priority")),
                                                                 0) + 1
    sessions_by_status: dict[str, int] = {}
    for s in sessions:
        sessions_by_status[str(s.get("status"))] = sessions_by_status.get(str(s.get("status")),
                                                                          0) + 1
    active = sum(1 for s in sessions if s.get("status") in ("running", "spawning"))
    summary = {"project": project, "projectName": project_entity.get("name"),
               "tasks": {"total": len(tasks), "byStatus": by_status, "byPriority": by_priority},
               "sessions": {"total": len(sessions), "active": active,
                            "byStatus": sessions_by_status}}

    def render(out):
        out.print(f"[bold blue]{esc(project_entity.get('name') or project)}[/bold blue] "
                  f"[dim]{esc(project)}[/dim]")
        t = table("TASKS", "COUNT")
        for word in BOARD_ORDER:
            t.add_row(status_text(word), str(by_status.get(word, 0)))
        for word, n in by_status.items():
            if word not in BOARD_ORDER:
                t.add_row(esc(word), str(n))
        t.add_row("[bold]total[/bold]", f"[bold]{len(tasks)}[/bold]")
        out.print(t)
        p = table("PRIORITY", "COUNT")
        for word in PRIORITY_ORDER:
            p.add_row(priority_text(word), str(by_priority.get(word, 0)))
        out.print(p)
        out.print(f"Sessions: [bold]{active}[/bold] active of {len(sessions)}")
    run.emit(summary, render)


def commands(run: Run, check: str | None = typer.Option(
        None, "--check", metavar="NAME", help="Is this command allowed? e.g. \"task update\" "
        "or task:update. Exit 1 for a command that does not exist.")):
    """List the commands this session's role may use (its manifest's list, else the role's
    defaults).

    Example: maestro commands --check "task complete"
    """
    manifest, manifest_error = load_manifest(run.ctx.manifest_path)
    role = _role(run, manifest)
    allowed = allowed_commands(role, manifest)
    source = "manifest" if manifest is not None else f"defaults for role {role}"
    catalog = command_catalog()
    if check:
        known = {e["command"] for e in command_catalog(include_hidden=True)}
        if command_id(check) not in known:
            raise CliError("unknown_command", f"Unknown command '{check}'.",
                           details={"command": check},
                           suggestion="`maestro commands` lists the commands of this role; "
                                      "`maestro --help` lists them all.")
        ok = is_allowed(check, allowed)
        run.emit({"command": check, "allowed": ok, "role": role},
                 lambda out: out.print(f"{esc(check)}: "
                                       + ("[green]allowed[/green]" if ok
                                          else "[red]not allowed[/red]")
                                       + f" [dim]({esc(source)})[/dim]"))
        return
    entries = [e for e in catalog if is_allowed(e["command"], allowed)]

    def render(out):
        if manifest_error:
            out.print(f"[yellow]{esc(manifest_error)}[/yellow]")
        t = table("COMMAND", "WHAT IT DOES", title=f"Commands for {role} ({source})")
        for e in entries:
            t.add_row(esc(e["syntax"]), esc(e["description"]))
        out.print(t)
    run.emit({"role": role, "allowedCommands": allowed, "commands": entries}, render)


def register(root: typer.Typer) -> None:
    """Add whoami, status and commands to the top level of the CLI."""
    command(root, "whoami")(whoami)
    command(root, "status")(status)
    command(root, "commands")(commands)
