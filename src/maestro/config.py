"""Settings of the server, read from the environment (SPEC §2) and overridable by flags."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from . import agent_env
from .mcp.catalog import parse_tools, problem_text

LOG_LEVELS = ("error", "warn", "info", "debug")
DATABASE_TYPES = ("filesystem", "postgres")
MANIFEST_GENERATORS = ("cli", "server")
NODE_ENVS = ("development", "production", "test")
LAUNCHERS = ("local", "ui")
# A token guarding a server that others can reach must resist guessing.
MIN_EXPOSED_TOKEN = 32
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
MAX_HEADER_BYTES_LIMIT = 16 * 1024 * 1024


class ConfigError(ValueError):
    """A setting that makes start-up impossible; the message says which and why."""


def expand_path(value: str) -> Path:
    return Path(os.path.expanduser(value)).absolute()


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    port: int = 3000
    host: str = "127.0.0.1"
    server_url: str = ""
    data_dir: Path = field(default_factory=lambda: expand_path("~/.maestro/data"))
    session_dir: Path = field(default_factory=lambda: expand_path("~/.maestro/sessions"))
    # Where spawned sessions' git worktrees live (README "Parallel agents, isolated"), and how
    # often live worktrees are compared for files two sessions both change.
    worktree_dir: Path = field(default_factory=lambda: expand_path("~/.maestro/worktrees"))
    workspace_scan_seconds: float = 5.0
    skills_dir: Path = field(default_factory=lambda: expand_path("~/.agents-ui/maestro-skills"))
    log_level: str = "info"
    debug: bool = False
    database_type: str = "filesystem"
    database_url: str = ""
    manifest_generator: str = "server"
    cli_path: str = "maestro"
    cors_enabled: bool = True
    cors_origins: tuple[str, ...] = ()
    cors_credentials: bool = False
    allowed_hosts: tuple[str, ...] = ()
    token: str = ""
    launcher: str = "local"
    agent_command: str = ""
    agent: str = ""
    # The server's variables its agents inherit (see agent_env), and the names the user added.
    agent_env: dict[str, str] = field(default_factory=dict, repr=False)
    agent_env_names: tuple[str, ...] = ()
    tmux_tmpdir: str = ""
    max_agents: int = 8
    ws_queue_limit: int = 100_000
    ws_lag_seconds: float = 10.0
    # Events kept for WebSocket clients that reconnect with `?since=` (MAESTRO_WS_REPLAY).
    ws_replay_events: int = 10_000
    # PostgreSQL: records of the log kept for replicas that are behind (MAESTRO_LOG_RETENTION),
    # and how often a replica reads the log when no notification comes (MAESTRO_LOG_POLL_MS).
    log_retention: int = 100_000
    log_poll_seconds: float = 0.5
    # Responses and WebSocket frames written straight to uvicorn's connections (server/_fast.py);
    # MAESTRO_FAST_PATHS=0 uses the standard ASGI messages only.
    fast_paths: bool = True
    store_process: bool = True
    checkpoint_bytes: int = 16 * 1024 * 1024
    pipeline_min_ops: int = 24
    max_entry_bytes: int = 64 * 1024
    stop_grace: float = 5.0
    tmux: bool = True
    spawn_event_alias: bool = False
    node_env: str = "development"
    # Claims (SPEC §15.3): the shortest lease a client may ask for (5 s; tests lower it), how
    # often expired leases are swept back to pending, and how often the launcher heartbeats
    # the sessions of the agents it runs.
    claim_min_ttl: int = 5
    claim_sweep_seconds: float = 1.0
    heartbeat_seconds: float = 30.0
    # Test only (undocumented): a claim checks, sleeps this many ms, then grants in a second
    # step, so the exactly-once tests can show that they catch a check-then-act race.
    claim_race_delay_ms: int = 0
    # The MCP tools (`/mcp` and the agents the launcher starts) narrowed to these names; empty:
    # every tool the caller's role may see.
    mcp_tools: tuple[str, ...] = ()
    # Connection limits, enforced before any request reaches the application (server/limits.py).
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 5.0
    max_connections: int = 2000
    max_header_bytes: int = 64 * 1024
    # Several servers on one PostgreSQL database (README "Run several replicas"): this server's
    # name among them (default host name:port), how often it writes its heartbeat, and how old
    # another's heartbeat may grow before that server counts as gone and its agents' sessions
    # are marked failed.
    replica_id: str = ""
    # The address the other replicas use to reach this one (they forward an agent's stop and
    # output requests to the replica that launched it); default http://<HOST>:<PORT>.
    replica_url: str = ""
    replica_heartbeat_seconds: float = 5.0
    replica_timeout_seconds: float = 30.0
    # Replicas forward their changes to the one that leads the writes (write_lead.py):
    # MAESTRO_FORWARD_WRITES `auto` (when it runs on the same machine), `on` or `off` (each
    # writes itself); the lead listens on this port (0: any free one).
    forward_writes: str = "auto"
    write_lead_port: int = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        """Build settings from environment variables, then apply non-None overrides (flags)."""
        env = dict(os.environ if env is None else env)
        s = cls()
        raw_port = env.get("PORT", "3000") or "3000"
        s.port = _parse_port(raw_port)
        s.host = env.get("HOST") or "127.0.0.1"
        s.data_dir = expand_path(env.get("DATA_DIR") or "~/.maestro/data")
        s.session_dir = expand_path(env.get("SESSION_DIR") or "~/.maestro/sessions")
        s.skills_dir = expand_path(env.get("SKILLS_DIR") or "~/.agents-ui/maestro-skills")
        s.worktree_dir = expand_path(env.get("MAESTRO_WORKTREE_DIR") or "~/.maestro/worktrees")
        s.workspace_scan_seconds = _parse_positive(
            "MAESTRO_WORKSPACE_SCAN_SECONDS", env.get("MAESTRO_WORKSPACE_SCAN_SECONDS") or "5")
        s.debug = _bool(env.get("DEBUG"))
        s.log_level = (env.get("LOG_LEVEL") or ("debug" if s.debug else "info")).lower()
        s.database_type = (env.get("DATABASE_TYPE") or "filesystem").lower()
        s.database_url = env.get("DATABASE_URL") or ""
        s.manifest_generator = (env.get("MANIFEST_GENERATOR") or "server").lower()
        s.cli_path = env.get("MAESTRO_CLI_PATH") or "maestro"
        s.cors_enabled = _bool(env.get("CORS_ENABLED"), True)
        s.cors_origins = _split(env.get("CORS_ORIGINS"))
        s.cors_credentials = _bool(env.get("CORS_CREDENTIALS"))
        s.allowed_hosts = _split(env.get("MAESTRO_ALLOWED_HOSTS"))
        s.token = env.get("MAESTRO_TOKEN") or ""
        s.launcher = (env.get("MAESTRO_LAUNCHER") or "local").lower()
        s.agent_command = env.get("MAESTRO_AGENT_COMMAND") or ""
        s.agent = (env.get("MAESTRO_AGENT") or "").strip()
        names, problems = agent_env.parse_names(env.get("MAESTRO_AGENT_ENV"))
        if problems:
            raise ConfigError("MAESTRO_AGENT_ENV: " + "; ".join(problems))
        s.agent_env_names = names
        s.agent_env = agent_env.inherited(env, names)
        s.tmux_tmpdir = env.get("TMUX_TMPDIR") or ""
        s.max_agents = _parse_int("MAESTRO_MAX_AGENTS", env.get("MAESTRO_MAX_AGENTS") or "8", 1)
        s.stop_grace = _parse_seconds("MAESTRO_STOP_GRACE", env.get("MAESTRO_STOP_GRACE") or "5")
        s.tmux = _bool(env.get("MAESTRO_TMUX"), True)
        s.spawn_event_alias = _bool(env.get("MAESTRO_SPAWN_EVENT_ALIAS"))
        s.ws_queue_limit = _parse_int("MAESTRO_WS_QUEUE", env.get("MAESTRO_WS_QUEUE") or "100000",
                                      10)
        s.store_process = _bool(env.get("MAESTRO_STORE_PROCESS"), True)
        # Handed to the stores (the file store passes the first to its helper process).
        s.checkpoint_bytes = _parse_int("MAESTRO_CHECKPOINT_BYTES",
                                        env.get("MAESTRO_CHECKPOINT_BYTES") or "16777216", 4096)
        s.pipeline_min_ops = _parse_int("MAESTRO_PIPELINE_MIN_OPS",
                                        env.get("MAESTRO_PIPELINE_MIN_OPS") or "24", 1)
        s.max_entry_bytes = _parse_int("MAESTRO_MAX_ENTRY_BYTES",
                                       env.get("MAESTRO_MAX_ENTRY_BYTES") or "65536", 1024)
        s.ws_lag_seconds = _parse_int("MAESTRO_WS_LAG", env.get("MAESTRO_WS_LAG") or "10", 1)
        s.fast_paths = _bool(env.get("MAESTRO_FAST_PATHS"), True)
        s.ws_replay_events = _parse_int("MAESTRO_WS_REPLAY",
                                        env.get("MAESTRO_WS_REPLAY") or "10000", 1)
        s.log_retention = _parse_int("MAESTRO_LOG_RETENTION",
                                     env.get("MAESTRO_LOG_RETENTION") or "100000", 1000)
        s.log_poll_seconds = _parse_int("MAESTRO_LOG_POLL_MS",
                                        env.get("MAESTRO_LOG_POLL_MS") or "500", 10) / 1000
        s.node_env = (env.get("NODE_ENV") or "development").lower()
        s.claim_min_ttl = _parse_int("MAESTRO_CLAIM_MIN_TTL",
                                     env.get("MAESTRO_CLAIM_MIN_TTL") or "5", 1)
        s.claim_sweep_seconds = _parse_positive("MAESTRO_CLAIM_SWEEP_SECONDS",
                                                env.get("MAESTRO_CLAIM_SWEEP_SECONDS") or "1")
        s.heartbeat_seconds = _parse_positive("MAESTRO_HEARTBEAT_SECONDS",
                                              env.get("MAESTRO_HEARTBEAT_SECONDS") or "30")
        s.claim_race_delay_ms = _parse_int("MAESTRO_CLAIM_RACE_DELAY_MS",
                                           env.get("MAESTRO_CLAIM_RACE_DELAY_MS") or "0", 0)
        tools, problems = parse_tools(env.get("MAESTRO_MCP_TOOLS"))
        if problems:
            raise ConfigError("MAESTRO_MCP_TOOLS: " + problem_text(problems))
        s.mcp_tools = tools
        s.header_timeout = _parse_positive("MAESTRO_HEADER_TIMEOUT",
                                          env.get("MAESTRO_HEADER_TIMEOUT") or "10")
        s.body_timeout = _parse_positive("MAESTRO_BODY_TIMEOUT",
                                        env.get("MAESTRO_BODY_TIMEOUT") or "30")
        s.keepalive_timeout = _parse_positive("MAESTRO_KEEPALIVE_TIMEOUT",
                                             env.get("MAESTRO_KEEPALIVE_TIMEOUT") or "5")
        s.max_connections = _parse_int("MAESTRO_MAX_CONNECTIONS",
                                       env.get("MAESTRO_MAX_CONNECTIONS") or "2000", 1)
        s.max_header_bytes = _parse_int("MAESTRO_MAX_HEADER_BYTES",
                                        env.get("MAESTRO_MAX_HEADER_BYTES") or "65536", 1024,
                                        MAX_HEADER_BYTES_LIMIT)
        s.server_url = env.get("SERVER_URL") or ""
        s.replica_id = (env.get("MAESTRO_REPLICA_ID") or "").strip()
        s.replica_url = (env.get("MAESTRO_REPLICA_URL") or "").strip()
        s.replica_heartbeat_seconds = _parse_positive(
            "MAESTRO_REPLICA_HEARTBEAT_SECONDS",
            env.get("MAESTRO_REPLICA_HEARTBEAT_SECONDS") or "5")
        s.replica_timeout_seconds = _parse_positive(
            "MAESTRO_REPLICA_TIMEOUT_SECONDS", env.get("MAESTRO_REPLICA_TIMEOUT_SECONDS") or "30")
        s.forward_writes = _forward_mode(env.get("MAESTRO_FORWARD_WRITES"))
        s.write_lead_port = _parse_int("MAESTRO_WRITE_LEAD_PORT",
                                       env.get("MAESTRO_WRITE_LEAD_PORT") or "0", 0, 65535)
        for name, value in overrides.items():
            if value is None:
                continue
            if name in ("data_dir", "session_dir", "skills_dir", "worktree_dir"):
                value = expand_path(str(value))
            if name == "port":
                value = _parse_port(str(value))
            setattr(s, name, value)
        if not s.server_url:
            s.server_url = f"http://localhost:{s.port}"
        if not s.replica_id:
            s.replica_id = f"{socket.gethostname()}:{s.port}"
        if not s.replica_url:
            s.replica_url = default_replica_url(s.host, s.port)
        s.replica_url = s.replica_url.rstrip("/")
        s.server_url = s.server_url.rstrip("/")
        s.validate()
        return s

    def validate(self) -> None:
        _choice("LOG_LEVEL", self.log_level, LOG_LEVELS)
        _choice("DATABASE_TYPE", self.database_type, DATABASE_TYPES)
        _choice("MANIFEST_GENERATOR", self.manifest_generator, MANIFEST_GENERATORS)
        _choice("NODE_ENV", self.node_env, NODE_ENVS)
        _choice("MAESTRO_LAUNCHER", self.launcher, LAUNCHERS)
        if self.database_type == "postgres" and not self.database_url:
            raise ConfigError("DATABASE_TYPE=postgres needs DATABASE_URL")
        if len(self.replica_id) > 200 or not self.replica_id.isprintable():
            raise ConfigError("MAESTRO_REPLICA_ID must be at most 200 printable characters")
        parts = urlsplit(self.replica_url)
        if parts.scheme not in ("http", "https") or not parts.hostname \
                or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError("MAESTRO_REPLICA_URL must be http(s)://host[:port], the address "
                              f"other replicas reach this one at (got {self.replica_url!r})")
        if self.replica_timeout_seconds < 2 * self.replica_heartbeat_seconds:
            raise ConfigError(
                "MAESTRO_REPLICA_TIMEOUT_SECONDS must be at least twice "
                f"MAESTRO_REPLICA_HEARTBEAT_SECONDS ({self.replica_timeout_seconds} < 2 x "
                f"{self.replica_heartbeat_seconds}): a live server would be taken for gone")
        if not is_loopback_host(self.host) and not self.token:
            raise ConfigError(
                f"refusing to listen on {self.host} without a token: anyone who can reach it "
                "could read your data and start processes. Set MAESTRO_TOKEN to a long random "
                f"secret (MAESTRO_TOKEN=$({MAKE_TOKEN})) or bind to 127.0.0.1"
            )
        if not is_loopback_host(self.host) and len(self.token) < MIN_EXPOSED_TOKEN:
            raise ConfigError(
                f"refusing to listen on {self.host} with a {len(self.token)}-character "
                f"MAESTRO_TOKEN: a server others can reach needs at least {MIN_EXPOSED_TOKEN} "
                f"random characters, which cannot be guessed. Make one with: {MAKE_TOKEN}"
            )

    def describe(self) -> dict:
        """Settings safe to print: secrets are never included."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "token":
                value = "set" if value else "not set"
            elif f.name == "database_url":
                value = "set" if value else ""
            elif f.name == "agent_env":
                value = sorted(value)  # names only: the values may be keys
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def _split(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(p.strip().rstrip("/") for p in value.split(",") if p.strip())


def default_replica_url(host: str, port: int) -> str:
    """http://<HOST>:<PORT>; a wildcard bind address (all interfaces) becomes 127.0.0.1, which
    reaches this server from replicas on the same machine only."""
    host = host.strip().strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")


def _parse_port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"PORT must be a number between 1 and 65535 (got {raw!r})") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"PORT must be between 1 and 65535 (got {port})")
    return port


