"""The agent manifest (SPEC §9.6): building it from a project and its tasks, checking it with the
strict key set the agent side enforces, and writing it to disk.

`build_manifest` is pure (no I/O) so that the server's spawn endpoint and the CLI's
`maestro manifest generate` produce the same document from the same data."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import jsonio
from ..vocabulary import AGENT_MODELS as MODELS
from ..vocabulary import AGENT_ROLES as ROLES
from ..vocabulary import MANIFEST_PRIORITIES, PERMISSION_MODES, THINKING_MODES
from ..vocabulary import SPAWN_STRATEGIES as MANIFEST_STRATEGIES

MANIFEST_VERSION = "1.0"
DEFAULT_ACCEPTANCE = "Task completion as described"

TOP_KEYS = ("manifestVersion", "role", "tasks", "session", "context", "skills", "strategy",
            "templateId")
TASK_KEYS = ("id", "title", "description", "acceptanceCriteria", "projectId", "createdAt",
             "parentId", "dependencies", "priority", "metadata", "status", "sessionIds",
             "activeSessionId")
SESSION_KEYS = ("model", "permissionMode", "thinkingMode", "workingDirectory", "maxTurns",
                "timeout", "allowedCommands")
CONTEXT_KEYS = ("codebaseContext", "relatedTasks", "projectStandards", "custom")


class ManifestError(ValueError):
    """A manifest that an agent must refuse; the message names the offending key."""


def iso_from_ms(value: Any) -> str:
    """Milliseconds since the epoch as `2024-02-01T12:00:00.000Z` (a string is kept as is)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        value = 0
    stamp = datetime.fromtimestamp(value / 1000, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _task_entry(task: dict) -> dict:
    criteria = task.get("acceptanceCriteria")
    if isinstance(criteria, list):
        criteria = [c for c in criteria if isinstance(c, str) and c.strip()]
    if not criteria:
        criteria = [DEFAULT_ACCEPTANCE]
    description = task.get("description")
    entry: dict[str, Any] = {
        "id": task["id"],
        "title": task.get("title") if isinstance(task.get("title"), str) else "",
        "description": description if isinstance(description, str) else "",
        "acceptanceCriteria": criteria,
        "projectId": task.get("projectId"),
        "createdAt": iso_from_ms(task.get("createdAt")),
    }
    if "parentId" in task and (task["parentId"] is None or isinstance(task["parentId"], str)):
        entry["parentId"] = task["parentId"]
    dependencies = task.get("dependencies")
    entry["dependencies"] = [d for d in dependencies if isinstance(d, str)] \
        if isinstance(dependencies, list) else []
    if task.get("priority") in MANIFEST_PRIORITIES:
        entry["priority"] = task["priority"]
    if isinstance(task.get("metadata"), dict):
        entry["metadata"] = task["metadata"]
    return entry


def build_manifest(*, role: str, project: dict, tasks: list[dict], skills: list[str],
                   model: str = "sonnet", permission_mode: str = "acceptEdits",
                   strategy: str | None = None, template_id: str | None = None,
                   dependencies: list[dict] | None = None) -> dict:
    """The manifest of §9.6 for `tasks` (in the given order) of `project`.

    `strategy` is written only when given (extension E5); `template_id` only when given (E6).
    `dependencies` (from `domain.handoff.dependency_briefs`: id, title, status, lastReport and
    the task that depends on it) go to `context.relatedTasks` when there are any (§15.4).
    Raises ManifestError for a role, model, permission mode or strategy the schema refuses, or
    for an empty task list."""
    if role not in ROLES:
        raise ManifestError(f'role must be "worker" or "orchestrator" (got {role!r})')
    if model not in MODELS:
        raise ManifestError(f"model must be one of: {', '.join(MODELS)}")
    if permission_mode not in PERMISSION_MODES:
        raise ManifestError(f"permissionMode must be one of: {', '.join(PERMISSION_MODES)}")
    if strategy is not None and strategy not in MANIFEST_STRATEGIES:
        raise ManifestError(f"strategy must be one of: {', '.join(MANIFEST_STRATEGIES)}")
    if not tasks:
        raise ManifestError("a manifest needs at least one task")
    session: dict[str, Any] = {"model": model, "permissionMode": permission_mode,
                               "thinkingMode": "auto"}
    working_dir = project.get("workingDir")
    if isinstance(working_dir, str) and working_dir:
        session["workingDirectory"] = working_dir
    manifest: dict[str, Any] = {
        "manifestVersion": MANIFEST_VERSION,
        "role": role,
        "tasks": [_task_entry(t) for t in tasks],
        "session": session,
        "context": {"custom": {"taskIds": [t["id"] for t in tasks]}},
        "skills": [s for s in skills if s],
    }
    if dependencies:
        manifest["context"]["relatedTasks"] = [dict(d, relation="dependency")
                                               for d in dependencies]
    if strategy is not None:
        manifest["strategy"] = strategy
    if template_id is not None:
        manifest["templateId"] = template_id
    return manifest


def dependency_text(manifest: dict) -> str:
    """What an agent's prompt says about the work its tasks depend on (§15.4): title, status
    and last completion report of each dependency, or "" when there is none."""
    context = manifest.get("context") if isinstance(manifest.get("context"), dict) else {}
    related = context.get("relatedTasks")
    briefs = [r for r in related if isinstance(r, dict) and r.get("relation") == "dependency"] \
        if isinstance(related, list) else []
    if not briefs:
        return ""
    lines = ["Work this depends on:"]
    for b in briefs:
        line = f'- {b.get("id")} "{b.get("title") or ""}" ({b.get("status")})'
        if b.get("lastReport"):
            line += f" - last report: {b['lastReport']}"
        lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------- strict check
def _unknown(obj: dict, allowed: tuple[str, ...], where: str) -> None:
    extra = [k for k in obj if k not in allowed]
    if extra:
        raise ManifestError(f"unknown key(s) in {where}: {', '.join(sorted(extra))}")


def _need(obj: dict, key: str, where: str) -> Any:
    if key not in obj:
        raise ManifestError(f"{where}.{key} is required")
    return obj[key]


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_task(task: Any, index: int) -> None:
    where = f"tasks[{index}]"
    if not isinstance(task, dict):
        raise ManifestError(f"{where} must be an object")
    _unknown(task, TASK_KEYS, where)
    for key in ("id", "title", "projectId", "createdAt"):
        value = _need(task, key, where)
        if not isinstance(value, str) or (key != "title" and not value):
            raise ManifestError(f"{where}.{key} must be a non-empty string")
    if not isinstance(_need(task, "description", where), str):
        raise ManifestError(f"{where}.description must be a string")
    criteria = _need(task, "acceptanceCriteria", where)
    if not _is_str_list(criteria) or not criteria:
        raise ManifestError(f"{where}.acceptanceCriteria must be a non-empty list of strings")
    if "parentId" in task and task["parentId"] is not None \
            and not isinstance(task["parentId"], str):
        raise ManifestError(f"{where}.parentId must be a string or null")
    for key in ("dependencies", "sessionIds"):
        if key in task and not _is_str_list(task[key]):
            raise ManifestError(f"{where}.{key} must be a list of strings")
    if "priority" in task and task["priority"] not in MANIFEST_PRIORITIES:
        raise ManifestError(f"{where}.priority must be one of: {', '.join(MANIFEST_PRIORITIES)}")
    if "metadata" in task and not isinstance(task["metadata"], dict):
        raise ManifestError(f"{where}.metadata must be an object")
    for key in ("status", "activeSessionId"):
        if key in task and not isinstance(task[key], str):
            raise ManifestError(f"{where}.{key} must be a string")


def _check_session(session: Any) -> None:
    if not isinstance(session, dict):
        raise ManifestError("session must be an object")
    _unknown(session, SESSION_KEYS, "session")
    if not isinstance(_need(session, "model", "session"), str) or not session["model"]:
        raise ManifestError("session.model must be a non-empty string")
    if _need(session, "permissionMode", "session") not in PERMISSION_MODES:
        raise ManifestError(f"session.permissionMode must be one of: "
                            f"{', '.join(PERMISSION_MODES)}")
    if "thinkingMode" in session and session["thinkingMode"] not in THINKING_MODES:
        raise ManifestError(f"session.thinkingMode must be one of: {', '.join(THINKING_MODES)}")
    if "workingDirectory" in session and not isinstance(session["workingDirectory"], str):
        raise ManifestError("session.workingDirectory must be a string")
    for key in ("maxTurns", "timeout"):
        if key in session and (not _is_number(session[key]) or session[key] <= 0):
            raise ManifestError(f"session.{key} must be a positive number")
    if "allowedCommands" in session and not _is_str_list(session["allowedCommands"]):
        raise ManifestError("session.allowedCommands must be a list of strings")


def validate_manifest(doc: Any, expected_role: str | None = None) -> dict:
    """Check `doc` against the manifest schema with its strict key set; returns it unchanged.

    `expected_role` (the command reading it: `worker` or `orchestrator`) must match `role`."""
    if not isinstance(doc, dict):
        raise ManifestError("a manifest must be a JSON object")
    _unknown(doc, TOP_KEYS, "the manifest")
    if not isinstance(_need(doc, "manifestVersion", "manifest"), str):
        raise ManifestError("manifestVersion must be a string")
    role = _need(doc, "role", "manifest")
    if role not in ROLES:
        raise ManifestError('role must be "worker" or "orchestrator"')
    if expected_role is not None and role != expected_role:
        raise ManifestError(f"this manifest is for the {role} role, not {expected_role}")
    tasks = _need(doc, "tasks", "manifest")
    if not isinstance(tasks, list) or not tasks:
        raise ManifestError("tasks must be a non-empty list")
    for index, task in enumerate(tasks):
        _check_task(task, index)
    _check_session(_need(doc, "session", "manifest"))
    if "context" in doc:
        if not isinstance(doc["context"], dict):
            raise ManifestError("context must be an object")
        _unknown(doc["context"], CONTEXT_KEYS, "context")
    if "skills" in doc and not _is_str_list(doc["skills"]):
        raise ManifestError("skills must be a list of strings")
    if "strategy" in doc and doc["strategy"] not in MANIFEST_STRATEGIES:
        raise ManifestError(f"strategy must be one of: {', '.join(MANIFEST_STRATEGIES)}")
    if "templateId" in doc and not isinstance(doc["templateId"], str):
        raise ManifestError("templateId must be a string")
    return doc


# ---------------------------------------------------------------------------- files
def write_manifest(path: Path, manifest: dict) -> Path:
    """Write `manifest` as 2-space JSON atomically (temp file, fsync, rename); returns the
    absolute path. Missing folders are created (owner-only: the folder also holds output)."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    data = jsonio.dumps_pretty(manifest)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def read_manifest(path: Path, expected_role: str | None = None) -> dict:
    """Load and strictly validate the manifest at `path` (ManifestError on any problem)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    try:
        doc = jsonio.loads(raw)
    except ValueError as exc:
        raise ManifestError(f"manifest {path} is not valid JSON: {exc}") from None
    return validate_manifest(doc, expected_role)
