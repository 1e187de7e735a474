"""What an agent may do with its session token (the security issue's "agent identities").

Every API operation declares the action it performs on which entity (`Act`, on its `Op`); this
module holds one rule per (entity, action), and nothing else decides an agent's rights. A route
whose action has no rule is refused when it is added to the router, so no operation is left to a
silent default: an agent is denied what a rule does not allow.

An agent reads everything of its own project (of the sessions' diffs and output logs only its
own); it changes only its own session, the tasks linked to that session and their descendants
(fields, timeline, dependencies), creates child tasks under those, claims work of its own project
for its own session (a claim links the task), and, as an orchestrator, spawns sub-sessions for
them and stops the sessions it spawned. It never merges or removes a worktree. Everything else
is 403. The user (MAESTRO_TOKEN, or no token on a loopback-only server) is never checked here.

What an agent sees is decided here too (`seen_by`): only its own project, and sessions with
secret-looking env values replaced, the same way in REST answers and WebSocket events."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ApiError
from .identity import AgentIdentity
from .plan import plan_refs

SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
REDACTED = "[redacted]"
NOT_FOR_AGENTS = "Not available to agent sessions"
OWN_PROJECT = "This session may only read its own project"

ENTITIES = ("project", "task", "session", "skill", "server", "workspace")


def forbidden(message: str, details: Any = None) -> ApiError:
    return ApiError(403, "FORBIDDEN", message, details)


# ------------------------------------------------------------------ what agents see
def has_secrets(session: dict) -> bool:
    env = session.get("env")
    return isinstance(env, dict) and any(SECRET_NAME.search(k) for k in env)


def redact_env(env: dict) -> dict:
    return {k: (REDACTED if SECRET_NAME.search(k) else v) for k, v in env.items()}


def redact_session(session: dict) -> dict:
    """The session as an agent may see it: secret-looking env values replaced."""
    if not has_secrets(session):
        return session
    out = dict(session)
    out["env"] = redact_env(session["env"])
    return out


def redact_payload(data: Any) -> Any:
    """Redact sessions inside a payload: a session, or a spawn request or answer (a `session`
    and the agent's `envVars`); anything else is returned as it is."""
    if not isinstance(data, dict):
        return data
    if "env" in data and "taskIds" in data and isinstance(data.get("env"), dict):
        return redact_session(data)
    if isinstance(data.get("session"), dict) or isinstance(data.get("envVars"), dict):
        out = dict(data)
        if isinstance(out.get("session"), dict):
            out["session"] = redact_session(out["session"])
        if isinstance(out.get("envVars"), dict):
            out["envVars"] = redact_env(out["envVars"])
        return out
    return data


def seen_by(identity: AgentIdentity | None, data: Any, project_id: str | None) -> Any:
    """`data` (an entity, an answer holding a session, or an event's payload) of project
    `project_id` as `identity` may see it: all of it for a person (identity None); for an agent
    None outside its own project, else with secret-looking env values replaced. The REST
    answers and the WebSocket hub both show what this returns. The redaction does not depend
    on which agent asks, so one redacted copy serves every agent."""
    if identity is None:
        return data
    if project_id is None or project_id != identity.project_id:
        return None
    return redact_payload(data)


# ------------------------------------------------------------------ declarations and rules
@dataclass(frozen=True)
class Act:
    """What an operation does: `action` on an entity of kind `entity`, named by the path
    parameter `id` (None: the operation names no existing entity, e.g. a list or a create)."""

    entity: str
    action: str
    id: str | None = "id"

    @property
    def name(self) -> str:
        return f"{self.entity}.{self.action}"


# check(policy, agent, target id, body, request) raises 403 when the agent may not.
Check = Callable[["Policy", AgentIdentity, Any, dict, Any], None]


@dataclass(frozen=True)
class Rule:
    """Who may perform one action: people always; agents when `check` passes.
    `scoped`: a list, answered for the agent's own project only. `text` says it for people
    (from the check's docstring; /openapi.json shows it)."""

    check: Check
    text: str
    scoped: bool = False


@dataclass(frozen=True, slots=True)
class Bound:
    """A rule bound to one route's declaration, when the route is added: what the guard runs
    on every request of an agent, without looking anything up."""

    act: Act
    check: Check
    scoped: bool


RULES: dict[tuple[str, str], Rule] = {}


def _rule(entity: str, *actions: str, scoped: bool = False):
    """Make the decorated check the rule of each of `actions` on `entity`."""
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}")

    def add(fn: Check) -> Check:
        text = " ".join((fn.__doc__ or "").split())
        for action in actions:
            key = (entity, action)
            if key in RULES:
                raise ValueError(f"two rules for {entity}.{action}")
            RULES[key] = Rule(fn, text, scoped)
        return fn
    return add


