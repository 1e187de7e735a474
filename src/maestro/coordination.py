"""Coordination rules of SPEC §15 (dependencies, readiness, claims, handoff, the board telling
the truth) as a part of the Service.

Every check and its write happen inside one `apply` under the mutation lock, so on every store
two racing requests are serialised: of two claims of one task, or of two edges A→B and B→A,
exactly one wins. Leases are granted, checked and expired on one clock, `claim_now`: the
server's own, plus, when several servers share a PostgreSQL database, the offset of the
database's clock measured at each heartbeat (replicas.py), so that every server decides on the
same time. Two servers sweeping the same expired lease do no harm: the sweep checks again, in
its mutation, that the lease is still there and expired."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .commit import Tx
from .domain.graph import dependency_ids, describe_cycle, find_cycle
from .domain.handoff import dependency_briefs, handoff_message, last_completion_report
from .domain.links import checked_dependencies, new_edges
from .domain.readiness import assess, has_unfinished_children, live_claim
from .domain.timeline import entry as timeline_entry
from .entities import as_list, bump, with_changes
from .errors import ApiError, conflict, project_not_found, session_not_found, task_not_found, \
    validation
from .ids import now_ms
from . import models as shape
from .shapes import checker
from .vocabulary import AGENT_AT_WORK, FINAL_SESSION_STATUSES
from .write_lead import forwardable

if TYPE_CHECKING:
    from .ready_index import ReadyIndex
    from .state import State

log = logging.getLogger("maestro.coordination")

DEFAULT_TTL_SECONDS = 600
MAX_TTL_SECONDS = 86_400
_check_claim = checker(shape.ClaimRequest)
_check_next = checker(shape.ClaimNextRequest)
_check_renew = checker(shape.RenewRequest)
_check_release = checker(shape.ReleaseRequest)


def _claim_event(task_id: str, claim: dict) -> dict:
    return {"taskId": task_id, "sessionId": claim.get("sessionId"), "token": claim.get("token")}


def _without(entity: dict, keys: tuple) -> dict:
    if not any(k in entity for k in keys):
        return entity
    return {k: value for k, value in entity.items() if k not in keys}


def _entry(now: int, message: str, session_id: str | None = None) -> dict:
    return timeline_entry(now, "update", message, sessionId=session_id)


class Coordination:
    """Mixed into the Service: uses its `state`, `_mutate`, `_link` and `get_*` methods."""

    state: State
    ready_index: ReadyIndex
    # Settings (see config.py); the server sets them from the environment.
    claim_min_ttl = 5
    claim_sweep_seconds = 1.0
    # Test-only: a claim checks, sleeps this long, then grants in a second step (a deliberate
    # check-then-act race, to show that the race test detects double grants).
    claim_race_delay_ms = 0
    # Milliseconds to add to this machine's clock to read the shared clock (the database's,
    # measured by the replica heartbeat; 0 for a server alone).
    clock_offset_ms = 0
    _sweeper: asyncio.Task | None = None

    def claim_now(self) -> int:
        """Now, in ms, on the clock every lease decision uses (see the module's docstring)."""
        return now_ms() + self.clock_offset_ms

    # ------------------------------------------------------------ reads
    def list_ready(self, project_id: str | None = None, parent_id: str | None = None,
                   status: str | None = None) -> list[dict]:
        """Ready tasks (§15.2) of a project and/or under a parent, in §15.2 order."""
        if status is not None and status != "pending":
            return []
        now = self.claim_now()
        get = self.state.tasks.rows.get
        out = []
        for key in self.ready_index.ready_keys(project_id, parent_id):
            task = get(key[2])
            if task is not None and live_claim(task, now) is None:
                out.append(task)
        return out

    def list_blocked(self, project_id: str | None = None, parent_id: str | None = None,
                     status: str | None = None) -> list[dict]:
        """Pending tasks held back by dependencies or ancestors, in §15.2 order."""
        if status is not None and status != "pending":
            return []
        get = self.state.tasks.rows.get
        out = []
        for tid in self.ready_index.blocked_ids(project_id):
            task = get(tid)
            if task is not None and (parent_id is None or task.get("parentId") == parent_id):
                out.append(task)
        return out

    def task_readiness(self, task_id: str) -> dict:
        """GET /api/tasks/:id/readiness."""
        result = assess(task_id, self.state.tasks.rows.get, self.claim_now())
        if result is None:
            raise task_not_found(task_id)
        return result.body()

    def dependency_briefs(self, tasks: list[dict]) -> list[dict]:
        """Title, status and last completion report of each dependency of `tasks` (for the
        manifest of an agent spawned for them, §15.4), each naming the task needing it."""
        out = []
        for task in tasks:
            for brief in dependency_briefs(task, self.state.tasks.get, self.state.sessions.get):
                out.append(dict(brief, neededBy=task["id"]))
        return out

    # ------------------------------------------------------------ dependencies
    def _checked_dependencies(self, task: dict | None, project_id: str, wanted: list[str],
                              current: list[str]) -> list[str]:
        """`wanted` without duplicates, each new id an existing task of the same project and
        not the task itself (ids already held may name tasks that are gone, §15.1)."""
        own = task.get("id") if task is not None else None
        return checked_dependencies(own, project_id, wanted, current, self.state.tasks.get)

    def _refuse_cycle(self, proposed: dict, new_targets: list[str]) -> None:
        """400 DEPENDENCY_CYCLE if giving `proposed` edges to `new_targets` closes a cycle."""
        if not new_targets:
            return
        cycle = find_cycle(proposed["id"], new_targets, self.state.tasks.rows.get, proposed)
        if cycle is not None:
            raise ApiError(400, "DEPENDENCY_CYCLE", describe_cycle(cycle), {"cycle": cycle})

    @staticmethod
    def _new_edges(old: dict, proposed: dict) -> list[str]:
        """Targets of edges `proposed` has and `old` had not (dependencies and parent)."""
        return new_edges(old, proposed)

    @forwardable
    async def add_dependency(self, task_id: str, dependency_id: str, *,
                             actor: str | None = None, claim_token: int | None = None) -> dict:
        """POST /api/tasks/:id/dependencies/:dependsOnId (idempotent)."""
        def apply(tx: Tx) -> dict:
            old = self.get_task(task_id)
            self.fence(old, actor, claim_token)
            current = dependency_ids(old)
            if dependency_id in current:
                return old
            deps = self._checked_dependencies(old, old.get("projectId"),
                                              current + [dependency_id], current)
            task = with_changes(old, dependencies=deps, updatedAt=bump(old.get("updatedAt")))
            self._refuse_cycle(task, [dependency_id])
            tx.put("task", task)
            tx.emit("task:updated", task)
            return task

        return await self._mutate(apply)

    @forwardable
    async def remove_dependency(self, task_id: str, dependency_id: str, *,
                                actor: str | None = None, claim_token: int | None = None) \
            -> dict:
        """DELETE /api/tasks/:id/dependencies/:dependsOnId (idempotent)."""
        def apply(tx: Tx) -> dict:
            old = self.get_task(task_id)
            self.fence(old, actor, claim_token)
            if dependency_id not in as_list(old.get("dependencies")):
                return old
            task = with_changes(old, dependencies=[d for d in as_list(old["dependencies"])
                                                   if d != dependency_id],
                                updatedAt=bump(old.get("updatedAt")))
            tx.put("task", task)
            tx.emit("task:updated", task)
            return task

        return await self._mutate(apply)

    def _drop_dependency_on(self, tx: Tx, gone: str, skip: set[str]) -> None:
        """Remove `gone` from the dependencies of every task naming it (a task being deleted)."""
        for tid in list(self.ready_index.dependents.get(gone, ())):
            if tid in skip:
                continue
            task = self.state.tasks.get(tid)
            if task is None:
                continue
            tx.put("task", with_changes(task, dependencies=[d for d in as_list(
                task.get("dependencies")) if d != gone], updatedAt=bump(task.get("updatedAt"))))
            tx.emit("task:updated", self.state.tasks.get(tid))

    # ------------------------------------------------------------ fencing
    def fence(self, task: dict, actor: str | None, claim_token: int | None) -> None:
        """409 CLAIM_LOST for a write to a claimed task from another session's identity, or
        carrying a claim token that is not the live one (§15.3). The user writes freely."""
        if actor is None and claim_token is None:
            return
        claim = live_claim(task, self.claim_now())
        if claim_token is not None:
            if claim is None or claim.get("token") != claim_token \
                    or (actor is not None and claim.get("sessionId") != actor):
                raise self._claim_lost(task, claim)
        elif claim is not None and claim.get("sessionId") != actor:
            raise self._claim_lost(task, claim)

    @staticmethod
    def _claim_lost(task: dict, claim: dict | None) -> ApiError:
        details: dict[str, Any] = {"taskId": task["id"]}
        if claim is not None:
            details.update(sessionId=claim.get("sessionId"), token=claim.get("token"),
                           leaseExpiresAt=claim.get("leaseExpiresAt"))
        return conflict("CLAIM_LOST", "This session does not hold the live claim on the task "
                                      "(the lease expired or another session holds it)",
                        details)

    # ------------------------------------------------------------ claims
    def _ttl(self, body: dict) -> int:
        ttl = body.get("ttlSeconds")
        if ttl is None:
            return DEFAULT_TTL_SECONDS
        if isinstance(ttl, float) and ttl.is_integer():
            ttl = int(ttl)
        low = self.claim_min_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not low <= ttl <= MAX_TTL_SECONDS:
            raise validation(f"ttlSeconds must be an integer from {low} to {MAX_TTL_SECONDS}",
                             {"field": "ttlSeconds"})
        return ttl

    def _active_session(self, session_id: str, project_id: str | None) -> dict:
        session = self.state.sessions.get(session_id)
        if session is None:
            raise session_not_found(session_id)
        if session.get("status") in FINAL_SESSION_STATUSES:
            raise conflict("SESSION_NOT_ACTIVE",
                           f"Session {session_id} is {session.get('status')}",
                           {"sessionId": session_id, "status": session.get("status")})
        if project_id is not None and session.get("projectId") != project_id:
            raise validation(f"Session {session_id} belongs to another project",
                             {"sessionId": session_id, "projectId": session.get("projectId")})
        return session

    def _claimable(self, task: dict, session_id: str, now: int) -> dict | None:
        """None when `task` may be granted to `session_id` now; the live claim of that same
        session (a renewal); raises 409 otherwise."""
        claim = live_claim(task, now)
        if claim is not None:
            if claim.get("sessionId") == session_id:
                return claim
            raise conflict("TASK_ALREADY_CLAIMED",
                           f"Task is already claimed by session {claim.get('sessionId')}",
                           {"sessionId": claim.get("sessionId"),
                            "leaseExpiresAt": claim.get("leaseExpiresAt")})
        result = assess(task["id"], self.state.tasks.rows.get, now)
        status = task.get("status")
        # A lease that ran out leaves the task in progress until the sweep: free at once.
        expired = isinstance(task.get("claim"), dict) and status == "in_progress"
        if (status != "pending" and not expired) or result.held:
            raise conflict("TASK_NOT_READY", "Task is not ready to be claimed",
                           {"status": status, "blockedBy": result.blocked_by,
                            "missingDependencies": result.missing,
                            "blockedAncestors": result.blocked_ancestors})
        return None

    def _grant(self, tx: Tx, task_id: str, session_id: str, ttl: int, now: int) -> dict:
        """Give `task_id` a new claim for `session_id` (next fencing token), put it in progress
        and link the session (§8)."""
        task = self.state.tasks.get(task_id)
        previous = task.get("claimToken")
        token = (previous if isinstance(previous, int) and not isinstance(previous, bool)
                 else 0) + 1
        claim = {"sessionId": session_id, "token": token, "claimedAt": now,
                 "leaseExpiresAt": now + ttl * 1000}
        stamp = bump(task.get("updatedAt"))
        changes: dict[str, Any] = {"status": "in_progress", "claim": claim,
                                   "claimToken": token, "updatedAt": stamp}
        if task.get("startedAt") is None:
            changes["startedAt"] = stamp
        # The §8 link, written with the claim (one new version of the task, not two).
        session_ids = as_list(task.get("sessionIds"))
        linked = session_id not in session_ids
        if linked:
            changes["sessionIds"] = session_ids + [session_id]
            changes["timeline"] = as_list(task.get("timeline")) + [
                timeline_entry(stamp, "session_started", sessionId=session_id)]
        tx.put("task", with_changes(task, **changes))
        session = self.state.sessions.get(session_id)
        task_ids = as_list(session.get("taskIds"))
        if task_id not in task_ids:
            linked = True
            tx.put("session", with_changes(session, taskIds=task_ids + [task_id],
                                           lastActivity=bump(session.get("lastActivity"))))
        tx.emit("task:claimed", _claim_event(task_id, claim))
        final = self.state.tasks.get(task_id)
        tx.emit("task:updated", final)
        if linked:
            tx.emit("session:task_added", {"sessionId": session_id, "taskId": task_id})
            tx.emit("task:session_added", {"taskId": task_id, "sessionId": session_id})
            tx.emit("session:updated", self.state.sessions.get(session_id))
        return {"task": final, "claim": claim}

    def _renew(self, tx: Tx, task: dict, ttl: int, now: int) -> dict:
        claim = dict(task["claim"], leaseExpiresAt=now + ttl * 1000)
        renewed = with_changes(task, claim=claim, updatedAt=bump(task.get("updatedAt")))
        tx.put("task", renewed)
        tx.emit("task:updated", renewed)
        return claim

    @forwardable
    async def claim_task(self, task_id: str, body: dict) -> dict:
        """POST /api/tasks/:id/claim → {task, claim}."""
        session_id = _check_claim(body)["sessionId"]
        ttl = self._ttl(body)

        def check() -> dict | None:
            task = self.get_task(task_id)
            self._active_session(session_id, task.get("projectId"))
            return self._claimable(task, session_id, self.claim_now())

        def apply(tx: Tx) -> dict:
            now = self.claim_now()
            held = check()
            if held is not None:  # the same session again: the lease is renewed, same token
                claim = self._renew(tx, self.state.tasks.get(task_id), ttl, now)
                return {"task": self.state.tasks.get(task_id), "claim": claim}
            return self._grant(tx, task_id, session_id, ttl, now)

        if self.claim_race_delay_ms:
            if check() is None:
                await asyncio.sleep(self.claim_race_delay_ms / 1000)
                return await self._mutate(
                    lambda tx: self._grant(tx, task_id, session_id, ttl, self.claim_now()))
        return await self._mutate(apply)

    def _next_ready(self, project_id: str, parent_id: str | None) -> str | None:
        """The first ready task (§15.2 order) with no unfinished children."""
        now = self.claim_now()
        get = self.state.tasks.rows.get
        children = self.state.tasks.indexes["parentId"]
        for key in self.ready_index.ready_keys(project_id, parent_id):
            task = get(key[2])
            if task is None or live_claim(task, now) is not None:
                continue
            if has_unfinished_children(children.get(key[2]), get):
                continue
            return key[2]
        return None

    @forwardable
    async def claim_next(self, project_id: str, body: dict) -> dict:
        """POST /api/projects/:id/claim-next → {task, claim} or {task: null, claim: null}."""
        session_id = _check_next(body)["sessionId"]
        parent = body.get("parentId") or None
        ttl = self._ttl(body)

        def check() -> str | None:
            if self.state.projects.get(project_id) is None:
                raise project_not_found(project_id)
            self._active_session(session_id, project_id)
            return self._next_ready(project_id, parent)

        def apply(tx: Tx) -> dict:
            tid = check()
            if tid is None:
                return {"task": None, "claim": None}
            return self._grant(tx, tid, session_id, ttl, self.claim_now())

        if self.claim_race_delay_ms:
            tid = check()
            if tid is None:
                return {"task": None, "claim": None}
            await asyncio.sleep(self.claim_race_delay_ms / 1000)
            return await self._mutate(
                lambda tx: self._grant(tx, tid, session_id, ttl, self.claim_now()))
        return await self._mutate(apply)

    def _held_claim(self, task_id: str, session_id: str, token: int) -> dict:
        task = self.get_task(task_id)
        claim = live_claim(task, self.claim_now())
        if claim is None or claim.get("sessionId") != session_id or claim.get("token") != token:
            raise self._claim_lost(task, claim)
        return task

    @forwardable
    async def renew_claim(self, task_id: str, body: dict) -> dict:
        """POST /api/tasks/:id/claim/renew → {claim}."""
        session_id, token = _check_renew(body)["sessionId"], body["token"]
        ttl = self._ttl(body)

        def apply(tx: Tx) -> dict:
            task = self._held_claim(task_id, session_id, token)
            return {"claim": self._renew(tx, task, ttl, self.claim_now())}

        return await self._mutate(apply)

    @forwardable
    async def release_claim(self, task_id: str, body: dict) -> dict:
        """POST /api/tasks/:id/claim/release → {task}; the task goes back to pending."""
        session_id, token = _check_release(body)["sessionId"], body["token"]
        reason = body.get("reason")

        def apply(tx: Tx) -> dict:
            self._held_claim(task_id, session_id, token)
            message = f"Claim of session {session_id} released" + \
                (f": {reason}" if reason else "")
            return {"task": self._end_claim(tx, task_id, "task:claim_released", message)}

        return await self._mutate(apply)

    def _end_claim(self, tx: Tx, task_id: str, event: str, message: str | None,
                   extra: dict | None = None, drop: tuple = ()) -> dict:
        """Clear the task's claim (back to pending unless completed), with a timeline entry,
        `event` and `task:updated`; `extra` are further changes, `drop` keys to remove."""
        task = _without(self.state.tasks.get(task_id), drop)
        claim = task.get("claim")
        now = bump(task.get("updatedAt"))
        changes: dict[str, Any] = {"claim": None, "updatedAt": now}
        if task.get("status") != "completed":
            changes["status"] = "pending"
        changes.update(extra or {})
        if message:
            session_id = claim.get("sessionId") if isinstance(claim, dict) else None
            changes["timeline"] = as_list(task.get("timeline")) + [_entry(now, message,
                                                                          session_id)]
        final = tx.put("task", with_changes(task, **changes))
        if isinstance(claim, dict):
            tx.emit(event, _claim_event(task_id, claim))
        tx.emit("task:updated", final)
        return final

    @forwardable
    async def heartbeat_session(self, session_id: str, body: dict | None = None) -> dict:
        """POST /api/sessions/:id/heartbeat: renews every live claim of the session and its
        `lastActivity` → {sessionId, claims}."""
        ttl = self._ttl(body or {})

        def apply(tx: Tx) -> dict:
            session = self._active_session(session_id, None)
            now = self.claim_now()
            claims = []
            for tid in list(self.ready_index.claims_by_session.get(session_id, ())):
                task = self.state.tasks.get(tid)
                if task is None or live_claim(task, now) is None:
                    continue
                claims.append(dict(self._renew(tx, task, ttl, now), taskId=tid))
            updated = tx.put("session", with_changes(
                session, lastActivity=bump(session.get("lastActivity"))))
            tx.emit("session:updated", updated)
            return {"sessionId": session_id, "claims": claims}

        return await self._mutate(apply)

    # ------------------------------------------------------------ expiry
    async def sweep_expired_claims(self) -> int:
        """Return every task whose lease ran out to pending (event task:claim_expired)."""
        def apply(tx: Tx) -> int:
            now = self.claim_now()
            count = 0
            for tid in self.ready_index.due(now):
                task = self.state.tasks.get(tid)
                claim = task.get("claim") if task is not None else None
                if not isinstance(claim, dict) or live_claim(task, now) is not None:
                    continue
                self._end_claim(tx, tid, "task:claim_expired",
                                f"Claim of session {claim.get('sessionId')} expired")
                count += 1
            return count

        due = self._ready_working.next_expiry()  # the heap lives on the working index
        if due is None or due > self.claim_now():
            return 0
        return await self._mutate(apply)

    def start_sweeper(self) -> None:
        async def run() -> None:
            while True:
                await asyncio.sleep(self.claim_sweep_seconds)
                try:
                    await self.sweep_expired_claims()
                except Exception:  # a failed sweep is retried at the next tick
                    log.exception("claim expiry sweep failed")

        self._sweeper = asyncio.create_task(run(), name="maestro-claim-sweeper")

    async def stop_sweeper(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None

    # ------------------------------------------------------------ side effects of writes
    def _handoff(self, tx: Tx, task_id: str) -> None:
        """§15.4: every dependent of a task that just completed hears of it."""
        upstream = self.state.tasks.get(task_id)
        report = last_completion_report(upstream, self.state.sessions.get)
        message = handoff_message(upstream, report)
        for tid in list(self.ready_index.dependents.get(task_id, ())):
            task = self.state.tasks.get(tid)
            if task is None:
                continue
            now = bump(task.get("updatedAt"))
            final = tx.put("task", with_changes(task, timeline=as_list(task.get("timeline"))
                                                + [_entry(now, message)], updatedAt=now))
            tx.emit("task:updated", final)

    def _session_ended(self, tx: Tx, session_id: str, outcome: str) -> None:
        """§15.3 and §15.5: a session that ended (`completed`, `failed`, `stopped`, `deleted`)
        gives up its claims and no task shows it at work any more."""
        index = self.ready_index
        touched = dict.fromkeys(list(index.claims_by_session.get(session_id, ()))
                                + list(index.status_by_session.get(session_id, ())))
        verb = {"completed": "completed", "failed": "failed", "stopped": "was stopped",
                "deleted": "was deleted"}.get(outcome, outcome)
        for tid in touched:
            task = self.state.tasks.get(tid)
            if task is None:
                continue
            extra: dict[str, Any] = {}
            drop: tuple = ()
            notes = []
            at_work = task.get("sessionStatusBy") == session_id \
                and task.get("sessionStatus") in AGENT_AT_WORK
            if at_work:
                if outcome == "completed":
                    drop = ("sessionStatus", "sessionStatusBy")
                    notes.append(f"its status here ({task.get('sessionStatus')}) was cleared: "
                                 "it ended without a report")
                else:
                    extra["sessionStatus"] = "failed"
                    notes.append("its status here was set to failed")
            claim = task.get("claim")
            holds = isinstance(claim, dict) and claim.get("sessionId") == session_id
            if holds:
                notes.append("its claim was released")
            if not notes:
                continue
            message = f"Session {session_id} {verb}: " + "; ".join(notes)
            if holds:
                self._end_claim(tx, tid, "task:claim_released", message, extra, drop)
            else:
                now = bump(task.get("updatedAt"))
                final = tx.put("task", with_changes(
                    _without(task, drop), **extra, updatedAt=now,
                    timeline=as_list(task.get("timeline")) + [_entry(now, message,
                                                                     session_id)]))
                tx.emit("task:updated", final)
