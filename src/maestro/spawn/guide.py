"""The part of an agent's prompt that says how to work with Maestro through the CLI: how to
report, how to finish a task, and how to find and claim more ready work (SPEC §12.4, §15).
Every command named here exists; tests run each one with --help."""

from __future__ import annotations


def guide_lines(role: str, task_id: str | None) -> list[str]:
    """Markdown lines for the prompt of a `role` agent whose first task is `task_id`."""
    task = task_id or "<task-id>"
    lines = [
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