def rule_for(act: Act) -> Rule:
    """The rule of `act`; a ValueError when there is none (the route is refused)."""
    if not isinstance(act, Act):
        raise ValueError("the operation declares no action (Op.acts)")
    found = RULES.get((act.entity, act.action))
    if found is None:
        raise ValueError(f"no rule for the action {act.name}")
    return found


def bind(act: Act) -> Bound:
    found = rule_for(act)
    return Bound(act, found.check, found.scoped)


# -- for anyone
@_rule("server", "read")
@_rule("skill", "list", "read")
def anyone(p, who, target, body, r):
    """Agents too."""


@_rule("project", "list", scoped=True)
def own_project_listed(p, who, target, body, r):
    """Agents too: their own project only."""


# -- people only
@_rule("project", "create", "update", "delete")
@_rule("task", "delete")
@_rule("session", "create", "delete")
@_rule("skill", "reload")
@_rule("workspace", "list")
def people_only(p, who, target, body, r):
    """Not agents."""
    raise forbidden(NOT_FOR_AGENTS)


@_rule("session", "merge", "cleanup")
def worktrees_by_people(p, who, target, body, r):
    """Not agents: only a person merges or removes a session's worktree."""
    raise forbidden("Only a person merges or removes a session's worktree")


# -- reading
@_rule("project", "read")
def read_project(p, who, target, body, r):
    """Agents: their own project."""
    if target != who.project_id and p.state.projects.get(target) is not None:
        raise forbidden(OWN_PROJECT)


@_rule("task", "list", scoped=True)
@_rule("session", "list", scoped=True)
def list_own_project(p, who, target, body, r):
    """Agents: their own project's (the list is restricted to it; asking for another
    project's is refused)."""
    asked = r.query("projectId")
    if asked is not None and asked != who.project_id:
        raise forbidden(OWN_PROJECT)


@_rule("task", "read")
def read_task(p, who, target, body, r):
    """Agents: a task of their own project."""
    p.require_project_entity(who, p.state.tasks.get(target))


@_rule("session", "read")
def read_session(p, who, target, body, r):
    """Agents: a session of their own project (secret-looking env values redacted)."""
    p.require_project_entity(who, p.state.sessions.get(target))


@_rule("session", "diff")
def read_own_diff(p, who, target, body, r):
    """Agents: their own session's only."""
    if target != who.session_id:
        raise forbidden("This session may only read its own diff", {"sessionId": target})
    p.require_project_entity(who, p.state.sessions.get(target))


@_rule("session", "read_log")
def read_own_log(p, who, target, body, r):
    """Agents: their own session's only (an agent's output may hold what it read)."""
    if p.state.sessions.get(target) is not None and target != who.session_id:
        raise forbidden("This session may only read its own output log", {"sessionId": target})


# -- tasks
@_rule("task", "create")
def create_child_task(p, who, target, body, r):
    """Agents: in their own project, as a child of a task linked to their session or below
    one that is."""
    if body.get("projectId") != who.project_id:
        raise forbidden("This session may only create tasks in its own project")
    parent = body.get("parentId")
    if not isinstance(parent, str) or parent not in p.task_scope(who):
        raise forbidden("This session may only create child tasks under its own tasks")


