"""Where the CLI's context comes from (SPEC §12.1, §12.2): flags, then the environment, then
`.env` in the working directory, then `~/.maestro/config`, then defaults.

The config files are read, never copied into `os.environ`, so they only ever affect the
client commands (never `maestro serve`, never a child process)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SERVER = "http://localhost:3000"

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_dotenv(text: str) -> dict[str, str]:
    """Parse dotenv syntax: `KEY=value`, optional `export`, `#` comments, single or double
    quotes (double quotes understand `\\n`, `\\t`, `\\"`). Lines that do not parse are skipped."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            continue
        key, raw = match.group(1), match.group(2)
        if raw[:1] in ("'", '"') and raw.find(raw[0], 1) > 0:
            quote = raw[0]
            value = raw[1:raw.find(quote, 1)]
            if quote == '"':
                value = (value.replace("\\n", "\n").replace("\\t", "\t")
                         .replace('\\"', '"').replace("\\\\", "\\"))
        else:
            value = re.split(r"\s+#", raw, maxsplit=1)[0].strip()
        values[key] = value
    return values


def _read_dotenv(path: Path) -> dict[str, str]:
    try:
        return parse_dotenv(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return {}


class Environment:
    """The variables the CLI reads, with the name of the place each came from. The process
    environment wins over `.env`, which wins over `~/.maestro/config`."""

    def __init__(self, environ: dict[str, str] | None = None, cwd: Path | None = None,
                 home: Path | None = None):
        self.environ = dict(os.environ if environ is None else environ)
        cwd = cwd or Path.cwd()
        if home is None:
            home = Path(self.environ.get("HOME") or Path.home())
        self.layers: list[tuple[str, dict[str, str]]] = [
            ("environment", self.environ),
            (".env", _read_dotenv(cwd / ".env")),
            ("~/.maestro/config", _read_dotenv(home / ".maestro" / "config")),
        ]

    def lookup(self, *names: str) -> tuple[str | None, str | None]:
        """(value, source) of the first name set (non-empty) in the first layer that has one;
        `source` reads like `MAESTRO_PROJECT_ID (.env)`."""
        for layer, values in self.layers:
            for name in names:
                value = values.get(name)
                if value:
                    source = name if layer == "environment" else f"{name} ({layer})"
                    return value, source
        return None, None

    def get(self, *names: str, default: str | None = None) -> str | None:
        value, _ = self.lookup(*names)
        return default if value is None else value


def _int(value: str | None, default: int, minimum: int = 0) -> int:
    try:
        return max(minimum, int(value)) if value not in (None, "") else default
    except ValueError:
        return default


def _optional_int(value: str | None) -> int | None:
    """A whole number >= 0, or None when unset or not a number."""
    try:
        return max(0, int(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def split_ids(value: str | None) -> list[str]:
    """`a, b,,c` -> ["a", "b", "c"]."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@dataclass
class Overrides:
    """Values given as flags, either before the command (`maestro --json task list`) or after
    it (`maestro task list --json`); the later one wins."""

    json: bool = False
    server: str | None = None
    project: str | None = None
    session: str | None = None

    def merge(self, other: Overrides) -> Overrides:
        return Overrides(json=self.json or other.json, server=other.server or self.server,
                         project=other.project or self.project,
                         session=other.session or self.session)


@dataclass
class CliContext:
    """Everything a command needs to know about who it is and whom it talks to."""

    server: str = DEFAULT_SERVER
    server_source: str = "default"
    project: str | None = None
    project_source: str | None = None
    session: str | None = None
    session_source: str | None = None
    task_ids: list[str] = field(default_factory=list)
    task_ids_source: str | None = None
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    role: str = "worker"
    strategy: str = "simple"
    manifest_path: str | None = None
    json: bool = False
    # None: chosen by the command (see ApiClient); a number: MAESTRO_RETRIES / _DELAY say so.
    retries: int | None = None
    retry_delay_ms: int | None = None
    # Ride out a server restart: hook commands, and agents (a session without a terminal).
    patient: bool = False
    timeout_s: float = 30.0
    debug: bool = False
    env: Environment | None = field(default=None, repr=False)

    @property
    def ws_url(self) -> str:
        """The WebSocket address of the server (same host and port, SPEC §10.1)."""
        base = self.server
        if base.startswith("https://"):
            return "wss://" + base[len("https://"):] + "/"
        if base.startswith("http://"):
            return "ws://" + base[len("http://"):] + "/"
        return "ws://" + base + "/"


def normalize_server(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def resolve(overrides: Overrides, env: Environment | None = None) -> CliContext:
    """Build the context: a flag beats `MAESTRO_API_URL`, which beats `MAESTRO_SERVER_URL`
    (§12.1); a session token (`MAESTRO_SESSION_TOKEN`) beats the user's `MAESTRO_TOKEN`, so an
    agent acts with its own, narrower identity."""
    env = env or Environment()
    ctx = CliContext(env=env, json=overrides.json)
    if overrides.server:
        ctx.server, ctx.server_source = normalize_server(overrides.server), "--server"
    else:
        value, source = env.lookup("MAESTRO_API_URL", "MAESTRO_SERVER_URL")
        if value:
            ctx.server, ctx.server_source = normalize_server(value), source
    if overrides.project:
        ctx.project, ctx.project_source = overrides.project, "--project"
    else:
        ctx.project, ctx.project_source = env.lookup("MAESTRO_PROJECT_ID")
    if overrides.session:
        ctx.session, ctx.session_source = overrides.session, "--session"
    else:
        ctx.session, ctx.session_source = env.lookup("MAESTRO_SESSION_ID")
    raw_ids, ctx.task_ids_source = env.lookup("MAESTRO_TASK_IDS")
    ctx.task_ids = split_ids(raw_ids)
    ctx.token, ctx.token_source = env.lookup("MAESTRO_SESSION_TOKEN", "MAESTRO_TOKEN")
    ctx.role = (env.get("MAESTRO_ROLE") or "worker").strip().lower()
    ctx.strategy = (env.get("MAESTRO_STRATEGY") or "simple").strip().lower()
    ctx.manifest_path = env.get("MAESTRO_MANIFEST_PATH")
    ctx.retries = _optional_int(env.get("MAESTRO_RETRIES"))
    ctx.retry_delay_ms = _optional_int(env.get("MAESTRO_RETRY_DELAY"))
    ctx.timeout_s = _int(env.get("MAESTRO_API_TIMEOUT"), 30000, minimum=100) / 1000.0
    ctx.debug = _truthy(env.get("MAESTRO_DEBUG"))
    return ctx
