"""`POST /api/sessions/spawn` (SPEC §9): validate in the documented order, write the manifest,
then create the session in status `spawning` with its links and events, all through the Service.

Nothing is stored when anything fails: the manifest is written first and removed again if the
session cannot be created (§9.4, decision D8)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .. import jsonio
from ..config import Settings
from ..errors import ApiError, StorageError
from ..events import Event
from ..ids import make_id
from ..service import Service
from ..session_names import session_name
from ..shapes import compile_shape
from ..workspace.options import spawn_options
from .manifest import ManifestError, build_manifest, validate_manifest, write_manifest
from .request import OPTIONS, WHO, SpawnRequest

log = logging.getLogger("maestro.spawn")

DEFAULT_SKILLS = ("maestro-worker",)
DEFAULT_MODEL = "sonnet"
DEFAULT_PERMISSION_MODE = "acceptEdits"
CLI_TIMEOUT_SECONDS = 60.0
# How long a spawn request waits to say what the local launcher did with the agent (starting
# one takes well under a second; a slow tmux only delays the answer's wording).
LAUNCH_WAIT_SECONDS = 10.0
UI_MESSAGE = "Spawn request sent to Agents UI"
_check_who = compile_shape(SpawnRequest, only=WHO)
_check_role = compile_shape(SpawnRequest, only=("role",))
_check_options = compile_shape(SpawnRequest, only=OPTIONS)


def launch_message(launch: dict) -> str:
    """The spawn answer's `message`: what happened to the agent, in one sentence."""
    state = launch.get("state")
    if launch.get("launcher") == "ui" or state == "requested":
        return UI_MESSAGE
    if state == "started":
        where = "in tmux" if launch.get("mode") == "tmux" else "on a pseudo-terminal"
        return f"Agent started by the local launcher (pid {launch.get('pid')}, {where})"
    if state == "queued":
        return (f"Agent queued by the local launcher: {launch.get('running')} agent(s) "
                f"already running (MAESTRO_MAX_AGENTS={launch.get('maxAgents')}); it starts "
                "when one ends")
    if state in ("failed", "skipped"):
        return f"The local launcher did not start the agent: {launch.get('message')}"
    return "The local launcher is starting the agent"


def spawn_error(status: int, code: str, message: str, details: Any = None) -> ApiError:
    return ApiError(status, code, message, details)


def default_command(role: str) -> str:
    """The command an agent terminal runs for `role` (what a UI is told to run, §9.7)."""
    return f"maestro {role} init"


def parse_spawn_body(service: Service, body: dict) -> dict:
    """Checks 1-7 of §9.3 in order, the shapes from `SpawnRequest`; returns the normalised
    request."""
    _check_who(body)
    spawn_source = body.get("spawnSource", "ui")
    parent = body.get("sessionId") or None
    if spawn_source == "session" and parent is None:
        raise spawn_error(400, "missing_session_id",
                          'sessionId is required when spawnSource is "session"')
    if parent is not None and service.get_session_or_none(parent) is None:
        raise spawn_error(404, "parent_session_not_found", f"Parent session {parent} not found",
                          {"sessionId": parent})
    _check_role(body)
    return {
        "projectId": body["projectId"],
        "taskIds": list(dict.fromkeys(body["taskIds"])),
        "spawnSource": spawn_source,
        "parentSessionId": parent,
        "role": body.get("role", "worker"),
        **_parse_options(body),
    }


def _parse_options(body: dict) -> dict:
    """Check 7 of §9.3 (types and values of the optional fields, as `SpawnRequest` declares
    them)."""
    _check_options(body)
    agent = body.get("agent")
    env = body.get("env")
    return {
        "env": dict(env) if env is not None else {},
        "skills": [s for s in body.get("skills", DEFAULT_SKILLS) if s],
        "model": body.get("model", DEFAULT_MODEL),
        "permissionMode": body.get("permissionMode", DEFAULT_PERMISSION_MODE),
        "context": body.get("context", {}),
        "sessionName": body.get("sessionName"),
        "spawnedBy": body.get("spawnedBy"),
        "spawnReason": body.get("spawnReason"),
        "strategy": body.get("strategy"),
        "agent": agent.strip() if agent else None,
    }


