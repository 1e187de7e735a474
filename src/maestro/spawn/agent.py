"""The agent's side of a spawn: `maestro worker init` / `maestro orchestrator init` (SPEC §12.5).

Reads the manifest named by MAESTRO_MANIFEST_PATH and checks it strictly (the role must match
the command), tells the server that the session works on each task, writes the task prompt to a
file and runs the configured agent CLI on it in the project's working directory:

- MAESTRO_AGENT=claude (the default): Claude Code, `claude -p <prompt>` (headless; the
  interactive REPL when the manifest's permission mode is `interactive`);
- MAESTRO_AGENT=codex: OpenAI Codex, `codex exec <prompt>` (or the interactive `codex <prompt>`);
- any other value: a command line, where `{prompt_file}`, `{manifest}`, `{prompt}`,
  `{session_id}`, `{model}` and `{mcp_config}` are replaced.

Claude Code and Codex are given Maestro's MCP server (`maestro mcp`, this same Python) with the
session's identity: Claude Code through a `--mcp-config` file written next to the manifest,
Codex through `mcp_servers` overrides.

Exit codes: 0 ok (or the agent's own code), 1 bad manifest or environment, 5 agent executable
missing. A session id is never invented: without MAESTRO_SESSION_ID nothing is reported."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from ..config import agent_init_settings
from ..mcp.catalog import SERVER_NAME
from ..vocabulary import AGENT_PROFILES as PROFILES
from ..vocabulary import FINAL_SESSION_STATUSES
from ..mcp.wiring import AgentWiring, write_agent_config
from ..workspace.prompt import workspace_lines
from .guide import guide_lines
from .manifest import ManifestError, dependency_text, read_manifest

EXIT_GENERAL = 1
EXIT_LAUNCH = 5
DEFAULT_SERVER = "http://localhost:3000"
HTTP_TIMEOUT = 5.0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ServerLink:
    """Best-effort calls to the server: an agent must start even when the server is away."""

    def __init__(self, server_url: str, token: str | None):
        self.base = (server_url or DEFAULT_SERVER).rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: dict | None = None) -> dict | None:
        import httpx

        try:
            response = httpx.request(method, self.base + path, json=body, headers=self.headers,
                                     timeout=HTTP_TIMEOUT, trust_env=False)
        except httpx.HTTPError:
            return None
        if response.status_code >= 400:
            return None
        try:
            value = response.json()
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------------- prompt
def build_prompt(role: str, manifest: dict, session_id: str | None,
                 server_tasks: dict[str, dict], workspace: dict | None = None) -> str:
    """The instructions handed to the agent CLI: who it is, its tasks, how to report, and
    (`workspace`: its branch and base) that it works in a worktree of its own."""
    tasks = manifest["tasks"]
    lines = [f"You are a Maestro {role} agent"
             + (f" in session {session_id}." if session_id else "."), ""]
    if role == "orchestrator":
        lines += [("Plan the work below, split it into child tasks (`maestro task create "
                   "--parent <id> ...`) and spawn workers for them (`maestro session spawn "
                   "--task <id>`). Follow their progress with `maestro task tree`."), ""]
    lines.append("Your task" + ("s:" if len(tasks) > 1 else ":"))
    for task in tasks:
        lines += ["", (f"## {task['title']}  (id: {task['id']}, priority: "
                       f"{task.get('priority', 'medium')})")]
        if task.get("description"):
            lines.append(task["description"])
        initial = (server_tasks.get(task["id"]) or {}).get("initialPrompt")
        if isinstance(initial, str) and initial.strip():
            lines += ["", initial.strip()]
        lines += ["", "Acceptance criteria:"] + [f"- {c}" for c in task["acceptanceCriteria"]]
    depends = dependency_text(manifest)
    if depends:
        lines += ["", depends]
    lines += [""] + workspace_lines(workspace) + guide_lines(role, tasks[0]["id"])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- agent CLIs
def agent_command(spec: str, manifest: dict, prompt: str, prompt_file: Path,
                  manifest_path: Path, session_id: str | None,
                  mcp: AgentWiring | None = None) -> list[str]:
    """The command line of the agent CLI named by `spec` (MAESTRO_AGENT); with `mcp`, the
    agent is given Maestro's MCP server (Claude Code: `--mcp-config`, Codex: `mcp_servers`
    overrides, a command line: the `{mcp_config}` placeholder)."""
    session = manifest["session"]
    model = session.get("model", "sonnet")
    mode = session.get("permissionMode", "acceptEdits")
    # `--mcp-config` takes several values: a `--flag` must follow it, never the prompt.
    mcp_claude = mcp.claude_args() if mcp else []
    if spec == "claude":
        if mode == "interactive":  # a person attached to the window takes part
            return ["claude", *mcp_claude, "--model", model, "--permission-mode", "default",
                    prompt]
        argv = ["claude", "-p", prompt, *mcp_claude, "--model", model, "--permission-mode",
                "plan" if mode == "readOnly" else "acceptEdits"]
        if session.get("maxTurns"):
            argv += ["--max-turns", str(int(session["maxTurns"]))]
        # Reporting (CLI or tools) must never wait for a permission prompt nobody answers.
        return argv + ["--allowedTools", "Bash(maestro:*)"] + ([f"mcp__{SERVER_NAME}"]
                                                               if mcp else [])
    if spec == "codex":
        mcp_codex = mcp.codex_args() if mcp else []
        if mode == "interactive":
            return ["codex", *mcp_codex, prompt]
        sandbox = "read-only" if mode == "readOnly" else "workspace-write"
        # The sandbox blocks the network by default; the agent must reach the Maestro server.
        return ["codex", "exec", "--sandbox", sandbox, "-c",
                "sandbox_workspace_write.network_access=true", *mcp_codex,
                "--skip-git-repo-check", prompt]
    values = {"{prompt_file}": str(prompt_file), "{manifest}": str(manifest_path),
              "{prompt}": prompt, "{session_id}": session_id or "", "{model}": model,
              "{mcp_config}": str(mcp.config_file) if mcp else ""}
    argv = []
    for token in shlex.split(spec):
        for key, value in values.items():
            token = token.replace(key, value)
        argv.append(token)
    return argv


def agent_environment(role: str, manifest: dict, manifest_path: Path, prompt_file: Path,
                      session_id: str | None) -> dict[str, str]:
    """The variables `init` sets for the agent (§12.2)."""
    env = dict(os.environ)
    tasks = manifest["tasks"]
    first = tasks[0]
    env.update({
        "MAESTRO_TASK_IDS": ",".join(t["id"] for t in tasks),
        "MAESTRO_PROJECT_ID": first["projectId"],
        "MAESTRO_ROLE": role,
        "MAESTRO_STRATEGY": manifest.get("strategy") or env.get("MAESTRO_STRATEGY") or "simple",
        "MAESTRO_MANIFEST_PATH": str(manifest_path),
        "MAESTRO_TASK_TITLE": first["title"],
        "MAESTRO_TASK_PRIORITY": first.get("priority") or "medium",
        "MAESTRO_ALL_TASKS": json.dumps(tasks, ensure_ascii=False),
        "MAESTRO_PROMPT_FILE": str(prompt_file),
    })
    if session_id:
        env["MAESTRO_SESSION_ID"] = session_id
    if first.get("acceptanceCriteria"):
        env["MAESTRO_TASK_ACCEPTANCE"] = json.dumps(first["acceptanceCriteria"],
                                                    ensure_ascii=False)
    if first.get("dependencies"):
        env["MAESTRO_TASK_DEPENDENCIES"] = json.dumps(first["dependencies"])
    return env


def _mcp_wiring(manifest_path: Path, env: dict[str, str]) -> AgentWiring | None:
    """Write the agent's MCP configuration next to its manifest; without it (a folder that
    cannot be written) the agent still starts and reports through the CLI."""
    try:
        return write_agent_config(manifest_path.parent, env)
    except OSError as exc:
        _say(f"maestro: no MCP configuration for the agent ({exc}); it reports through the "
             "CLI only")
        return None


def _write_prompt(manifest_path: Path, prompt: str) -> Path:
    target = manifest_path.parent / "prompt.md"
    try:
        target.write_text(prompt, encoding="utf-8")
        return target
    except OSError:
        import tempfile

        fd, name = tempfile.mkstemp(prefix="maestro-prompt-", suffix=".md")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(prompt)
        return Path(name)


def _run_agent(argv: list[str], cwd: str, env: dict[str, str]) -> int:
    """Run the agent in the foreground and return its status (negative: killed by that
    signal). Signals sent to the whole process group (stop, a closed terminal) reach the agent
    directly; this process only waits for it."""
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda *_: None)
    proc = subprocess.Popen(argv, cwd=cwd, env=env)
    while True:
        try:
            return proc.wait()
        except InterruptedError:
            continue


def _end_like(code: int) -> int:
    """Exit the way the agent did: of the same signal, so whoever follows us sees it."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def run_init(role: str) -> int:
    """`maestro <role> init`; returns the process exit code."""
    settings = agent_init_settings()
    raw_path = settings.manifest_path
    if not raw_path:
        _say(f"maestro {role} init: MAESTRO_MANIFEST_PATH is not set (spawn a session with "
             "POST /api/sessions/spawn or `maestro session spawn`)")
        return EXIT_GENERAL
    manifest_path = Path(raw_path).absolute()
    try:
        manifest = read_manifest(manifest_path, role)
    except ManifestError as exc:
        _say(f"maestro {role} init: invalid manifest: {exc}")
        return EXIT_GENERAL
    session_id = settings.session_id
    server = ServerLink(settings.server_url, settings.token)
    followed = settings.followed
    server_tasks: dict[str, dict] = {}
    if session_id:
        for task in manifest["tasks"]:
            answer = server.call("PATCH", f"/api/tasks/{quote(task['id'], safe='')}",
                                 {"sessionStatus": "working", "updateSource": "session",
                                  "sessionId": session_id})
            if answer is not None:
                server_tasks[task["id"]] = answer
    else:
        _say(f"maestro {role} init: MAESTRO_SESSION_ID is not set; the agent's reports will "
             "not be linked to a session")
    prompt = build_prompt(role, manifest, session_id, server_tasks, settings.workspace)
    prompt_file = _write_prompt(manifest_path, prompt)
    spec = settings.agent
    env = agent_environment(role, manifest, manifest_path, prompt_file, session_id)
    mcp = _mcp_wiring(manifest_path, env)
    try:
        code = _launch(role, manifest, argv=agent_command(
            spec, manifest, prompt, prompt_file, manifest_path, session_id, mcp=mcp),
            env=env, session_id=session_id, server=server, followed=followed)
    finally:
        if mcp is not None:  # it holds the session token: gone with the agent
            mcp.config_file.unlink(missing_ok=True)
    return _end_like(code)


