"""Agent identities: one bearer token per spawned session (SPEC §0.2, security issue).

A token looks like `mst.<sessionId>.<64 hex digits>`; only the SHA-256 of the whole token is kept, in
`SESSION_DIR/<sessionId>/token.sha256` (written atomically and fsynced before the agent gets the
token). A token is valid while its session exists and has not completed or failed. The user's own
`MAESTRO_TOKEN` is checked separately and always has full rights."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .ids import is_valid_client_id

log = logging.getLogger("maestro.identity")

PREFIX = "mst."
TOKEN_FILE = "token.sha256"
ENDED = ("completed", "failed")


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who is asking, when it is an agent: its session, project and role."""

    session_id: str
    project_id: str
    role: str

    @property
    def orchestrator(self) -> bool:
        return self.role == "orchestrator"


def _digest(token: bytes) -> str:
    return hashlib.sha256(token).hexdigest()


class TokenRegistry:
    def __init__(self, session_dir: Path, sessions):
        self.session_dir = Path(session_dir)
        # The service's session table: identities follow the live session record.
        self.sessions = sessions
        self._cache: dict[str, str] = {}

    def mint(self, session_id: str) -> str:
        """A new token for `session_id` (replacing any earlier one); the plain token is returned
        once and never stored."""
        if not is_valid_client_id(session_id):
            raise ValueError(f"session id {session_id!r} cannot carry a token")
        token = f"{PREFIX}{session_id}.{secrets.token_hex(32)}"
        folder = self.session_dir / session_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{TOKEN_FILE}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, _digest(token.encode()).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, folder / TOKEN_FILE)
        self._cache[session_id] = _digest(token.encode())
        return token

    def _stored_digest(self, session_id: str) -> str | None:
        cached = self._cache.get(session_id)
        if cached is not None:
            return cached
        try:
            value = (self.session_dir / session_id / TOKEN_FILE).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None
        self._cache[session_id] = value
        return value

    def identify(self, token: bytes) -> AgentIdentity | None:
        """The identity a presented token stands for, or None if it is not a live agent token."""
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            return None
        if not text.startswith(PREFIX) or len(text) > 400:
            return None
        session_id, sep, secret = text[len(PREFIX):].rpartition(".")
        if not sep or not secret or not is_valid_client_id(session_id):
            return None
        expected = self._stored_digest(session_id)
        if expected is None or not hmac.compare_digest(expected, _digest(token)):
            return None
        session = self.sessions.get(session_id)
        if session is None or session.get("status") in ENDED:
            return None
        metadata = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
        role = metadata.get("role") if metadata.get("role") == "orchestrator" else "worker"
        return AgentIdentity(session_id, session.get("projectId"), role)

    def alive(self, identity: AgentIdentity) -> bool:
        """Whether an identity established earlier (an open WebSocket) still holds."""
        if identity.session_id not in self._cache:
            return False
        session = self.sessions.get(identity.session_id)
        return session is not None and session.get("status") not in ENDED

    def on_commit(self, changes) -> None:
        """Revoke the token of every session that ended or was deleted in a commit, so that
        reopening or recreating a session never revives an old token."""
        for kind, session_id, value in changes:
            if kind == "session" and (value is None or value.get("status") in ENDED):
                if session_id in self._cache or (self.session_dir / session_id).is_dir():
                    self.revoke(session_id)

    def revoke(self, session_id: str) -> None:
        self._cache.pop(session_id, None)
        try:
            os.unlink(self.session_dir / session_id / TOKEN_FILE)
        except (FileNotFoundError, NotADirectoryError):
            pass
