"""`maestro session diff|merge|cleanup`: review a spawned session's worktree, merge its branch
back into the base branch, and remove it (README "Parallel agents, isolated"). The commands
register themselves on the `session` group."""

from __future__ import annotations

import typer

from ..vocabulary import ISOLATIONS
from .client import seg
from .options import Run, command
from .output import CliError, esc, key_values, print_table, usage_error
from .sessions import app

SESSION_ARG = typer.Argument(None, metavar="SESSION_ID",
                             help="Session id [default: MAESTRO_SESSION_ID].")

# What to do about each refusal of the server (its `code`), given its details.
HINTS = {
    "MERGE_CONFLICT": lambda d: (
        "Conflicting files: " + ", ".join(d.get("files") or []) + ". Nothing was changed; "
        f"merge {d.get('branch') or 'the branch'} by hand in the main worktree, or let the "
        "agent rebase its work."),
    "MAIN_WORKTREE_DIRTY": lambda d: (
        "Commit or stash these files in the main worktree first: "
        + (", ".join(d.get("files") or []) or str(d.get("operation") or "")) + "."),
    "WORKTREE_DIRTY": lambda d: (
        "Uncommitted in the session's worktree: " + ", ".join(d.get("files") or [])
        + ". Pass --commit-uncommitted to commit them on its branch first."),
    "BASE_NOT_CHECKED_OUT": lambda d: (
        f"Check out {d.get('baseRef')} in {d.get('repo')} (it has "
        f"{d.get('checkedOut') or 'a detached HEAD'}) and merge again."),
    "UNMERGED_WORK": lambda d: _unmerged_hint(d),
    "SESSION_ACTIVE": lambda d: "Stop the session first (POST /api/sessions/<id>/stop).",
    "NOT_A_WORKSPACE_SESSION": lambda d: (
        "This session runs in the project's folder" + (f" ({d['reason']})" if d.get("reason")
                                                       else "") + "; use git there."),
}


def _unmerged_hint(details: dict) -> str:
    parts = []
    if details.get("uncommitted"):
        parts.append(f"{len(details['uncommitted'])} uncommitted file(s)")
    if details.get("commitCount"):
        parts.append(f"{details['commitCount']} commit(s)")
    flags = " ".join("--discard-unmerged" if name == "discardUnmerged" else f"--{name}"
                     for name in details.get("needs") or [])
    return (f"Not merged: {' and '.join(parts) or 'work'}. Merge it (`maestro session merge`), "
            f"or pass {flags} to throw it away.")


def _with_hint(err: CliError) -> CliError:
    details = err.details if isinstance(err.details, dict) else {}
    hint = HINTS.get(details.get("code"))
    server = details.get("server") if isinstance(details.get("server"), dict) else {}
    if hint is not None:
        err.suggestion = hint(server)
    return err


ISOLATION_HELP = ("worktree: each session in a git worktree and branch of its own (when the "
                  "working dir is in a git repository); none: in the working dir itself.")


def isolation_choice(value: str | None) -> str | None:
    """The `--isolation` value as the server spells it, or a usage error (exit 1)."""
    if value is None:
        return None
    word = value.strip().lower()
    if word not in ISOLATIONS:
        raise usage_error(f"Unknown isolation '{value}'.",
                          f"Use one of: {', '.join(ISOLATIONS)}. {ISOLATION_HELP}")
    return word


def project_workspace_rows(project: dict) -> list[tuple[str, str]]:
    """Lines for `maestro project get`: where the project's spawned sessions work."""
    isolation = project.get("isolation")
    if isolation == "none":
        where = "none [dim](sessions work in the working dir itself)[/dim]"
    else:
        where = ("worktree" + ("" if isolation else " (default)")
                 + " [dim](each session in a git worktree and branch of its own)[/dim]")
    base = project.get("baseRef")
    return [("Isolation", where),
            ("Base ref", esc(base) if base else "[dim]the main worktree's current branch"
                                                "[/dim]")]


def workspace_rows(session: dict) -> list[tuple[str, str]]:
    """Lines for `maestro session info`: where the session works."""
    ws = session.get("workspace")
    if not isinstance(ws, dict):
        return []
    if ws.get("mode") != "worktree":
        return [("Workspace", f"shared ({esc(ws.get('reason') or 'no worktree')})")]
    rows = [("Branch", f"{esc(ws.get('branch'))} [dim](from {esc(ws.get('baseRef'))} "
                       f"{esc(str(ws.get('baseCommit') or '')[:10])})[/dim]"),
            ("Worktree", f"{esc(ws.get('path'))} [dim]({esc(ws.get('state'))})[/dim]")]
    changed = ws.get("changedFiles") or []
    if changed:
        more = (ws.get("changedCount") or len(changed)) - len(changed)
        rows.append(("Changed files", esc(", ".join(changed)) + (f" (+{more})" if more > 0
                                                                   else "")))
    for other in ws.get("overlaps") or []:
        rows.append(("[yellow]Overlap[/yellow]", f"[yellow]{esc(other.get('sessionId'))} "
                     f"({esc(other.get('branch'))}) also changes "
                     f"{esc(', '.join(other.get('files') or []))}[/yellow]"))
    return rows


