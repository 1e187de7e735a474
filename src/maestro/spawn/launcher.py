"""The launcher: starts an agent for each spawned session and follows it to the end.

Mode `local` (the default) runs `MAESTRO_AGENT_COMMAND` (else `maestro worker init` /
`maestro orchestrator init`) for every spawned session, at most `MAESTRO_MAX_AGENTS` at once (the
others wait in `spawning`, first come first started). Each agent runs under the wrapper
(`wrapper.py`) in a window of a tmux session when tmux is available (a person can attach), else
as a detached process group on a pseudo-terminal. An agent's environment is built from an
allow-list (`agent_env`), never copied from the server's. The session moves to `running` when the
process is up and to `completed`/`failed` when it ends, always through the Service's update
method, with `process_started` / `process_exit` session events. Mode `ui` launches nothing (a
desktop UI answers `session:spawn_request`) but still follows agents launched earlier.

What the launcher knows about a session lives in `SESSION_DIR/<id>/` (launch.json, the
wrapper's process.json, exit.json and output.log), so a restarted server re-adopts agents that
still run and settles those that ended or vanished while it was away."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import agent_env
from ..config import Settings
from ..errors import ApiError, validation
from ..ids import is_safe_file_component, now_ms
from ..mcp.wiring import CONFIG_FILE as MCP_CONFIG_FILE
from ..replicas import END_REASON as REPLICA_LOST
from ..service import Service
from ..vocabulary import AGENT_ROLES, FINAL_SESSION_STATUSES
from ..write_lead import writes_here
from .endings import end_message
from .output_log import read_output
from .processes import (
    ENV_FILE,
    EXIT_FILE,
    LOG_FILE,
    PROCESS_FILE,
    RECORD_FILE,
    last_output_line,
    pid_alive,
    read_json,
    save_json,
    write_private_json,
)
from .wrapper import process_start_time

log = logging.getLogger("maestro.launcher")

POLL_SECONDS = 0.1
TMUX_SESSION = "maestro"
TMUX_TIMEOUT = 10.0
KILL_WRAPPER_AFTER = 5.0  # seconds after SIGKILL to the agent, if the wrapper is still there


@dataclass
class Agent:
    """One launched (or about to be launched) agent."""

    session_id: str
    folder: Path
    record: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    stop_at: float | None = None
    stopped_by: str | None = None  # the session that asked for the stop; None: the user
    killed_at: float | None = None
    finishing: bool = False

    @property
    def wrapper_pid(self) -> int | None:
        return self.record.get("wrapperPid")

    def agent_group(self) -> int | None:
        info = read_json(self.folder / PROCESS_FILE)
        pgid = info.get("agentPgid") if info else None
        return pgid if isinstance(pgid, int) and pgid > 1 else None


def _taken_over(session: dict) -> bool:
    """Whether another server, finding this one gone, ended the session (replicas.py): its
    agent, whose token is revoked, is stopped."""
    metadata = session.get("metadata")
    return isinstance(metadata, dict) and metadata.get("endReason") == REPLICA_LOST \
        and session.get("status") in FINAL_SESSION_STATUSES


def _gone_or_taken_over(session: dict | None) -> bool:
    return session is None or _taken_over(session)


def launch_error(status: int, code: str, message: str, session_id: str) -> ApiError:
    return ApiError(status, code, message, {"sessionId": session_id})


class Launcher:
    def __init__(self, service: Service, settings: Settings, tokens=None):
        self.service = service
        self.settings = settings
        # Mints each agent's own bearer token (narrower than the user's MAESTRO_TOKEN).
        self.tokens = tokens
        self.local = settings.launcher == "local"
        self.queue: deque[str] = deque()
        self.active: dict[str, Agent] = {}
        self.tmux = shutil.which("tmux") if settings.tmux else None
        digest = hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:12]
        self.tmux_socket = f"maestro-{digest}"
        self._tmux_lock = asyncio.Lock()
        self._tmux_env_checked = False
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        # Spawn requests waiting to hear what became of their agent (started, queued, failed).
        self._waiters: dict[str, asyncio.Future] = {}
        # Forwards stop and output requests for other replicas' agents (forward.py).
        self.forwarder = None

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        self.settings.session_dir.mkdir(parents=True, exist_ok=True)
        await self._recover()
        self._pump()
        log.info("launcher: %s%s, at most %d agent(s) at once",
                 self.settings.launcher,
                 f" (tmux socket {self.tmux_socket})" if self.local and self.tmux
                 else " (pseudo-terminals)" if self.local else "", self.settings.max_agents)

    async def stop(self) -> None:
        """Stop following; the agents keep running and are re-adopted at the next start."""
        self._closing = True
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=3.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ submission
    def folder(self, session_id: str) -> Path:
        if not is_safe_file_component(session_id):
            raise validation("session id cannot name a folder", {"sessionId": session_id})
        return self.settings.session_dir / session_id

    def submit(self, session: dict) -> asyncio.Future | None:
        """Queue a freshly spawned session (called once it is stored and announced). Returns a
        future that says what became of the agent: `{"state": "started", "pid", "mode"}`,
        `{"state": "queued", "running", "maxAgents"}` or `{"state": "failed", "message"}`;
        None when this launcher starts nothing (`ui`)."""
        if not self.local or self._closing:
            return None
        sid = session["id"]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[sid] = waiter
        try:
            save_json(self.folder(sid) / RECORD_FILE, {"state": "queued", "queuedAt": now_ms()})
        except (OSError, ApiError) as exc:  # the spawn stands; the session fails, saying why
            log.error("launcher: cannot queue session %s: %s", sid, exc)
            agent = Agent(sid, self.settings.session_dir / sid)
            self._spawn_task(self._finish(agent, {"exitCode": None, "signal": None},
                                          reason="launch_failed", ok=False, message=str(exc),
                                          event_type="launch_failed", keep_record=False))
            return waiter
        self.queue.append(sid)
        self._pump()
        if sid in self.queue:
            self._announce(sid, {"state": "queued", "running": len(self.active),
                                 "maxAgents": self.settings.max_agents})
        return waiter

    def _announce(self, sid: str, outcome: dict) -> None:
        """Tell the spawn request of `sid` (if one waits) what became of its agent."""
        waiter = self._waiters.pop(sid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)

    def _pump(self) -> None:
        while self.local and not self._closing and self.queue \
                and len(self.active) < self.settings.max_agents:
            sid = self.queue.popleft()
            agent = Agent(sid, self.folder(sid), read_json(self.folder(sid) / RECORD_FILE) or {})
            self.active[sid] = agent
            self._spawn_task(self._run(agent, launch=True))

    def _spawn_task(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, agent: Agent, launch: bool) -> None:
        try:
            if launch and not await self._launch(agent):
                return
            await self._follow(agent)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("launcher: session %s", agent.session_id)
            self._announce(agent.session_id, {"state": "failed", "message": str(exc)})
            if not agent.finishing:
                await self._finish(agent, {"exitCode": None, "signal": None},
                                   reason="launcher_error", message=str(exc), ok=False)
        finally:
            self.active.pop(agent.session_id, None)
            self._pump()

    # ------------------------------------------------------------------ launching
    def _plan(self, session: dict, folder: Path) -> tuple[list[str], str, dict[str, str]]:
        """The command line, working directory and whole environment of a session's agent.

        The environment is built from nothing (agent_env): the server's allowed variables, the
        session's env (SPEC §9.5 and the spawn request's own variables), the server's default
        MAESTRO_AGENT, the API URL and the agent's own token. Never the server's database URL,
        folders or the user's MAESTRO_TOKEN."""
        metadata = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
        role = metadata.get("role") if metadata.get("role") in AGENT_ROLES \
            else "worker"
        if self.settings.agent_command:
            argv = shlex.split(self.settings.agent_command)
        else:
            argv = [sys.executable, "-m", "maestro", role, "init"]
        project = self.service.get_project_or_none(session.get("projectId")) or {}
        working_dir = project.get("workingDir")
        workspace = session.get("workspace") if isinstance(session.get("workspace"), dict) \
            else {}
        if workspace.get("mode") == "worktree":  # the session's own git worktree
            working_dir = workspace.get("cwd") or workspace.get("path")
        cwd = working_dir if isinstance(working_dir, str) and working_dir \
            and os.path.isdir(working_dir) else str(folder)
        env = dict(self.settings.agent_env)
        env.update(agent_env.from_session(session.get("env")))
        if self.settings.agent and "MAESTRO_AGENT" not in env:
            env["MAESTRO_AGENT"] = self.settings.agent
        env["MAESTRO_API_URL"] = env.get("MAESTRO_SERVER_URL") or self.settings.server_url
        env["MAESTRO_LAUNCHER"] = "local"
        if self.settings.mcp_tools:  # the agent's MCP tools are narrowed like /mcp
            env["MAESTRO_MCP_TOOLS"] = ",".join(self.settings.mcp_tools)
        if self.tokens is not None:  # the agent acts with its own identity only
            env["MAESTRO_SESSION_TOKEN"] = self.tokens.mint(session)
        env["PATH"] = self._path()
        return argv, cwd, env

    def _path(self) -> str:
        """PATH with this server's own `bin` folder first: the `maestro` command agents call
        must be this server's."""
        bin_dir = str(Path(sys.executable).parent)
        path = self.settings.agent_env.get("PATH") or os.defpath
        return path if path.split(os.pathsep)[0] == bin_dir else bin_dir + os.pathsep + path

    def helper_env(self) -> dict[str, str]:
        """The environment of the wrapper and of tmux (whose server hands its environment to
        every window): the agents' allowed variables only, so nothing of the server's own
        environment reaches an agent's window either."""
        env = dict(self.settings.agent_env)
        env["PATH"] = self._path()
        if self.settings.tmux_tmpdir:  # where `tmux -L <socket>` finds the socket
            env["TMUX_TMPDIR"] = self.settings.tmux_tmpdir
        return env

    async def _launch(self, agent: Agent) -> bool:
        sid = agent.session_id
        session = self.service.get_session_or_none(sid)
        if session is None or session.get("status") != "spawning":
            agent.record.update(state="skipped", finalized=True)
            save_json(agent.folder / RECORD_FILE, agent.record)
            self._announce(sid, {"state": "skipped",
                                 "message": "the session was deleted or ended first"})
            return False
        agent.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv, cwd, env = self._plan(session, agent.folder)
        if not argv or shutil.which(argv[0], path=env["PATH"]) is None:
            name = argv[0] if argv else "(empty command)"
            await self._finish(agent, {"exitCode": None, "signal": None},
                               reason="executable_not_found", ok=False,
                               message=f"cannot start the agent: {name} was not found "
                                       f"(check MAESTRO_AGENT_COMMAND and PATH)",
                               event_type="launch_failed")
            return False
        # The whole environment travels in the file: a tmux server started by an earlier run
        # would otherwise hand the agent that run's variables (an old key, another agent CLI).
        env_file = agent.folder / ENV_FILE
        write_private_json(env_file, env)
        wrapper = [sys.executable, "-m", "maestro.spawn.wrapper", "--dir", str(agent.folder),
                   "--cwd", cwd, "--env-file", str(env_file), "--", *argv]
        try:
            if self.tmux:
                pid, tmux_info = await self._start_in_tmux(sid, wrapper, cwd)
            else:
                pid, tmux_info = self._start_on_pty(agent, wrapper), None
        except (OSError, RuntimeError) as exc:
            env_file.unlink(missing_ok=True)
            await self._finish(agent, {"exitCode": None, "signal": None}, reason="launch_failed",
                               ok=False, message=str(exc), event_type="launch_failed")
            return False
        agent.record.update(state="launched", mode="tmux" if tmux_info else "pty",
                            launchedAt=now_ms(), wrapperPid=pid,
                            wrapperStart=process_start_time(pid), cwd=cwd, command=argv)
        if tmux_info:
            agent.record["tmux"] = tmux_info
        save_json(agent.folder / RECORD_FILE, agent.record)
        data: dict[str, Any] = {"pid": pid, "mode": agent.record["mode"], "cwd": cwd,
                                "command": shlex.join(argv),
                                "log": str(agent.folder / LOG_FILE)}
        if tmux_info:
            data["tmux"] = tmux_info
        current = self.service.get_session_or_none(sid)
        if current is not None:
            body: dict[str, Any] = {"events": [{"type": "process_started", "data": data}]}
            if current.get("status") == "spawning":
                body["status"] = "running"
            await self._update(sid, body)
        started = {"state": "started", "pid": pid, "mode": agent.record["mode"]}
        if tmux_info:
            started["attach"] = tmux_info["attach"]
        self._announce(sid, started)
        if agent.stop_at is not None:
            self._signal(agent, signal.SIGTERM)
        return True

    def _start_on_pty(self, agent: Agent, wrapper: list[str]) -> int:
        with open(agent.folder / LOG_FILE, "ab") as out:
            agent.proc = subprocess.Popen(wrapper, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=out, cwd=str(agent.folder), close_fds=True,
                                          start_new_session=True, env=self.helper_env())
        return agent.proc.pid

    def tmux_base(self) -> list[str]:
        return [self.tmux or "tmux", "-L", self.tmux_socket, "-f", os.devnull]

    async def _tmux(self, *args: str) -> tuple[int, str, str]:
        # The standard library closes every other descriptor in the child; the event loop's
        # own subprocess support may not, and the tmux server it starts would then keep our
        # pipes (and sockets) open for as long as it lives.
        try:
            done = await asyncio.to_thread(
                subprocess.run, [*self.tmux_base(), *args], env=self.helper_env(),
                stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                close_fds=True, timeout=TMUX_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RuntimeError("tmux did not answer") from None
        return done.returncode, done.stdout, done.stderr

    async def _start_in_tmux(self, sid: str, wrapper: list[str], cwd: str) -> tuple[int, dict]:
        fmt = "#{pane_pid} #{window_id}"
        async with self._tmux_lock:
            if not self._tmux_env_checked:
                await self._reset_tmux_environment()
                self._tmux_env_checked = True
            code, _, _ = await self._tmux("has-session", "-t", f"={TMUX_SESSION}")
            if code != 0:
                args = ["new-session", "-d", "-s", TMUX_SESSION, "-x", "200", "-y", "50"]
            else:
                args = ["new-window", "-d", "-t", f"={TMUX_SESSION}:"]
            code, out, err = await self._tmux(*args, "-n", sid, "-c", cwd, "-P", "-F", fmt,
                                              *wrapper)
        if code != 0:
            raise RuntimeError(f"tmux could not open a window: {err.strip() or code}")
        pid_text, _, window = out.strip().partition(" ")
        attach = f"tmux -L {self.tmux_socket} attach -t {TMUX_SESSION}"
        return int(pid_text), {"socket": self.tmux_socket, "session": TMUX_SESSION,
                               "window": window, "attach": attach}

    async def _reset_tmux_environment(self) -> None:
        """A tmux server still running from an earlier run of the server (an older version, or
        other settings) keeps the environment it started with and hands it to every new window:
        make its global environment exactly the helpers' one and empty the session's own. A
        server started now already has them so."""
        code, out, _ = await self._tmux("show-environment", "-g")
        if code != 0:
            return  # no tmux server yet
        wanted = self.helper_env()
        args: list[str] = []
        for line in out.splitlines():
            name = line.partition("=")[0]
            if line and not line.startswith("-") and name not in wanted:  # `-NAME`: removed
                args += ["set-environment", "-g", "-u", name, ";"]
        code, out, _ = await self._tmux("show-environment", "-t", f"={TMUX_SESSION}")
        for line in out.splitlines() if code == 0 else ():
            name = line.lstrip("-").partition("=")[0]
            if name:
                args += ["set-environment", "-t", f"={TMUX_SESSION}", "-u", name, ";"]
        for name, value in wanted.items():
            # tmux reads an argument ending in `;` as the end of a command, `\;` as a `;`.
            args += ["set-environment", "-g", name,
                     value[:-1] + "\\;" if value.endswith(";") else value, ";"]
        code, _, err = await self._tmux(*args[:-1])
        if code != 0:
            raise RuntimeError(f"tmux could not reset its environment: {err.strip() or code}")

    # ------------------------------------------------------------------ following
    def _alive(self, agent: Agent) -> bool:
        if agent.proc is not None:
            return agent.proc.poll() is None
        return pid_alive(agent.wrapper_pid, agent.record.get("wrapperStart"))

    async def _follow(self, agent: Agent) -> None:
        grace = self.settings.stop_grace
        beat_every = self.settings.heartbeat_seconds
        next_beat = time.monotonic() + beat_every
        while not self._closing:
            outcome = read_json(agent.folder / EXIT_FILE)
            if outcome is None and not self._alive(agent):
                outcome = read_json(agent.folder / EXIT_FILE) or {}
                if not outcome:
                    await self._finish(agent, {"exitCode": None, "signal": None},
                                       reason="process_lost", ok=False,
                                       message="the agent's process ended without a record")
                    return
            if outcome is not None:
                await self._finish(agent, outcome)
                return
            now = time.monotonic()
            if agent.stop_at is None and _gone_or_taken_over(
                    self.service.get_session_or_none(agent.session_id)):
                # Deleted, or ended by a server that took this one over: its agent goes too.
                self._request_stop(agent)
            elif agent.stop_at is not None and agent.killed_at is None \
                    and now >= agent.stop_at + grace:
                self._signal(agent, signal.SIGKILL)
                agent.killed_at = now
            elif agent.killed_at is not None and now >= agent.killed_at + KILL_WRAPPER_AFTER:
                self._kill_wrapper(agent)
            if now >= next_beat and agent.stop_at is None:
                next_beat = now + beat_every
                await self._heartbeat(agent.session_id)
            await asyncio.sleep(POLL_SECONDS)

    async def _heartbeat(self, sid: str) -> None:
        """The agent is alive: keep its session's claims (SPEC §15.3)."""
        session = self.service.get_session_or_none(sid)
        if session is None or session.get("status") in FINAL_SESSION_STATUSES:
            return
        try:
            with writes_here():  # (not forwarded: a 503 there would read as "ended")
                await self.service.heartbeat_session(sid)
        except ApiError as exc:  # ended or deleted meanwhile
            log.info("launcher: session %s not heartbeated: %s", sid, exc.message)

    def _signal(self, agent: Agent, number: int) -> None:
        group = agent.agent_group()
        try:
            if group is not None:
                os.killpg(group, number)
            elif agent.wrapper_pid and self._alive(agent):
                os.kill(agent.wrapper_pid, number)  # forwarded once the agent runs
        except ProcessLookupError:
            pass
        except PermissionError as exc:
            log.warning("cannot signal the agent of %s: %s", agent.session_id, exc)

    def _kill_wrapper(self, agent: Agent) -> None:
        if agent.wrapper_pid and self._alive(agent):
            try:
                os.kill(agent.wrapper_pid, signal.SIGKILL)
            except OSError:
                pass

    def _request_stop(self, agent: Agent) -> None:
        if agent.stop_at is None:
            agent.stop_at = time.monotonic()
        if agent.record.get("state") == "launched":
            self._signal(agent, signal.SIGTERM)

    async def _update(self, sid: str, body: dict, stopped: bool = False,
                      end: dict | None = None) -> None:
        try:
            with writes_here():  # (not forwarded: a 503 there would read as "deleted")
                await self.service.update_session(sid, body, stopped=stopped, end=end)
        except ApiError as exc:  # deleted meanwhile
            log.info("launcher: session %s not updated: %s", sid, exc.message)

    async def _finish(self, agent: Agent, outcome: dict, *, reason: str | None = None,
                      ok: bool | None = None, message: str | None = None,
                      event_type: str = "process_exit", keep_record: bool = True) -> None:
        """Record how the agent ended: a session event, and the final status unless the agent
        already set one."""
        agent.finishing = True
        code, sig = outcome.get("exitCode"), outcome.get("signal")
        if ok is None:
            ok = code == 0 and not outcome.get("error")
        if reason is None:
            if agent.stop_at is not None:
                reason = "stopped"
            elif outcome.get("error"):
                reason = "wrapper_error"
            elif sig:
                reason = "signal"
            elif code == 0:
                reason = "exited"
            elif code == 5:
                reason = "agent_launch_failed"
            elif code == 127:
                reason = "command_not_found"
            else:
                reason = "exit_code"
        data: dict[str, Any] = {"exitCode": code, "signal": sig, "reason": reason}
        if message is None and not ok:
            message = outcome.get("error") or last_output_line(agent.folder / LOG_FILE)
        if message:
            data["message"] = message
        if agent.stopped_by is not None:
            data["stoppedBy"] = agent.stopped_by
        agent.record.update(state="finished", exit=data, finalized=False)
        # The agent's MCP configuration holds its session token (`worker init` removes it too).
        (agent.folder / MCP_CONFIG_FILE).unlink(missing_ok=True)
        if keep_record:
            save_json(agent.folder / RECORD_FILE, agent.record)
        session = self.service.get_session_or_none(agent.session_id)
        if session is not None:
            body: dict[str, Any] = {"events": [{"type": event_type, "data": data}]}
            end = None
            if session.get("status") not in FINAL_SESSION_STATUSES:
                body["status"] = "completed" if ok else "failed"
                end = {"endReason": reason,
                       "endMessage": end_message(data, data.get("stoppedBy"))}
            await self._update(agent.session_id, body, stopped=reason == "stopped", end=end)
        # Once the session says so: a spawn request still waiting hears that it failed.
        self._announce(agent.session_id, {"state": "failed",
                                          "message": end_message(data, agent.stopped_by)})
        agent.record["finalized"] = True
        if keep_record:
            save_json(agent.folder / RECORD_FILE, agent.record)
        log.info("launcher: session %s ended (%s)", agent.session_id, reason)

    # ------------------------------------------------------------------ restart
    async def _recover(self) -> None:
        waiting: list[tuple[int, str]] = []
        for session in self.service.sessions_where():
            sid = session.get("id")
            if not isinstance(sid, str) or not is_safe_file_component(sid) \
                    or not self._mine(session):
                continue
            folder = self.settings.session_dir / sid
            record = read_json(folder / RECORD_FILE)
            if record is None or record.get("finalized"):
                continue
            agent = Agent(sid, folder, record)
            state = record.get("state")
            if state == "queued":
                if session.get("status") == "spawning":
                    waiting.append((record.get("queuedAt") or 0, sid))
                else:
                    record.update(state="skipped", finalized=True)
                    save_json(folder / RECORD_FILE, record)
            elif state == "finished":
                if session.get("status") in FINAL_SESSION_STATUSES:
                    record["finalized"] = True
                    save_json(folder / RECORD_FILE, record)
                else:
                    exit_data = record.get("exit") or {}
                    agent.stopped_by = exit_data.get("stoppedBy")
                    await self._finish(agent, exit_data, reason=exit_data.get("reason"),
                                       ok=exit_data.get("exitCode") == 0)
            elif state == "launched":
                if read_json(folder / EXIT_FILE) is not None or self._alive(agent):
                    self.active[sid] = agent  # re-adopted (or its exit is read at once)
                    if _taken_over(session):
                        self._request_stop(agent)
                    self._spawn_task(self._run(agent, launch=False))
                else:
                    await self._finish(agent, {"exitCode": None, "signal": None},
                                       reason="server_restarted", ok=False,
                                       message="the agent was gone when the server restarted")
        for _, sid in sorted(waiting):
            self.queue.append(sid)

    def _mine(self, session: dict) -> bool:
        """Whether this server's launcher started the session's agent: of several replicas on
        one database (which may share a SESSION_DIR), each follows only its own agents."""
        metadata = session.get("metadata")
        replica = metadata.get("replica") if isinstance(metadata, dict) else None
        return replica is None or replica == self.settings.replica_id

    # ------------------------------------------------------------------ control API
    async def stop_session(self, session_id: str, by: str | None = None) -> dict:
        """Stop a session's agent: SIGTERM to its process group now, SIGKILL after the grace
        period. A session still waiting for a slot is taken off the queue and fails at once.
        `by` is the session that asks (an orchestrator), None for the user."""
        self.service.get_session(session_id)
        folder = self.folder(session_id)
        grace = self.settings.stop_grace
        agent = self.active.get(session_id)
        if agent is None and session_id in self.queue:
            self.queue.remove(session_id)
            agent = Agent(session_id, folder, read_json(folder / RECORD_FILE) or {})
            agent.stop_at = time.monotonic()
            agent.stopped_by = by
            await self._finish(agent, {"exitCode": None, "signal": None}, reason="stopped",
                               ok=False, message="stopped before the agent started")
            return {"success": True, "sessionId": session_id, "signal": None,
                    "graceSeconds": grace, "session": self.service.get_session(session_id)}
        if agent is None:
            if read_json(folder / RECORD_FILE) is None:
                raise launch_error(409, "SESSION_NOT_LAUNCHED",
                                   f"Session {session_id} was not launched by this server",
                                   session_id)
            raise launch_error(409, "SESSION_NOT_RUNNING",
                               f"The agent of session {session_id} is not running", session_id)
        if agent.finishing:
            raise launch_error(409, "SESSION_NOT_RUNNING",
                               f"The agent of session {session_id} has already ended",
                               session_id)
        if agent.stop_at is None:
            agent.stopped_by = by
        self._request_stop(agent)
        return {"success": True, "sessionId": session_id, "signal": "SIGTERM",
                "graceSeconds": grace, "session": self.service.get_session(session_id)}

    async def read_log(self, session_id: str, tail: str | None,
                       offset: str | None = None) -> dict:
        """GET /api/sessions/:id/log (see output_log.read_output)."""
        session = self.service.get_session(session_id)
        return await read_output(session, self.folder(session_id),
                                 running=session_id in self.active, tail=tail, offset=offset)
