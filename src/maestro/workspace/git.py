"""The git command line, as the workspace code needs it.

Every call runs `git` as a child process with an argument list (never a shell string), a
timeout, and an environment without the server's own `GIT_*` variables (a `GIT_DIR` or
`GIT_INDEX_FILE` there would point every command at the wrong place). Reads never take git's
optional locks, so a scan never makes an agent's `git commit` fail on `index.lock`. These
functions block: callers run them in a thread."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

READ_TIMEOUT = 30.0
WRITE_TIMEOUT = 120.0
CHECKOUT_TIMEOUT = 600.0  # a worktree of a large repository takes a while to check out
FALLBACK_NAME = "Maestro"
FALLBACK_EMAIL = "maestro@localhost"
PRIVATE_INDEX = "maestro-index"  # Maestro's own index in a worktree's git folder (snapshots)


class GitError(Exception):
    """A git command failed (or did not finish); `stderr` holds what git said."""

    def __init__(self, message: str, stderr: str = "", code: int | None = None):
        super().__init__(message)
        self.message = message
        self.stderr = stderr
        self.code = code


class GitMissing(GitError):
    """There is no `git` executable on PATH."""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class RepoInfo:
    """Where a folder sits in git: the checkout holding it, the repository's shared git folder
    (the same for all its worktrees) and the folder's path inside the checkout."""

    toplevel: str
    common_dir: str
    prefix: str


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C",
                "GIT_MERGE_AUTOEDIT": "no"})
    env.update(extra or {})
    return env


def run(cwd: str, *args: str, timeout: float = READ_TIMEOUT, env: dict[str, str] | None = None,
        check: bool = True) -> Result:
    """Run `git <args>` in `cwd`; raises GitError when it fails (with `check`) or times out."""
    git = shutil.which("git")
    if git is None:
        raise GitMissing("git is not installed (no git on PATH)")
    argv = [git, "-c", "core.quotepath=off", "-c", "color.ui=false", *args]
    try:
        done = subprocess.run(argv, cwd=cwd, env=git_env(env), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="surrogateescape",
                              timeout=timeout, close_fds=True)
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} did not finish within {timeout:.0f}s") from None
    except OSError as exc:
        raise GitError(f"cannot run git {args[0]} in {cwd}: {exc.strerror or exc}") from None
    result = Result(done.returncode, done.stdout, done.stderr)
    if check and done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise GitError(f"git {args[0]} failed: {said[-1] if said else f'exit {done.returncode}'}",
                       done.stderr, done.returncode)
    return result


def _z(text: str) -> list[str]:
    return [part for part in text.split("\0") if part]


# ---------------------------------------------------------------------------- facts
def repo_info(path: str) -> RepoInfo | None:
    """The checkout `path` belongs to, or None when it is not inside a git working tree."""
    done = run(path, "rev-parse", "--show-toplevel", "--git-common-dir", "--show-prefix",
               check=False)
    lines = done.out.split("\n")
    if done.code != 0 or len(lines) < 3 or not lines[0]:
        return None
    common = lines[1]
    if not os.path.isabs(common):
        common = os.path.join(path, common)
    return RepoInfo(toplevel=lines[0], common_dir=os.path.realpath(common),
                    prefix=lines[2].rstrip("/"))


def head_commit(cwd: str) -> str | None:
    """The commit HEAD names, or None in a repository without commits."""
    done = run(cwd, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False)
    return done.out.strip() or None if done.code == 0 else None


