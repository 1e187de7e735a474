"""The part of an agent's prompt that says how to work with Maestro: its MCP tools, and the same
through the CLI: how to report, how to finish a task, and how to find and claim more ready work
(SPEC §12.4, §15). Every command and tool named here exists; tests check each one."""

from __future__ import annotations


def guide_lines(role: str, task_id: str | None) -> list[str]:
    """Markdown lines for the prompt of a `role` agent whose first task is `task_id`."""
    task = task_id or "<task-id>"
    lines = [
        "## Maestro tools (MCP server `maestro`)",
        "If your tool list has Maestro's tools, use them; the shell commands further down do "
        "the same.",
        "- `session_context` first: your session, project, tasks and claims.",
        ("- `task_get` shows a task with its dependencies' completion reports; `task_ready` "
         "lists what can start now; `task_claim` takes the next ready task (or a given one)."),
        ("- `task_report` with kind progress, blocked, needs_input or completed (completed "
         "finishes the task and hands your summary to the tasks waiting for it)."),
        ("- `task_release` gives a task back; `task_create` records follow-up work: a child "
         "task, or with `blocks` a new task one of yours must wait for."),
    ]
    if role == "orchestrator":
        lines.append("- Orchestrating: `task_plan` creates a whole breakdown (tasks, parents, "
                     "dependencies) in one call; `task_list`, `task_update`, `session_spawn` "
                     "and `session_list` follow and steer the work.")
    lines += [
        "",
        "## Working with Maestro (run these shell commands; the `maestro` CLI is on PATH)",
        "- Start with `maestro whoami` to see your session, tasks and permissions.",
        f'- Progress: `maestro report progress "what you did" --task {task}`',
        f'- Blocked: `maestro report blocked "why" --task {task}`',
        (f'- Done: `maestro report complete "summary" --task {task}`, then '
         f"`maestro task complete {task}` (tasks waiting for it get your summary)."),
        "Report progress at each milestone, and finish by completing your tasks.",
        "",
        "## More work",
        ("- `maestro task claim --next` gives this session the next ready task, or says that "
         "none is ready (`maestro task ready` lists them). Work on it as above, with its id."),
        ('- Cannot finish a claimed task? `maestro task release <task-id> --reason "why"` gives '
         "it back."),
        ("- Exit code 6: another session holds the task, or your claim was lost: stop writing "
         "to it. Exit code 7: the task is not ready (`maestro task show <task-id>` says what "
         "it waits for)."),
    ]
    if role == "orchestrator":
        lines.append("- Order the work: `maestro task depend <task-id> --on <other-task-id>` "
                     "makes a task wait; `maestro task blocked` shows what waits for what.")
    return lines


def guide(role: str, task_id: str | None) -> str:
    """The guide as one block of text."""
    return "\n".join(guide_lines(role, task_id)) + "\n"