@_rule("task", "update")
def update_own_task(p, who, target, body, r):
    """Agents: a task linked to their session or below one that is; a new parent must be
    such a task too, and the only session it may link or unlink is their own."""
    p.require_task(who, target)
    parent = body.get("parentId")
    if isinstance(parent, str):
        p.require_task(who, parent)
    wanted = body.get("sessionIds")
    if isinstance(wanted, list):
        # Linking or unlinking a session changes that session: only its own.
        task = p.state.tasks.get(target) or {}
        current = task.get("sessionIds") if isinstance(task.get("sessionIds"), list) else []
        changed = set(map(str, wanted)) ^ set(map(str, current))
        if changed - {who.session_id}:
            raise forbidden("This session may only link or unlink itself",
                            {"sessionIds": sorted(changed - {who.session_id})})


@_rule("task", "append", "add_dependency", "remove_dependency")
def change_own_task(p, who, target, body, r):
    """Agents: a task linked to their session or below one that is."""
    p.require_task(who, target)


@_rule("task", "claim", "renew", "release")
def claim_in_own_project(p, who, target, body, r):
    """Agents: a task of their own project, for their own session (claiming is how an agent
    comes to own a task)."""
    if body.get("sessionId") is not None:  # absent: the route answers 400
        p.require_own_session(who, body.get("sessionId"))
    p.require_project_entity(who, p.state.tasks.get(target))


@_rule("project", "claim")
def claim_next_in_own_project(p, who, target, body, r):
    """Agents: in their own project, for their own session."""
    if target != who.project_id:
        raise forbidden("This session may only claim work of its own project")
    if body.get("sessionId") is not None:
        p.require_own_session(who, body.get("sessionId"))


@_rule("project", "plan")
def plan_own_work(p, who, target, body, r):
    """Agents: in their own project; new dependencies only on tasks linked to their session
    (or below one that is); each new task under another new task, under such a task, or
    beside (same parent) such a task that the plan makes wait for it."""
    p.check_plan(who, target, body)


# -- sessions
@_rule("session", "update")
def update_own_session(p, who, target, body, r):
    """Agents: their own session; the tasks it links must be linked to it already or below
    one that is."""
    p.require_own_session(who, target)
    wanted = body.get("taskIds")
    if isinstance(wanted, list):
        scope = p.task_scope(who)
        outside = [t for t in wanted if t not in scope]
        if outside:
            raise forbidden("This session may only link its own tasks", {"taskId": outside[0]})


@_rule("session", "append", "heartbeat")
def own_session(p, who, target, body, r):
    """Agents: their own session only."""
    p.require_own_session(who, target)


@_rule("session", "link", "unlink")
def link_own_task(p, who, target, body, r):
    """Agents: their own session, and a task linked to it or below one that is."""
    p.require_own_session(who, target)
    p.require_task(who, r.params.get("taskId", ""))


@_rule("session", "spawn")
def orchestrator_spawns(p, who, target, body, r):
    """Orchestrator agents: in their own project, for tasks linked to their session or below
    one that is, naming only a session of their own project as the parent."""
    if not who.orchestrator:
        raise forbidden("Only orchestrator sessions may spawn sessions")
    if body.get("projectId") != who.project_id:
        raise forbidden("This session may only spawn in its own project")
    p.require_parent_in_project(who, body)
    task_ids = body.get("taskIds")
    if isinstance(task_ids, list):
        scope = p.task_scope(who)
        for tid in task_ids:
            if isinstance(tid, str) and p.state.tasks.get(tid) is not None \
                    and tid not in scope:
                raise forbidden("This session may only spawn for its own tasks",
                                {"taskId": tid})


@_rule("session", "stop")
def stop_own_or_spawned(p, who, target, body, r):
    """Agents: their own session; orchestrator agents also the sessions they spawned."""
    session = p.state.sessions.get(target)
    if session is None or target == who.session_id:
        return
    meta = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
    if who.orchestrator and meta.get("spawnedBy") == who.session_id:
        return
    raise forbidden("This session may only stop itself or the sessions it spawned")