def _parse_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds (got {raw!r})") from None
    if not 0 <= value <= 3600:
        raise ConfigError(f"{name} must be between 0 and 3600 seconds (got {value})")
    return value


def _parse_positive(name: str, raw: str) -> float:
    """A number of seconds above 0 and at most an hour."""
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds (got {raw!r})") from None
    if not 0 < value <= 3600:
        raise ConfigError(f"{name} must be more than 0 and at most 3600 seconds (got {raw})")
    return value


def _forward_mode(raw: str | None) -> str:
    value = (raw or "auto").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return "on"
    if value in ("0", "false", "no", "off"):
        return "off"
    if value == "auto":
        return "auto"
    raise ConfigError(f"MAESTRO_FORWARD_WRITES must be auto, 1 or 0 (got {raw!r})")


def _parse_int(name: str, raw: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number (got {raw!r})") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum} (got {value})")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum} (got {value})")
    return value


# ------------------------------------------------------------------ outside the server
# The CLI, the agent wrapper and `maestro <role> init` read their few settings here too, so that
# this module stays the one reader of the environment. `environ` defaults to the process's.
def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def database_url(environ: Mapping[str, str] | None = None) -> str:
    """DATABASE_URL: the PostgreSQL database (`maestro import-data` copies into it, `maestro
    db` works on it)."""
    return _environ(environ).get("DATABASE_URL", "")


