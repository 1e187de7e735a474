"""What an agent's prompt says about its workspace: its own worktree and branch, and that it
commits there and leaves merging to a person."""

from __future__ import annotations


def workspace_lines(workspace: dict | None) -> list[str]:
    """Markdown lines for the prompt, or none for an agent working in the project's folder."""
    if not workspace or not workspace.get("branch"):
        return []
    base = f", made from `{workspace['baseRef']}`" if workspace.get("baseRef") else ""
    return [
        "## Your workspace",
        (f"- You work in your own git worktree (the current folder) on branch "
         f"`{workspace['branch']}`{base}. Other agents work in worktrees of their own."),
        ('- Commit your work on this branch as you go (`git add -A && git commit -m "..."`). '
         "Do not switch branches, merge, rebase or push: a person reviews your changes "
         "(`maestro session diff`) and merges them."),
        "",
    ]