# ------------------------------------------------------------------ the policy
class Policy:
    """The rules applied to the live state."""

    def __init__(self, state):
        self.state = state

    async def guard(self, request, bound: Bound) -> None:
        """The router's guard of an agent's request (router.py): the rule bound to the route
        decides, on the entity its declaration names and the body as sent; a list is then
        restricted to the agent's project (`request.restrict_project`)."""
        method = request.method
        body = await request.raw_json() if method != "GET" and method != "HEAD" else None
        act_id = bound.act.id
        request.restrict_project = self.authorize(
            request.identity, bound, request.params.get(act_id) if act_id else None, body,
            request)

    def authorize(self, identity: AgentIdentity, bound: Bound, target: str | None,
                  body: dict | None, request) -> str | None:
        """Raise 403 unless `identity` may perform the route's action; returns the project
        a list must be restricted to (None: not a list)."""
        bound.check(self, identity, target, body or {}, request)
        return identity.project_id if bound.scoped else None

    # ------------------------------------------------------------ scope
    def task_scope(self, identity: AgentIdentity) -> set[str]:
        """Tasks the agent may change: those linked to its session and all their descendants."""
        session = self.state.sessions.get(identity.session_id) or {}
        roots = session.get("taskIds") if isinstance(session.get("taskIds"), list) else []
        children = self.state.tasks.indexes["parentId"]
        scope: set[str] = set()
        stack = [t for t in roots if isinstance(t, str)]
        while stack:
            tid = stack.pop()
            if tid in scope:
                continue
            scope.add(tid)
            stack.extend(children.get(tid))
        return scope

    def require_task(self, identity: AgentIdentity, task_id: str) -> None:
        if self.state.tasks.get(task_id) is None:
            return  # the route answers 404
        if task_id not in self.task_scope(identity):
            raise forbidden("This session may only change its own tasks and their children",
                            {"taskId": task_id})

    def require_project_entity(self, identity: AgentIdentity, entity: dict | None) -> None:
        if entity is not None and entity.get("projectId") != identity.project_id:
            raise forbidden(OWN_PROJECT)

    def require_own_session(self, identity: AgentIdentity, session_id: Any) -> None:
        if session_id != identity.session_id:
            raise forbidden("This session may only change itself", {"sessionId": session_id})

    def require_parent_in_project(self, identity: AgentIdentity, body: dict) -> None:
        """A parent named in a spawn (`sessionId`, `spawnedBy`) must be a session of the agent's
        own project. A session elsewhere and no session at all get the same answer, so the
        refusal tells nothing about other projects."""
        for key in ("sessionId", "spawnedBy"):
            named = body.get(key)
            if not isinstance(named, str) or not named:
                continue  # absent, or malformed: the route answers 400
            parent = self.state.sessions.get(named)
            if parent is None or parent.get("projectId") != identity.project_id:
                raise forbidden("This session may only name a session of its own project as "
                                "the parent", {"field": key})

    def check_plan(self, identity: AgentIdentity, project_id: str, body: dict) -> None:
        """A plan of an agent: in its own project; new dependencies only on its own tasks; each
        new task under another new task, under one of its own tasks, or beside (same parent) a
        task of its own that the plan makes wait for it (follow-up work it found)."""
        if project_id != identity.project_id:
            raise forbidden("This session may only plan work in its own project")
        tasks, refs, edges = plan_refs(body)
        scope = self.task_scope(identity)
        waiting: dict[str, set] = {}  # new task ref -> parents of own tasks that wait for it
        for task_name, dep_name in edges:
            if not isinstance(task_name, str) or task_name in refs:
                continue
            existing = self.state.tasks.get(task_name)
            if existing is None:
                continue  # the route answers 404
            if task_name not in scope:
                raise forbidden("This session may only add dependencies to its own tasks",
                                {"taskId": task_name})
            if isinstance(dep_name, str) and dep_name in refs:
                waiting.setdefault(dep_name, set()).add(existing.get("parentId") or None)
        for task in tasks:
            parent = task.get("parent") or None
            if isinstance(parent, str) and (parent in refs or parent in scope):
                continue
            if parent is not None and not isinstance(parent, str):
                continue  # the route answers 400
            if parent in waiting.get(task.get("ref"), ()):
                continue
            raise forbidden("This session may only plan tasks under its own tasks, or beside "
                            "a task of its own that waits for them", {"ref": task.get("ref")})