def replica_timeout_seconds(environ: Mapping[str, str] | None = None) -> float:
    """MAESTRO_REPLICA_TIMEOUT_SECONDS, for `maestro db status` (ConfigError if invalid)."""
    return _parse_positive("MAESTRO_REPLICA_TIMEOUT_SECONDS",
                           _environ(environ).get("MAESTRO_REPLICA_TIMEOUT_SECONDS") or "30")


def output_width(environ: Mapping[str, str] | None = None) -> int:
    """Width of the CLI's tables off a terminal: COLUMNS, and at least 160."""
    try:
        return max(int(_environ(environ).get("COLUMNS", "0")), 160)
    except ValueError:
        return 160


def no_color(environ: Mapping[str, str] | None = None) -> bool:
    """NO_COLOR set to anything but empty: the CLI prints no colours."""
    return bool(_environ(environ).get("NO_COLOR"))


def terminal_type(environ: Mapping[str, str] | None = None) -> str | None:
    """TERM of the terminal the agent wrapper runs in (None when unset or empty)."""
    return _environ(environ).get("TERM") or None


@dataclass(frozen=True)
class AgentInitSettings:
    """What `maestro <role> init` (spawn/agent.py) reads from the environment its launcher
    gave it (SPEC §12.2)."""

    manifest_path: str = ""  # MAESTRO_MANIFEST_PATH
    session_id: str | None = None  # MAESTRO_SESSION_ID
    followed: bool = False  # MAESTRO_LAUNCHER=local: the server's launcher follows the agent
    agent: str = "claude"  # MAESTRO_AGENT: claude, codex or a command line
    server_url: str = ""  # MAESTRO_API_URL, else MAESTRO_SERVER_URL ("" when neither)
    token: str | None = None  # MAESTRO_SESSION_TOKEN, else MAESTRO_TOKEN
    workspace_branch: str | None = None  # MAESTRO_WORKSPACE_BRANCH
    workspace_base: str = ""  # MAESTRO_WORKSPACE_BASE

    @property
    def workspace(self) -> dict | None:
        """The branch and base of the agent's own worktree, or None."""
        if not self.workspace_branch:
            return None
        return {"branch": self.workspace_branch, "baseRef": self.workspace_base}


def agent_init_settings(environ: Mapping[str, str] | None = None) -> AgentInitSettings:
    env = _environ(environ)
    return AgentInitSettings(
        manifest_path=env.get("MAESTRO_MANIFEST_PATH") or "",
        session_id=env.get("MAESTRO_SESSION_ID") or None,
        followed=env.get("MAESTRO_LAUNCHER") == "local",
        agent=(env.get("MAESTRO_AGENT") or "claude").strip(),
        server_url=env.get("MAESTRO_API_URL") or env.get("MAESTRO_SERVER_URL") or "",
        token=env.get("MAESTRO_SESSION_TOKEN") or env.get("MAESTRO_TOKEN") or None,
        workspace_branch=env.get("MAESTRO_WORKSPACE_BRANCH") or None,
        workspace_base=env.get("MAESTRO_WORKSPACE_BASE") or "",
    )