def _check_references(service: Service, req: dict) -> tuple[dict, list[dict]]:
    """Checks 8-9 of §9.3: every task (first missing reported), then the project."""
    tasks = []
    for tid in req["taskIds"]:
        task = service.get_task_or_none(tid)
        if task is None:
            raise spawn_error(404, "task_not_found", f"Task {tid} not found", {"taskId": tid})
        tasks.append(task)
    project = service.get_project_or_none(req["projectId"])
    if project is None:
        raise spawn_error(404, "project_not_found", f"Project {req['projectId']} not found",
                          {"projectId": req["projectId"]})
    return project, tasks


class Spawner:
    """Runs spawn requests against the Service; `on_spawned` (the launcher) hears of each new
    session once it is stored and its events are out."""

    def __init__(self, service: Service, settings: Settings, tokens=None):
        self.service = service
        self.settings = settings
        self.on_spawned = None
        # Mints the agent's own token when a UI opens the terminal (launcher `ui`).
        self.tokens = tokens
        # Gives each new session its git worktree (workspace.manager.WorkspaceManager).
        self.workspaces = None

    def command_for(self, role: str) -> str:
        return self.settings.agent_command or default_command(role)

    async def spawn(self, body: dict) -> dict:
        """Handle one spawn request; returns the 201 body of §9.7."""
        req = parse_spawn_body(self.service, body)
        req.update(spawn_options(body))
        project, tasks = _check_references(self.service, req)
        session_id = make_id("sess")
        session_dir = self.settings.session_dir / session_id
        manifest_path = (session_dir / "manifest.json").absolute()
        if self.workspaces is not None:
            req["workspace"] = await self.workspaces.prepare(req, project, tasks, session_id)
        try:
            manifest = await self._generate_manifest(req, project, tasks, manifest_path)
            session = await self._create_session(req, session_id, manifest_path, manifest)
        except BaseException as exc:
            _remove_dir(session_dir)
            if self.workspaces is not None:
                await self.workspaces.discard(req.get("workspace"))
            if isinstance(exc, ApiError) or not isinstance(exc, Exception):
                raise
            if not isinstance(exc, StorageError):
                log.exception("spawn failed")
            raise spawn_error(500, "spawn_error", str(exc)) from None
        launch = {"launcher": self.settings.launcher}
        waiter = self.on_spawned(session) if self.on_spawned is not None else None
        if waiter is not None:
            try:
                launch.update(await asyncio.wait_for(asyncio.shield(waiter),
                                                     LAUNCH_WAIT_SECONDS))
            except TimeoutError:
                launch["state"] = "starting"
        elif self.settings.launcher == "ui":
            launch["state"] = "requested"
        return {"success": True, "sessionId": session_id, "manifestPath": str(manifest_path),
                "message": launch_message(launch), "launch": launch, "session": session}

    # -------------------------------------------------------------- manifest
    async def _generate_manifest(self, req: dict, project: dict, tasks: list[dict],
                                 path: Path) -> dict:
        try:
            if self.settings.manifest_generator == "cli":
                return await self._generate_with_cli(req, path)
            manifest = build_manifest(role=req["role"], project=_as_seen_by_agent(req, project),
                                      tasks=tasks,
                                      skills=req["skills"], model=req["model"],
                                      permission_mode=req["permissionMode"],
                                      strategy=req["strategy"],
                                      dependencies=self.service.dependency_briefs(tasks))
            await asyncio.to_thread(write_manifest, path, manifest)
            return manifest
        except ApiError:
            raise
        except (ManifestError, OSError) as exc:
            raise spawn_error(500, "manifest_generation_failed",
                              f"Failed to generate manifest: {exc}") from None

    async def _generate_with_cli(self, req: dict, path: Path) -> dict:
        """§9.6 CLI mode: `<MAESTRO_CLI_PATH> manifest generate ...` with the server's
        environment (DATA_DIR and the server URL pointing at this server), then read the file
        back and check it."""
        cli = shutil.which(self.settings.cli_path) or self.settings.cli_path
        args = [cli, "manifest", "generate", "--role", req["role"],
                "--project-id", req["projectId"], "--task-ids", ",".join(req["taskIds"]),
                "--skills", ",".join(req["skills"]),
                "--strategy", req["strategy"] or "simple", "--output", str(path)]
        env = dict(os.environ)
        env["DATA_DIR"] = str(self.settings.data_dir)
        # Our CLI reads the project and tasks through the API: point it at this server.
        env["MAESTRO_API_URL"] = env["SERVER_URL"] = self.settings.server_url
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The original CLI reads the tasks from DATA_DIR (SPEC §5.5): their files must hold
        # what was committed (a big task's file otherwise catches up within seconds).
        await self.service.flush_files()
        try:
            # Run by the standard library, which closes the server's other descriptors in
            # the child.
            done = await asyncio.to_thread(
                subprocess.run, args, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                close_fds=True, timeout=CLI_TIMEOUT_SECONDS)
        except OSError as exc:
            raise ManifestError(f"cannot run {self.settings.cli_path}: "
                                f"{exc.strerror or exc}") from None
        except subprocess.TimeoutExpired:
            raise ManifestError(f"{self.settings.cli_path} did not finish within "
                                f"{CLI_TIMEOUT_SECONDS:.0f}s") from None
        if done.returncode != 0:
            text = done.stderr.decode(errors="replace").strip() \
                or f"exit code {done.returncode}"
            raise ManifestError(text[-2000:])
        try:
            manifest = jsonio.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ManifestError(f"cannot read the generated manifest: {exc}") from None
        # The CLI knows neither --model nor --permission-mode (§9.6); carry the request's values.
        session = manifest.get("session") if isinstance(manifest, dict) else None
        if isinstance(session, dict) and (session.get("model") != req["model"] or
                                          session.get("permissionMode")
                                          != req["permissionMode"]):
            session["model"] = req["model"]
            session["permissionMode"] = req["permissionMode"]
            await asyncio.to_thread(write_manifest, path, manifest)
        cwd = _agent_cwd(req)
        if isinstance(session, dict) and cwd and session.get("workingDirectory") != cwd:
            session["workingDirectory"] = cwd  # the agent works in its own worktree
            await asyncio.to_thread(write_manifest, path, manifest)
        validate_manifest(manifest, req["role"])
        return manifest

    # -------------------------------------------------------------- session
    def _session_fields(self, req: dict, session_id: str, manifest_path: Path) -> dict:
        env = {
            "MAESTRO_SESSION_ID": session_id,
            "MAESTRO_PROJECT_ID": req["projectId"],
            "MAESTRO_TASK_IDS": ",".join(req["taskIds"]),
            "MAESTRO_SERVER_URL": self.settings.server_url,
            "MAESTRO_SKILLS": ",".join(req["skills"]),
            "MAESTRO_MANIFEST_PATH": str(manifest_path),
            "MAESTRO_STRATEGY": req["strategy"] or "simple",
        }
        if req["agent"]:
            env["MAESTRO_AGENT"] = req["agent"]
        workspace = req.get("workspace")
        if isinstance(workspace, dict) and workspace.get("mode") == "worktree":
            env["MAESTRO_WORKSPACE_BRANCH"] = workspace["branch"]
            env["MAESTRO_WORKSPACE_BASE"] = workspace["baseRef"]
        env.update(req["env"])
        metadata: dict[str, Any] = {
            "skills": req["skills"], "spawnSource": req["spawnSource"],
            "spawnedBy": req["parentSessionId"] or req["spawnedBy"] or None,
        }
        if req["spawnReason"] is not None:
            metadata["spawnReason"] = req["spawnReason"]
        metadata.update({"role": req["role"], "context": req["context"]})
        if req["strategy"] is not None:
            metadata["strategy"] = req["strategy"]
        if req["agent"]:
            metadata["agent"] = req["agent"]
        # spawnSource is what the caller declared (§9); this is who acts on the request.
        metadata["launchedBy"] = self.settings.launcher
        if self.settings.database_type == "postgres":
            # Of several servers on one database, the one whose launcher follows the agent
            # (replicas.py: the others mark its sessions failed should it be gone).
            metadata["replica"] = self.settings.replica_id
        name = req["sessionName"]
        if name is None:
            task = self.service.get_task_or_none
            name = session_name(req["role"], [(task(t) or {}).get("title") or t
                                              for t in req["taskIds"]])
        return {"taskIds": req["taskIds"], "projectId": req["projectId"], "id": session_id,
                "name": name, "agentId": None, "status": "spawning", "env": env,
                "metadata": metadata, "strategy": req["strategy"],
                "workspace": req.get("workspace")}

    async def _create_session(self, req: dict, session_id: str, manifest_path: Path,
                              manifest: dict) -> dict:
        service = self.service
        fields = self._session_fields(req, session_id, manifest_path)
        project = service.get_project_or_none(req["projectId"]) or {}
        payload: dict[str, Any] = {
            "session": None, "projectId": req["projectId"], "taskIds": req["taskIds"],
            "skillIds": req["skills"], "name": fields["name"],
            "command": self.command_for(req["role"]),
            "cwd": _agent_cwd(req) or project.get("workingDir") or "",
            "envVars": fields["env"], "manifestPath": str(manifest_path), "manifest": manifest,
            "spawnSource": req["spawnSource"], "parentSessionId": req["parentSessionId"],
        }
        hand_token = self.settings.launcher == "ui" and self.tokens is not None
        first_events = [Event("session:spawn_request", payload)]
        if self.settings.spawn_event_alias:  # extension E9
            first_events.append(Event("session:spawn", payload))

        def recheck() -> None:
            # The state may have changed while the manifest was written: check again, with the
            # spawn endpoint's own codes, under the mutation lock.
            parent = req["parentSessionId"]
            if parent is not None and service.get_session_or_none(parent) is None:
                raise spawn_error(404, "parent_session_not_found",
                                  f"Parent session {parent} not found", {"sessionId": parent})
            _check_references(service, req)

        def created(session: dict) -> None:
            payload["session"] = session
            if hand_token:
                # The UI opens the agent's terminal with `envVars`: the agent's own token goes
                # there, never into the stored session (only the user's own clients hear it).
                # Minted for the session as created (its digest is bound to it), before any
                # event goes out.
                payload["envVars"] = dict(fields["env"])
                payload["envVars"]["MAESTRO_SESSION_TOKEN"] = self.tokens.mint(session)

        try:
            return await service.create_session_from(
                fields, recheck=recheck, missing_task=lambda tid: spawn_error(
                    404, "task_not_found", f"Task {tid} not found", {"taskId": tid}),
                created_events=first_events, on_created=created)
        except BaseException:
            if self.tokens is not None:
                self.tokens.revoke(session_id)
            raise


def _remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _agent_cwd(req: dict) -> str | None:
    """The folder of the session's own worktree (where its agent starts), if it has one."""
    workspace = req.get("workspace")
    if isinstance(workspace, dict) and workspace.get("mode") == "worktree":
        return workspace.get("cwd") or workspace.get("path")
    return None


def _as_seen_by_agent(req: dict, project: dict) -> dict:
    """The project with the folder the agent works in as its workingDir (for the manifest)."""
    cwd = _agent_cwd(req)
    return dict(project, workingDir=cwd) if cwd else project
