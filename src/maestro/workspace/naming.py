"""Names of new worktrees: the branch `maestro/<task-slug>-<4 hex>` and its folder
`<root>/<repo-name>-<8 hex>/<branch with / as ->`.

A name is never handed out while a branch or a folder of that name exists, so a worktree left
behind (merged or not) is never reused by a later session."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Callable

BRANCH_PREFIX = "maestro/"
SLUG_LENGTH = 40
ATTEMPTS = 32


def slugify(text: str, max_len: int = SLUG_LENGTH) -> str:
    """`Add login (OAuth)!` -> `add-login-oauth`: lowercase ASCII letters, digits and single
    dashes, cut at a dash near `max_len`; `task` when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > max_len:
        cut = slug[:max_len]
        slug = cut.rsplit("-", 1)[0] if "-" in cut[max_len // 2:] else cut
    return slug.strip("-") or "task"


def repo_folder(toplevel: str) -> str:
    """The folder of one repository's worktrees under the worktree root: its name, plus a hash
    of its path so two checkouts called `app` do not share one."""
    real = os.path.realpath(toplevel)
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{slugify(os.path.basename(real), 30)}-{digest}"


def folder_of(branch: str) -> str:
    return branch.replace("/", "-")


def choose(title: str, parent: str, taken: Callable[[str, str], bool],
           suffix: Callable[[], str] = lambda: secrets.token_hex(2)) -> tuple[str, str]:
    """(branch, folder path) for a task called `title`, the first whose branch and folder are
    both free (`taken(branch, path)` says whether either exists)."""
    slug = slugify(title)
    for attempt in range(ATTEMPTS):
        end = suffix() if attempt < ATTEMPTS // 2 else secrets.token_hex(4)
        branch = f"{BRANCH_PREFIX}{slug}-{end}"
        path = os.path.join(parent, folder_of(branch))
        if not taken(branch, path):
            return branch, path
    raise RuntimeError(f"no free worktree name for {slug!r} after {ATTEMPTS} tries")