@command(app, "diff")
def session_diff(
    run: Run,
    session_id: str | None = SESSION_ARG,
    stat: bool = typer.Option(False, "--stat", help="Only the changed files, not the patch."),
):
    """Show what a session changed in its worktree, against the commit its branch started
    from. While the worktree exists, uncommitted changes and new files are included (marked
    `uncommitted`).

    Example: maestro session diff sess_1706790000000_a1b2c3d4e --stat
    """
    sid = session_id or run.need_session()
    try:
        diff = run.api.get(f"/api/sessions/{seg(sid)}/diff")
    except CliError as err:
        raise _with_hint(err) from None
    if stat:
        diff = {k: v for k, v in diff.items() if k not in ("patch", "truncated")}

    def render(out):
        key_values(out, [
            ("Session", esc(sid)),
            ("Branch", f"{esc(diff.get('branch'))} [dim]against {esc(diff.get('baseRef'))} "
                       f"{esc(str(diff.get('baseCommit') or '')[:10])}[/dim]"),
            ("Commits", str(diff.get("commitCount", 0))),
            ("Includes", "committed and uncommitted changes" if diff.get(
                "includesUncommitted") else "committed changes (the worktree is gone)")])
        files = diff.get("files") or []
        print_table(out, files, "No changes.", ("STATUS", "FILE", "+", "-", ""),
                    lambda f: (esc(f.get("status")), esc(f.get("path")),
                               "bin" if f.get("added") is None else str(f["added"]),
                               "bin" if f.get("deleted") is None else str(f["deleted"]),
                               "[yellow]uncommitted[/yellow]" if f.get("uncommitted") else ""))
        if not stat and diff.get("patch"):
            out.print()
            out.file.write(diff["patch"])  # verbatim: no markup, no wrapping
            if diff.get("truncated"):
                out.file.write("\n[patch truncated]\n")
            out.file.flush()
    run.emit(diff, render)


@command(app, "merge")
def session_merge(
    run: Run,
    session_id: str = typer.Argument(..., metavar="SESSION_ID", help="The session to merge."),
    commit_uncommitted: bool = typer.Option(
        False, "--commit-uncommitted", help="Commit the worktree's uncommitted changes on its "
        "branch first."),
    message: str | None = typer.Option(None, "--message", "-m",
                                       help="Message of the merge commit."),
    keep: bool = typer.Option(False, "--keep-worktree", help="Keep the worktree and branch "
                              "after the merge."),
):
    """Merge a session's branch into its base branch in the main worktree: a fast-forward when
    possible, else a merge commit. Refused, with nothing changed, when the main worktree has
    uncommitted changes or the merge would conflict (the files are listed). Afterwards the
    worktree and branch of an ended session are removed.

    Example: maestro session merge sess_1706790000000_a1b2c3d4e
    """
    body: dict = {"commitUncommitted": commit_uncommitted, "cleanup": not keep}
    if message:
        body["message"] = message
    try:
        result = run.api.post(f"/api/sessions/{seg(session_id)}/merge", body)
    except CliError as err:
        raise _with_hint(err) from None

    def render(out):
        branch, base = esc(result.get("branch")), esc(result.get("baseRef"))
        commit = esc(str(result.get("commit") or "")[:10])
        if result.get("alreadyMerged"):
            out.print(f"{branch} is already in {base} ({commit}).")
        elif result.get("fastForward"):
            out.print(f"[green]Merged[/green] {branch} into {base}: fast-forward to {commit}.")
        else:
            out.print(f"[green]Merged[/green] {branch} into {base}: merge commit {commit}.")
        files = result.get("files") or []
        if files:
            out.print(f"[dim]{len(files)} file(s): {esc(', '.join(files))}[/dim]")
        if result.get("removed"):
            out.print("[dim]Worktree and branch removed.[/dim]")
    run.emit(result, render)


@command(app, "cleanup")
def session_cleanup(
    run: Run,
    session_id: str = typer.Argument(..., metavar="SESSION_ID", help="The session whose "
                                     "worktree to remove."),
    force: bool = typer.Option(False, "--force", help="Throw away uncommitted changes."),
    discard_unmerged: bool = typer.Option(
        False, "--discard-unmerged", help="With --force: also delete commits that are not "
        "merged into the base."),
):
    """Remove a session's worktree and branch. Never while the session runs; refused while it
    holds work that is not merged, unless forced (--force for uncommitted changes, and also
    --discard-unmerged for commits).

    Example: maestro session cleanup sess_1706790000000_a1b2c3d4e --force
    """
    try:
        result = run.api.post(f"/api/sessions/{seg(session_id)}/cleanup",
                              {"force": force, "discardUnmerged": discard_unmerged})
    except CliError as err:
        raise _with_hint(err) from None

    def render(out):
        if result.get("alreadyRemoved"):
            out.print("Nothing to remove: the worktree and branch are already gone.")
            return
        out.print(f"[green]Removed[/green] the worktree and branch of {esc(session_id)}")
        gone = result.get("discarded") or {}
        if gone.get("uncommitted") or gone.get("commitCount"):
            out.print(f"[yellow]Discarded {len(gone.get('uncommitted') or [])} uncommitted "
                      f"file(s) and {gone.get('commitCount') or 0} commit(s).[/yellow]")
    run.emit(result, render)
