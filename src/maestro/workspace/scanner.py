"""Overlap watch: which files each live worktree changes, and which two sessions change the
same file. Runs every MAESTRO_WORKSPACE_SCAN_SECONDS and soon after a session event that may
matter (a new session, a status change, a new session event or report); records what it finds
in `session.workspace` (`changedFiles`, `overlaps`) and sends `session:overlap` for each pair
whose shared files grew."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from ..aio import cancel_and_wait, wait_event
from ..events import Event
from ..ids import now_ms
from ..vocabulary import ACTIVE_SESSION_STATUSES as ACTIVE_STATUSES
from . import git
from .overlap import new_pairs, overlaps

log = logging.getLogger("maestro.workspace")

MAX_LISTED_FILES = 500


def capped(files: list[str]) -> list[str]:
    return files[:MAX_LISTED_FILES]


def worktree_sessions(service) -> list[dict]:
    """Sessions (committed view) that have a worktree record."""
    return service.sessions_where(lambda s: isinstance(s.get("workspace"), dict)
                                  and s["workspace"].get("mode") == "worktree")


class OverlapScanner:
    def __init__(self, service, lock: Callable[[str], asyncio.Lock], interval: float):
        self.service = service
        self.lock = lock
        self.interval = interval
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._unsubscribe = None
        self._seen: dict[str, tuple] = {}
        self._scanned_final: set[str] = set()

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._unsubscribe = self.service.bus.subscribe(self._on_event)
        self._task = asyncio.create_task(self._scan_loop(), name="maestro-workspace-scan")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        await cancel_and_wait(self._task)

    def _on_event(self, event: Event) -> None:
        if event.type == "session:deleted":
            self.wake()
            return
        if event.type not in ("session:created", "session:updated"):
            return
        data = event.data
        if not isinstance(data, dict) or not isinstance(data.get("workspace"), dict) \
                or data["workspace"].get("mode") != "worktree":
            return
        key = (data.get("status"), len(data.get("events") or []),
               len(data.get("timeline") or []))
        if self._seen.get(data.get("id")) != key:
            self._seen[data.get("id")] = key
            self.wake()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _scan_loop(self) -> None:
        while True:
            await wait_event(self._wake, self.interval)
            self._wake.clear()
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:  # retried at the next tick
                log.exception("workspaces: scan failed")

    async def scan(self) -> None:
        """Find the files each live worktree changes (against its base commit, uncommitted
        changes and new files included) and record the files two sessions both change."""
        groups: dict[str, list[dict]] = {}
        for s in worktree_sessions(self.service):
            groups.setdefault(os.path.realpath(s["workspace"]["repo"]), []).append(s)
        updates: dict[str, dict] = {}
        events: list[tuple[str, dict]] = []
        for repo, sessions in groups.items():
            active = [s for s in sessions if s["workspace"].get("state") == "active"]
            targets = [s for s in active if s.get("status") in ACTIVE_STATUSES
                       or s["id"] not in self._scanned_final]
            found: dict[str, list[str] | None] = {}
            if targets:
                async with self.lock(repo):
                    found = await asyncio.to_thread(self._changed_files, targets)
            for s in targets:
                if s.get("status") not in ACTIVE_STATUSES and found.get(s["id"]) is not None:
                    self._scanned_final.add(s["id"])
            changed = {}
            for s in active:
                files = found.get(s["id"])
                changed[s["id"]] = files if files is not None else \
                    list(s["workspace"].get("changedFiles") or [])
            shared_files = overlaps(changed)
            branches = {s["id"]: s["workspace"].get("branch") for s in active}
            for s in sessions:
                ws = s["workspace"]
                mine = shared_files.get(s["id"], {}) if ws.get("state") == "active" else {}
                listed = [{"sessionId": other, "branch": branches.get(other), "files": files}
                          for other, files in mine.items()]
                change: dict[str, Any] = {}
                if s["id"] in changed and found.get(s["id"]) is not None:
                    files = changed[s["id"]]
                    if capped(files) != ws.get("changedFiles") \
                            or len(files) != ws.get("changedCount", len(files)):
                        change.update(changedFiles=capped(files), changedCount=len(files))
                if listed != (ws.get("overlaps") or []):
                    change["overlaps"] = listed
                if change:
                    change["scannedAt"] = now_ms()
                    updates[s["id"]] = change
            before = {s["id"]: s["workspace"].get("overlaps") or [] for s in active}
            project = {s["id"]: s.get("projectId") for s in active}
            for a, b, files in new_pairs(before, shared_files):
                events.append(("session:overlap", {
                    "projectId": project.get(a), "sessionIds": [a, b],
                    "branches": [branches.get(a), branches.get(b)], "files": files}))
        if updates or events:
            await self.service.record_workspaces(updates, events=events, active_only=True)

    @staticmethod
    def _changed_files(sessions: list[dict]) -> dict[str, list[str] | None]:
        out: dict[str, list[str] | None] = {}
        for s in sessions:
            ws = s["workspace"]
            path = ws.get("path") or ""
            if not os.path.isdir(path):
                out[s["id"]] = None
                continue
            try:
                tree = git.snapshot_tree(path)
                out[s["id"]] = git.changed_paths(path, ws["baseCommit"], tree)
            except git.GitError as exc:
                log.info("workspaces: cannot read the changes of %s: %s", path, exc.message)
                out[s["id"]] = None
        return out