def current_branch(cwd: str) -> str | None:
    """The branch checked out in `cwd`, or None when HEAD is detached."""
    done = run(cwd, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return done.out.strip() or None if done.code == 0 else None


def resolve_commit(cwd: str, ref: str) -> str | None:
    """The commit `ref` names, or None. `ref` must not start with `-` (callers check)."""
    done = run(cwd, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return done.out.strip() or None if done.code == 0 else None


def branch_exists(cwd: str, branch: str) -> bool:
    return run(cwd, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}",
               check=False).code == 0


def branch_head(cwd: str, branch: str) -> str | None:
    return resolve_commit(cwd, f"refs/heads/{branch}")


def is_ignored(cwd: str, path: str) -> bool:
    """Whether git ignores `path` (relative to `cwd`)."""
    return run(cwd, "check-ignore", "--quiet", "--", path, check=False).code == 0


def is_ancestor(cwd: str, older: str, newer: str) -> bool:
    return run(cwd, "merge-base", "--is-ancestor", older, newer, check=False).code == 0


def status_files(cwd: str, untracked: bool = True) -> list[str]:
    """Paths with uncommitted changes (staged, unstaged and, with `untracked`, new files)."""
    done = run(cwd, "status", "--porcelain=v1", "-z",
               "--untracked-files=all" if untracked else "--untracked-files=no")
    paths: list[str] = []
    parts = done.out.split("\0")
    i = 0
    while i < len(parts):
        entry = parts[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # a rename or copy is followed by its source path
            i += 1
    return paths


def operation_in_progress(cwd: str) -> str | None:
    """"merge", "rebase", "cherry-pick" or "revert" when one is under way in `cwd`."""
    for name, ref in (("merge", "MERGE_HEAD"), ("cherry-pick", "CHERRY_PICK_HEAD"),
                      ("revert", "REVERT_HEAD")):
        if run(cwd, "rev-parse", "--verify", "--quiet", ref, check=False).code == 0:
            return name
    for folder in ("rebase-merge", "rebase-apply"):
        done = run(cwd, "rev-parse", "--git-path", folder, check=False)
        path = done.out.strip()
        if path and os.path.isdir(os.path.join(cwd, path)):
            return "rebase"
    return None


def commits_between(cwd: str, base: str, head: str, limit: int = 50) -> tuple[int, list[dict]]:
    """How many commits `head` has that `base` lacks, and the newest `limit` of them."""
    count = int(run(cwd, "rev-list", "--count", f"{base}..{head}").out.strip() or 0)
    listed = run(cwd, "log", f"--max-count={limit}", "--format=%H%x00%s%x00", f"{base}..{head}")
    parts = listed.out.split("\0")
    commits = []
    for i in range(0, len(parts) - 1, 2):
        sha = parts[i].strip()
        if sha:
            commits.append({"sha": sha, "subject": parts[i + 1]})
    return count, commits


def worktrees(cwd: str) -> list[dict]:
    """`git worktree list --porcelain`: path, head, branch, locked, prunable of each."""
    out: list[dict] = []
    current: dict = {}
    for line in run(cwd, "worktree", "list", "--porcelain").out.split("\n"):
        if not line:
            if current:
                out.append(current)
            current = {}
            continue
        key, _, value = line.partition(" ")
        if key == "worktree":
            current = {"path": value}
        elif key == "HEAD":
            current["head"] = value
        elif key == "branch":
            current["branch"] = value.removeprefix("refs/heads/")
        elif key in ("locked", "prunable", "bare", "detached"):
            current[key] = value or True
    if current:
        out.append(current)
    return out


def identity_env(cwd: str) -> dict[str, str]:
    """Author and committer for commits Maestro makes: the user's own when git knows one, else
    a fallback naming Maestro (so a merge never fails for want of `user.email`)."""
    if run(cwd, "var", "GIT_COMMITTER_IDENT", check=False).code == 0:
        return {}
    return {"GIT_AUTHOR_NAME": FALLBACK_NAME, "GIT_AUTHOR_EMAIL": FALLBACK_EMAIL,
            "GIT_COMMITTER_NAME": FALLBACK_NAME, "GIT_COMMITTER_EMAIL": FALLBACK_EMAIL}


# ---------------------------------------------------------------------------- the worktree state
def snapshot_tree(worktree: str) -> str:
    """A tree holding everything in `worktree` as it is on disk now: commits, staged and
    unstaged changes and new files (not ignored ones). Built in an index of Maestro's own (kept
    in the worktree's git folder, so the next snapshot rehashes only files that changed, and
    removed with the worktree), so the worktree's own index and files are left as they are."""
    git_dir = run(worktree, "rev-parse", "--absolute-git-dir").out.strip()
    private = os.path.join(git_dir, PRIVATE_INDEX)
    for attempt in (1, 2):
        env = {"GIT_INDEX_FILE": private}
        try:
            if not os.path.exists(private):
                try:
                    shutil.copyfile(os.path.join(git_dir, "index"), private)
                except FileNotFoundError:
                    run(worktree, "read-tree", "HEAD", env=env)
            run(worktree, "add", "--all", "--", ".", env=env, timeout=WRITE_TIMEOUT)
            return run(worktree, "write-tree", env=env).out.strip()
        except GitError:
            # An index of ours that went bad (objects pruned since): start it afresh once.
            try:
                os.unlink(private)
            except FileNotFoundError:
                pass
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def changed_paths(cwd: str, base: str, target: str) -> list[str]:
    """Paths that differ between two commits or trees (renames as a delete and an add)."""
    done = run(cwd, "diff", "--no-ext-diff", "--no-renames", "--name-only", "-z", base, target)
    return sorted(_z(done.out))


def diff_files(cwd: str, base: str, target: str) -> list[dict]:
    """Each changed path with its status (A, M, D, T) and added/deleted line counts (None for
    binary files)."""
    statuses = _z(run(cwd, "diff", "--no-ext-diff", "--no-renames", "--name-status", "-z",
                      base, target).out)
    files: dict[str, dict] = {}
    for i in range(0, len(statuses) - 1, 2):
        files[statuses[i + 1]] = {"path": statuses[i + 1], "status": statuses[i][:1],
                                  "added": None, "deleted": None}
    for entry in _z(run(cwd, "diff", "--no-ext-diff", "--no-renames", "--numstat", "-z",
                        base, target).out):
        added, deleted, path = (entry.split("\t", 2) + ["", ""])[:3]
        if path in files:
            files[path]["added"] = int(added) if added.isdigit() else None
            files[path]["deleted"] = int(deleted) if deleted.isdigit() else None
    return sorted(files.values(), key=lambda f: f["path"])


def diff_patch(cwd: str, base: str, target: str) -> str:
    return run(cwd, "diff", "--no-ext-diff", "--no-textconv", "--no-renames", base, target,
               timeout=WRITE_TIMEOUT).out


# ---------------------------------------------------------------------------- changes
def add_worktree(repo: str, path: str, branch: str, commit: str, lock_reason: str) -> None:
    """A new worktree at `path` on a new `branch` starting at `commit`, locked so that a
    `git worktree remove` or `prune` by hand does not throw it away."""
    run(repo, "worktree", "add", "-b", branch, path, commit, timeout=CHECKOUT_TIMEOUT)
    run(repo, "worktree", "lock", "--reason", lock_reason, path, check=False)


def remove_worktree(repo: str, path: str, force: bool = False) -> None:
    run(repo, "worktree", "unlock", path, check=False)
    if os.path.exists(path):
        args = ["worktree", "remove"] + (["--force"] if force else []) + [path]
        run(repo, *args, timeout=WRITE_TIMEOUT)
    else:  # the folder went away by hand: forget its registration
        run(repo, "worktree", "prune", check=False)


def delete_branch(repo: str, branch: str, force: bool = False) -> None:
    run(repo, "branch", "-D" if force else "-d", branch)


def commit_all(worktree: str, message: str) -> str:
    """Commit everything uncommitted in `worktree` (new files too); returns the new HEAD."""
    env = identity_env(worktree)
    run(worktree, "add", "--all", "--", ".", timeout=WRITE_TIMEOUT)
    run(worktree, "commit", "--quiet", "--no-verify", "-m", message, env=env,
        timeout=WRITE_TIMEOUT)
    return head_commit(worktree) or ""


def merge_conflicts(repo: str, base: str, head: str) -> list[str] | None:
    """The files a merge of `head` into `base` would leave in conflict ([] for a clean merge),
    worked out without touching any worktree; None when this git cannot tell that way."""
    done = run(repo, "merge-tree", "--write-tree", "-z", "--name-only", "--no-messages",
               base, head, check=False)
    if done.code == 0:
        return []
    if done.code == 1:
        return sorted(set(_z(done.out)[1:]))
    return None


def merge(repo: str, head: str, message: str) -> Result:
    """`git merge` of `head` into the branch checked out in `repo` (fast-forward when possible,
    else a merge commit); the result, unchecked."""
    return run(repo, "merge", "--no-edit", "-m", message, head, env=identity_env(repo),
               timeout=WRITE_TIMEOUT, check=False)


def abort_merge(repo: str) -> None:
    if run(repo, "merge", "--abort", check=False).code != 0:
        run(repo, "reset", "--merge", check=False)


def unmerged_paths(repo: str) -> list[str]:
    return sorted(set(_z(run(repo, "diff", "--name-only", "-z", "--diff-filter=U",
                             check=False).out)))


def overwritten_untracked(stderr: str) -> list[str]:
    """Untracked files that `git merge` refused to overwrite, from its message."""
    files: list[str] = []
    taking = False
    for line in stderr.splitlines():
        if "untracked working tree files would be" in line:
            taking = True
            continue
        if taking:
            if line.startswith(("\t", " ")) and line.strip():
                files.append(line.strip())
            else:
                taking = False
    return files
