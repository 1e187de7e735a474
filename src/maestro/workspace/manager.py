"""Worktrees of spawned sessions: made at spawn, reviewed (diff), merged back, removed on request,
checked against the disk at start-up, and watched for overlapping changes (`scanner`).

Git runs in threads (never on the event loop) and every piece of git work on one repository
holds that repository's lock, so two merges, or a merge and a scan, never interleave. Nothing
here removes a worktree while its session runs, nor one holding uncommitted changes or commits
the base lacks unless the caller says so explicitly (`force`, `discardUnmerged`)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import ApiError, conflict, validation
from ..ids import now_ms
from ..vocabulary import ACTIVE_SESSION_STATUSES as ACTIVE_STATUSES
from . import git, naming
from .options import shared, worktree_of
from .scanner import MAX_LISTED_FILES, OverlapScanner, capped, \
    worktree_sessions

log = logging.getLogger("maestro.workspace")

MAX_PATCH_CHARS = 2_000_000
# Settings files a checkout keeps out of git that an agent's tools (the `maestro` CLI among
# them) read from their working folder: copied into a new worktree when git ignores them there.
SETTINGS_FILES = (".env",)


def _copy_settings(working_dir: str, cwd: str) -> list[str]:
    """Copy the checkout's ignored settings files (`.env`) into a new worktree, where they are
    missing because git does not hold them; never over a file that is there, never one git
    would see as a change."""
    copied = []
    for name in SETTINGS_FILES:
        source, target = os.path.join(working_dir, name), os.path.join(cwd, name)
        if not os.path.isfile(source) or os.path.islink(source) or os.path.lexists(target) \
                or not git.is_ignored(cwd, name):
            continue
        try:
            shutil.copy2(source, target)
        except OSError as exc:
            log.warning("workspaces: could not copy %s into %s: %s", name, cwd, exc)
            continue
        copied.append(name)
    return copied


class WorkspaceManager:
    """One per server; an extension of the app (started after the service, stopped before)."""

    def __init__(self, service, settings):
        self.service = service
        self.settings = settings
        self.root = Path(settings.worktree_dir)
        self._locks: dict[str, asyncio.Lock] = {}
        self.scanner = OverlapScanner(service, self.lock, settings.workspace_scan_seconds)
        self.report: dict[str, Any] = {"root": str(self.root), "strays": [], "missing": [],
                                       "checkedAt": None}

    def lock(self, repo: str) -> asyncio.Lock:
        key = os.path.realpath(repo)
        if key not in self._locks:
            self._locks[key] = asyncio.Lock()
        return self._locks[key]

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        try:
            await self.reconcile()
        except Exception:  # a report that could not be made must not stop the server
            log.exception("workspaces: start-up check failed")
        self.scanner.start()

    async def stop(self) -> None:
        await self.scanner.stop()

    def health(self) -> dict:
        return dict(self.report)

    # ------------------------------------------------------------------ spawn
    async def prepare(self, options: dict, project: dict, tasks: list[dict],
                      session_id: str) -> dict:
        """The workspace of a session about to be spawned: a new worktree on a new branch when
        the project's folder is in a git repository and isolation is wanted, else `shared`
        with the reason."""
        working_dir = project.get("workingDir") if isinstance(project.get("workingDir"),
                                                              str) else ""
        chosen = options.get("isolation") or project.get("isolation") or "worktree"
        if chosen == "none":
            where = "spawn request" if options.get("isolation") else "project setting"
            return shared(working_dir, f"isolation is none ({where})")
        if not working_dir:
            return shared("", "the project has no workingDir")
        if not os.path.isabs(working_dir):  # it would name a folder relative to the server
            return shared(working_dir, "the project's workingDir is not an absolute path")
        if not os.path.isdir(working_dir):
            return shared(working_dir, "the project's workingDir does not exist")
        try:
            info = await asyncio.to_thread(git.repo_info, working_dir)
        except git.GitMissing:
            return shared(working_dir, "git is not installed")
        if info is None:
            return shared(working_dir, "the project's workingDir is not in a git repository")
        base = options.get("baseRef") or project.get("baseRef") or None
        title = tasks[0].get("title") if tasks and isinstance(tasks[0].get("title"), str) \
            else "task"
        async with self.lock(info.toplevel):  # the key every later step uses (ws["repo"])
            try:
                return await asyncio.to_thread(self._create, info, working_dir, base, title,
                                               session_id)
            except git.GitError as exc:
                log.error("workspaces: cannot create a worktree in %s: %s", info.toplevel,
                          exc.stderr.strip() or exc.message)
                raise ApiError(500, "workspace_error",
                               f"Cannot create the session's worktree: {exc.message}",
                               {"repo": info.toplevel}) from None

    def _create(self, info: git.RepoInfo, working_dir: str, base: str | None, title: str,
                session_id: str) -> dict:
        top = info.toplevel
        if base is not None:
            commit = git.resolve_commit(top, base)
            if commit is None:
                raise validation(f"baseRef {base} names no commit of the repository at {top}",
                                 {"field": "baseRef", "baseRef": base})
        else:
            commit = git.head_commit(top)
            if commit is None:
                return shared(working_dir, "the repository has no commits yet")
            base = git.current_branch(top) or commit
        parent = self.root / naming.repo_folder(top)
        listed = {os.path.realpath(w["path"]) for w in git.worktrees(top) if w.get("path")}

        def taken(branch: str, path: str) -> bool:
            return os.path.lexists(path) or os.path.realpath(path) in listed \
                or git.branch_exists(top, branch)

        branch, path = naming.choose(title, str(parent), taken)
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        git.add_worktree(top, path, branch, commit, f"Maestro session {session_id}")
        cwd = os.path.join(path, info.prefix) if info.prefix else path
        os.makedirs(cwd, exist_ok=True)
        log.info("workspaces: session %s works in %s on %s (from %s)", session_id, path, branch,
                 base)
        ws = {"mode": "worktree", "path": path, "cwd": cwd, "branch": branch, "baseRef": base,
              "baseCommit": commit, "repo": top, "state": "active", "createdAt": now_ms(),
              "changedFiles": [], "overlaps": []}
        copied = _copy_settings(working_dir, cwd)
        if copied:
            ws["copied"] = copied
        return ws

    async def discard(self, ws: dict | None) -> None:
        """Undo `prepare` for a spawn that failed afterwards: the worktree is removed only if it
        is still exactly as made (clean, its branch at the base commit)."""
        if not isinstance(ws, dict) or ws.get("mode") != "worktree":
            return

        def undo() -> None:
            repo, path, branch = ws["repo"], ws["path"], ws["branch"]
            if git.status_files(path) or git.branch_head(repo, branch) != ws["baseCommit"]:
                log.warning("workspaces: kept %s: it changed before its spawn failed", path)
                return
            git.remove_worktree(repo, path)
            git.delete_branch(repo, branch, force=True)

        async with self.lock(ws["repo"]):
            try:
                await asyncio.to_thread(undo)
            except git.GitError as exc:
                log.warning("workspaces: could not remove %s after a failed spawn: %s",
                            ws.get("path"), exc.message)

    # ------------------------------------------------------------------ review
    async def diff(self, session_id: str) -> dict:
        """The session's work against its base commit: per-file stat and the patch, including
        uncommitted changes and new files while the worktree exists."""
        session = self.service.get_session(session_id)
        ws = worktree_of(session)
        async with self.lock(ws["repo"]):
            body = await asyncio.to_thread(self._diff, ws)
        return {"sessionId": session_id, **body}

    def _diff(self, ws: dict) -> dict:
        repo, path, base = ws["repo"], ws["path"], ws["baseCommit"]
        uncommitted: list[str] = []
        if os.path.isdir(path):
            cwd = path
            head = git.head_commit(path)
            target = git.snapshot_tree(path)
            uncommitted = git.status_files(path)
            live = True
        else:
            cwd = repo
            head = (ws.get("merge") or {}).get("head") or git.branch_head(repo, ws["branch"])
            if head is None:
                raise conflict("WORKSPACE_REMOVED", "The session's worktree and branch are "
                               "gone", {"branch": ws["branch"], "path": path})
            target = head
            live = False
        files = git.diff_files(cwd, base, target)
        pending = set(uncommitted)
        for entry in files:
            entry["uncommitted"] = entry["path"] in pending
        patch = git.diff_patch(cwd, base, target)
        truncated = len(patch) > MAX_PATCH_CHARS
        count, commits = git.commits_between(cwd, base, head) if head else (0, [])
        return {
            "branch": ws["branch"], "baseRef": ws["baseRef"], "baseCommit": base,
            "head": head, "path": path, "includesUncommitted": live,
            "files": files, "uncommitted": uncommitted, "commitCount": count,
            "commits": commits,
            "stat": {"files": len(files), "added": sum(f["added"] or 0 for f in files),
                     "deleted": sum(f["deleted"] or 0 for f in files)},
            "patch": patch[:MAX_PATCH_CHARS], "truncated": truncated,
        }

    # ------------------------------------------------------------------ merge
    async def merge(self, session_id: str, body: dict) -> dict:
        """Merge the session's branch into its base branch in the main worktree (fast-forward
        when possible, else a merge commit). Refused, with nothing changed, when the main
        worktree is dirty or not on the base branch, or when the merge would conflict."""
        commit_uncommitted = body.get("commitUncommitted", False)
        keep = body.get("cleanup", True)
        message = body.get("message")
        for name, value in (("commitUncommitted", commit_uncommitted), ("cleanup", keep)):
            if not isinstance(value, bool):
                raise validation(f"{name} must be true or false", {"field": name})
        if message is not None and (not isinstance(message, str) or not message.strip()):
            raise validation("message must be a non-empty string", {"field": "message"})
        session = self.service.get_session(session_id)
        ws = worktree_of(session)
        async with self.lock(ws["repo"]):
            session = self.service.get_session(session_id)  # as it is now
            ws = worktree_of(session)
            result = await asyncio.to_thread(self._merge, session, ws, commit_uncommitted,
                                             message, keep)
            changes: dict[str, Any] = {"state": "removed" if result["removed"] else "merged",
                                       "merge": result["merge"], "overlaps": []}
            if result["removed"]:
                changes["removedAt"] = now_ms()
            merge = result["merge"]
            how = "already merged" if merge["alreadyMerged"] else \
                "fast-forward" if merge["fastForward"] else "merge commit"
            note = (f"Session {session_id} merged: {ws['branch']} into {ws['baseRef']} "
                    f"({how}, {merge['commit'][:10]})")
            event = {"sessionId": session_id, "projectId": session.get("projectId"),
                     "branch": ws["branch"], "baseRef": ws["baseRef"], **merge,
                     "removed": result["removed"]}
            stored = await self.service.record_workspaces(
                {session_id: changes}, events=[("session:merged", event)],
                timeline={session_id: note})
        self.scanner.wake()
        return {"success": True, "sessionId": session_id, "branch": ws["branch"],
                "baseRef": ws["baseRef"], **merge, "removed": result["removed"],
                "session": stored.get(session_id, session)}

    def _merge(self, session: dict, ws: dict, commit_uncommitted: bool, message: str | None,
               keep_cleanup: bool) -> dict:
        repo, path, branch, base = ws["repo"], ws["path"], ws["branch"], ws["baseRef"]
        sid = session["id"]
        present = os.path.isdir(path)
        if present:
            pending = git.status_files(path)
            if pending and not commit_uncommitted:
                raise conflict("WORKTREE_DIRTY", "The session's worktree has uncommitted "
                               "changes; commit them first (or ask the merge to: "
                               "commitUncommitted)", {"files": pending[:MAX_LISTED_FILES]})
            if pending:
                git.commit_all(path, f"Work of Maestro session {sid}: "
                                     f"{session.get('name') or 'uncommitted changes'}")
        head = git.branch_head(repo, branch) or (git.head_commit(path) if present else None)
        if head is None:
            raise conflict("WORKSPACE_REMOVED", "The session's worktree and branch are gone",
                           {"branch": branch, "path": path})
        checked_out = git.current_branch(repo)
        if checked_out != base or not git.branch_exists(repo, base):
            raise conflict("BASE_NOT_CHECKED_OUT",
                           f"The main worktree must have the base branch {base} checked out "
                           "to merge into it", {"baseRef": base, "checkedOut": checked_out,
                                                "repo": repo})
        busy = git.operation_in_progress(repo)
        dirty = git.status_files(repo, untracked=False)
        if busy or dirty:
            raise conflict("MAIN_WORKTREE_DIRTY",
                           "The main worktree has uncommitted changes" +
                           (f" (a {busy} is in progress)" if busy else "") +
                           "; commit or stash them first",
                           {"repo": repo, "files": dirty[:MAX_LISTED_FILES],
                            "operation": busy})
        before = git.head_commit(repo)
        merge: dict[str, Any] = {"head": head, "before": before, "at": now_ms()}
        if git.is_ancestor(repo, head, before):
            merge.update(commit=before, fastForward=False, alreadyMerged=True, files=[])
        else:
            files = git.changed_paths(repo, before, head) if git.is_ancestor(
                repo, before, head) else git.changed_paths(repo, ws["baseCommit"], head)
            clash = git.merge_conflicts(repo, before, head)
            if clash:
                raise self._conflict(branch, base, clash)
            text = message or \
                f"Merge {branch} (Maestro session {sid}: {session.get('name') or sid})"
            done = git.merge(repo, branch if git.branch_exists(repo, branch) else head, text)
            if done.code != 0:
                self._undo_failed_merge(repo, before, done)
            after = git.head_commit(repo)
            merge.update(commit=after, fastForward=after == head, alreadyMerged=False,
                         files=capped(files))
        removed = False
        if keep_cleanup and present and session.get("status") not in ACTIVE_STATUSES \
                and not git.status_files(path):
            try:
                git.remove_worktree(repo, path)
                git.delete_branch(repo, branch)
                removed = True
            except git.GitError as exc:  # merged all the same; the worktree stays
                log.warning("workspaces: merged %s but kept %s: %s", branch, path, exc.message)
        return {"merge": merge, "removed": removed}

    @staticmethod
    def _conflict(branch: str, base: str, files: list[str]) -> ApiError:
        return conflict("MERGE_CONFLICT", f"Merging {branch} into {base} conflicts in "
                        f"{len(files)} file(s); nothing was changed",
                        {"branch": branch, "baseRef": base, "files": files})

    def _undo_failed_merge(self, repo: str, before: str | None, done: git.Result) -> None:
        """A merge that git itself refused or stopped: leave the main worktree as it was and
        say why."""
        files = git.unmerged_paths(repo)
        git.abort_merge(repo)
        if git.head_commit(repo) != before:
            log.error("workspaces: HEAD of %s moved during a failed merge", repo)
        blocked = git.overwritten_untracked(done.err)
        if blocked:
            raise conflict("MAIN_WORKTREE_DIRTY", "Untracked files in the main worktree would "
                           "be overwritten by the merge; move them away first",
                           {"repo": repo, "files": blocked, "operation": None})
        if files:
            raise conflict("MERGE_CONFLICT", f"The merge conflicts in {len(files)} file(s); "
                           "nothing was changed", {"files": files})
        said = done.err.strip().splitlines()
        raise ApiError(500, "GIT_FAILED", "git merge failed: " + (said[-1] if said else
                                                                  f"exit {done.code}"))

    # ------------------------------------------------------------------ clean-up
    async def cleanup(self, session_id: str, body: dict) -> dict:
        """Remove the session's worktree and branch. Refused while the session runs; work not
        merged needs `force` (uncommitted changes) and also `discardUnmerged` (commits)."""
        force = body.get("force", False)
        discard = body.get("discardUnmerged", False)
        for name, value in (("force", force), ("discardUnmerged", discard)):
            if not isinstance(value, bool):
                raise validation(f"{name} must be true or false", {"field": name})
        session = self.service.get_session(session_id)
        ws = worktree_of(session)
        async with self.lock(ws["repo"]):
            session = self.service.get_session(session_id)
            ws = worktree_of(session)
            if session.get("status") in ACTIVE_STATUSES:
                raise conflict("SESSION_ACTIVE", f"Session {session_id} is "
                               f"{session.get('status')}: stop it before removing its worktree",
                               {"sessionId": session_id, "status": session.get("status")})
            result = await asyncio.to_thread(self._cleanup, ws, force, discard)
            changes: dict[str, Any] = {"overlaps": []}
            if result["removed"]:
                changes.update(state="removed", removedAt=now_ms())
                if result["discarded"]["uncommitted"] or result["discarded"]["commitCount"]:
                    changes["discarded"] = result["discarded"]
            stored = await self.service.record_workspaces({session_id: changes})
        self.scanner.wake()
        return {"success": True, "sessionId": session_id, **result,
                "session": stored.get(session_id, session)}

    def _cleanup(self, ws: dict, force: bool, discard: bool) -> dict:
        repo, path, branch = ws["repo"], ws["path"], ws["branch"]
        present = os.path.isdir(path)
        has_branch = git.branch_exists(repo, branch)
        if not present and not has_branch:
            return {"removed": False, "alreadyRemoved": True,
                    "discarded": {"uncommitted": [], "commitCount": 0, "commits": []}}
        uncommitted = git.status_files(path) if present else []
        head = git.branch_head(repo, branch) if has_branch else git.head_commit(path)
        base = git.branch_head(repo, ws["baseRef"]) or ws["baseCommit"]
        count, commits = git.commits_between(repo, base, head) if head else (0, [])
        if (uncommitted or count) and not force or count and not discard:
            needs = ["force"] + (["discardUnmerged"] if count else [])
            parts = []
            if uncommitted:
                parts.append(f"{len(uncommitted)} file(s) with uncommitted changes")
            if count:
                parts.append(f"{count} commit(s) not merged into {ws['baseRef']}")
            raise conflict("UNMERGED_WORK", "The worktree holds work that is not merged: "
                           + " and ".join(parts) + "; merge it, or pass "
                           + " and ".join(needs) + " to throw it away",
                           {"uncommitted": uncommitted[:MAX_LISTED_FILES],
                            "commitCount": count, "commits": commits, "needs": needs})
        if present:
            git.remove_worktree(repo, path, force=bool(uncommitted))
        else:
            git.remove_worktree(repo, path)
        if has_branch:
            git.delete_branch(repo, branch, force=bool(count))
        return {"removed": True, "alreadyRemoved": False,
                "discarded": {"uncommitted": uncommitted[:MAX_LISTED_FILES],
                              "commitCount": count, "commits": commits}}

    # ------------------------------------------------------------------ listing and start-up
    async def reconcile(self, announce: bool = True) -> dict:
        """Compare the worktrees on disk under the worktree root with the sessions: folders no
        session owns are strays, sessions whose folder is gone are missing. Reported (in the
        log when `announce`, and in /health), never deleted."""
        sessions = worktree_sessions(self.service)
        owned = {os.path.realpath(s["workspace"]["path"]) for s in sessions
                 if s["workspace"].get("state") != "removed" and s["workspace"].get("path")}
        missing = [{"sessionId": s["id"], "path": s["workspace"].get("path"),
                    "branch": s["workspace"].get("branch")}
                   for s in sessions if s["workspace"].get("state") != "removed"
                   and not os.path.isdir(s["workspace"].get("path") or "")]
        strays = await asyncio.to_thread(self._strays, owned)
        for stray in strays if announce else ():
            log.warning("workspaces: stray worktree %s (branch %s, %d uncommitted file(s)) "
                        "belongs to no session; kept", stray["path"], stray.get("branch"),
                        len(stray.get("uncommitted") or []))
        for gone in missing if announce else ():
            log.warning("workspaces: the worktree of session %s is missing (%s)",
                        gone["sessionId"], gone["path"])
        self.report = {"root": str(self.root), "strays": strays, "missing": missing,
                       "checkedAt": now_ms()}
        return self.report

    def _strays(self, owned: set[str]) -> list[dict]:
        out = []
        if not self.root.is_dir():
            return out
        for repo_dir in sorted(self.root.iterdir()):
            if not repo_dir.is_dir():
                continue
            for folder in sorted(repo_dir.iterdir()):
                if not folder.is_dir() or os.path.realpath(folder) in owned:
                    continue
                entry: dict[str, Any] = {"path": str(folder)}
                if (folder / ".git").exists():
                    try:
                        entry["branch"] = git.current_branch(str(folder))
                        entry["uncommitted"] = git.status_files(str(folder))[:MAX_LISTED_FILES]
                    except git.GitError as exc:
                        entry["error"] = exc.message
                out.append(entry)
        return out

    def list(self, project_id: str | None) -> list[dict]:
        out = []
        for s in worktree_sessions(self.service):
            if project_id and s.get("projectId") != project_id:
                continue
            out.append({"sessionId": s["id"], "projectId": s.get("projectId"),
                        "status": s.get("status"), "name": s.get("name"), **s["workspace"]})
        return out
