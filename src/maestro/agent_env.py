"""Which variables an agent's environment may hold. The launcher builds it from nothing:

- basics a command-line program needs (PATH, HOME, locale, terminal, temporary folder, time zone,
  XDG folders, and PYTHONPATH so the agent's `maestro` is the server's own);
- what an agent CLI needs to log in and reach its API: ANTHROPIC_*, CLAUDE_*, OPENAI_*, CODEX_*,
  proxy settings and CA bundles;
- the MAESTRO_* values Maestro hands it (SPEC §9.5, its API URL and its own session token);
- the spawn request's `env`;
- the names the user lists in MAESTRO_AGENT_ENV (`NAME` or a `PREFIX*` pattern).

Never, whoever asks: the server's database settings (DATABASE_URL, PG*), its folders (DATA_DIR,
SESSION_DIR), the user's MAESTRO_TOKEN, or any other server setting (MAESTRO_*). Pure functions;
config.py applies them to the server's environment."""

from __future__ import annotations

import re

_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")
BASIC_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TMPDIR", "TZ",
    "PYTHONPATH",
    *_PROXIES, *(p.lower() for p in _PROXIES),
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE",
})
BASIC_PREFIXES = ("LC_", "XDG_", "ANTHROPIC_", "CLAUDE_", "OPENAI_", "CODEX_")

NEVER_NAMES = frozenset({"DATABASE_URL", "DATA_DIR", "SESSION_DIR", "MAESTRO_TOKEN"})
NEVER_PREFIXES = ("PG",)

# The CLI's own tuning, which an agent's `maestro` commands may use: the only MAESTRO_* names a
# user may pass on from the server's environment. Every other MAESTRO_* name there is a server
# setting (or the user's own token) and stays with the server.
CLIENT_SETTINGS = frozenset({"MAESTRO_RETRIES", "MAESTRO_RETRY_DELAY", "MAESTRO_API_TIMEOUT",
                             "MAESTRO_DEBUG"})
# What spawn writes into a session's env (SPEC §9.5, plus the request's `agent` and, for a
# session with its own worktree, its branch and base).
SESSION_SETTINGS = frozenset({
    "MAESTRO_SESSION_ID", "MAESTRO_PROJECT_ID", "MAESTRO_TASK_IDS", "MAESTRO_SERVER_URL",
    "MAESTRO_SKILLS", "MAESTRO_MANIFEST_PATH", "MAESTRO_STRATEGY", "MAESTRO_AGENT",
    "MAESTRO_WORKSPACE_BRANCH", "MAESTRO_WORKSPACE_BASE",
})

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")


def never_passed(name: str) -> bool:
    """Names an agent's environment never holds: the server's database, folders and token."""
    return name in NEVER_NAMES or name.startswith(NEVER_PREFIXES)


def maestro_name(name: str) -> bool:
    return name.startswith("MAESTRO_")


def parse_names(raw: str | None) -> tuple[tuple[str, ...], list[str]]:
    """MAESTRO_AGENT_ENV: comma-separated names, each `NAME` or `PREFIX*`. Returns the entries
    and the problems found (a malformed entry, or a name that is never passed on)."""
    entries: list[str] = []
    problems: list[str] = []
    for part in (raw or "").split(","):
        item = part.strip()
        if not item:
            continue
        if not _PATTERN.match(item):
            problems.append(f"{item!r} is not a variable name or a PREFIX* pattern")
        elif not item.endswith("*") and (never_passed(item) or (
                maestro_name(item) and item not in CLIENT_SETTINGS)):
            problems.append(f"{item} is never handed to agents")
        else:
            entries.append(item)
    return tuple(dict.fromkeys(entries)), problems


def _listed(name: str, entries: tuple[str, ...]) -> bool:
    for entry in entries:
        if entry.endswith("*"):
            if name.startswith(entry[:-1]):
                return True
        elif name == entry:
            return True
    return False


def inherited(environ: dict[str, str], extra: tuple[str, ...] = ()) -> dict[str, str]:
    """The part of the server's environment an agent inherits: the basics, the agent vendors'
    settings and the names in `extra` (MAESTRO_AGENT_ENV), never a forbidden one."""
    out: dict[str, str] = {}
    for name, value in environ.items():
        if never_passed(name) or "\0" in value:
            continue
        if maestro_name(name):
            if name in CLIENT_SETTINGS and _listed(name, extra):
                out[name] = value
            continue
        if name in BASIC_NAMES or name.startswith(BASIC_PREFIXES) or _listed(name, extra):
            out[name] = value
    return out


def request_problem(name: str, value) -> str | None:
    """Why a spawn request's `env` entry is refused, or None when the agent may get it."""
    if not isinstance(value, str):
        return f"env.{name} must be a string"
    if not ENV_NAME.match(name):
        return f"{name!r} is not a variable name"
    if never_passed(name):
        return f"{name} is never handed to agents"
    if maestro_name(name):
        return f"{name}: MAESTRO_* variables are set by Maestro"
    if "\0" in value:
        return f"env.{name} must not contain NUL characters"
    return None


def from_session(env) -> dict[str, str]:
    """The entries of a session's `env` an agent gets: the MAESTRO_* values spawn wrote (§9.5)
    and the request's own variables; anything else (a token, a server setting, a forbidden
    name, a malformed entry) is left out."""
    if not isinstance(env, dict):
        return {}
    out: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not isinstance(value, str):
            continue
        if maestro_name(name):
            if name in SESSION_SETTINGS and "\0" not in value:
                out[name] = value
        elif request_problem(name, value) is None:
            out[name] = value
    return out