def _launch(role: str, manifest: dict, *, argv: list[str], env: dict[str, str],
            session_id: str | None, server: ServerLink, followed: bool) -> int:
    """Run the agent CLI `argv` and settle the session when nobody else follows it; returns
    the agent's status (negative: the signal that ended it) or EXIT_LAUNCH."""
    if not argv or shutil.which(argv[0], path=env.get("PATH")) is None:
        name = argv[0] if argv else "(empty MAESTRO_AGENT)"
        message = (f"maestro {role} init: agent executable '{name}' not found on PATH; install "
                   "it or set MAESTRO_AGENT to claude, codex or a command line")
        _say(message)
        if session_id and not followed:
            server.call("PATCH", f"/api/sessions/{quote(session_id, safe='')}", {
                "status": "failed", "events": [{"type": "agent_launch_failed",
                                                "data": {"agent": name, "message": message}}]})
        return EXIT_LAUNCH
    working_dir = manifest["session"].get("workingDirectory")
    cwd = working_dir if working_dir and os.path.isdir(working_dir) else os.getcwd()
    try:
        code = _run_agent(argv, cwd, env)
    except OSError as exc:
        _say(f"maestro {role} init: cannot start {argv[0]}: {exc.strerror or exc}")
        return EXIT_LAUNCH
    if session_id and not followed:
        # Nobody else follows this process (a UI opened the terminal): settle the session.
        current = server.call("GET", f"/api/sessions/{quote(session_id, safe='')}")
        if current is not None and current.get("status") not in FINAL_SESSION_STATUSES:
            server.call("PATCH", f"/api/sessions/{quote(session_id, safe='')}", {
                "status": "completed" if code == 0 else "failed",
                "events": [{"type": "process_exit", "data": {"exitCode": code}}]})
    return code
