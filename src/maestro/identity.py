"""Agent identities: one bearer token per spawned session (SPEC §0.2, security issue).

A token looks like `mst.<sessionId>.<64 hex digits>`; only the SHA-256 of the whole token is kept, in
`SESSION_DIR/<sessionId>/token.sha256` (written atomically and fsynced before the agent gets the
token). A token is valid while its session exists, has not completed or failed, and its token was
never revoked. Revocation is part of the session itself: the change that ends a spawned session
also sets its `tokenRevokedAt`, in the same durable write on every store, so no crash can bring a
token back and reopening the session does not either. The digest file is removed after that
commit (the removal made durable), and at start-up every digest whose session is ended, revoked
or gone is removed. The user's own `MAESTRO_TOKEN` is checked separately and always has full
rights."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .ids import is_valid_client_id
from .vocabulary import FINAL_SESSION_STATUSES

log = logging.getLogger("maestro.identity")

PREFIX = "mst."
TOKEN_FILE = "token.sha256"
REVOKED_FIELD = "tokenRevokedAt"


def token_live(session: dict | None) -> bool:
    """Whether a session's token still stands: the session exists, has not ended, and its token
    was never revoked. The one rule every token check uses."""
    return session is not None and session.get("status") not in FINAL_SESSION_STATUSES \
        and not session.get(REVOKED_FIELD)


def may_hold_token(session: dict) -> bool:
    """Spawned sessions are the ones handed a token (spawn always records `spawnSource`)."""
    metadata = session.get("metadata")
    return isinstance(metadata, dict) and "spawnSource" in metadata


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
    def __init__(self, session_dir: Path, sessions, owner: str = ""):
        self.session_dir = Path(session_dir)
        # The service's session table: identities follow the live session record.
        self.sessions = sessions
        self._cache: dict[str, str] = {}
        self.owner = ""
        self.bind(owner)

    def bind(self, store_location: str) -> None:
        """Name the data this server serves (its data directory or database). Each digest file
        records it, so that servers sharing one SESSION_DIR never accept nor remove each
        other's tokens."""
        self.owner = hashlib.sha256(store_location.encode()).hexdigest()[:16] \
            if store_location else ""

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
            os.write(fd, f"{_digest(token.encode())}\n{self.owner}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, folder / TOKEN_FILE)
        self._cache[session_id] = _digest(token.encode())
        return token

    def _read(self, folder: Path) -> tuple[str, str | None] | None:
        """The digest in a session folder and the server it was minted by (None: a file written
        before digests named their server)."""
        try:
            fields = (folder / TOKEN_FILE).read_text().split()
        except (OSError, UnicodeDecodeError):
            return None
        if not fields:
            return None
        return fields[0], fields[1] if len(fields) > 1 else None

    def _mine(self, owner: str | None) -> bool:
        return owner is None or owner == self.owner

    def _stored_digest(self, session_id: str) -> str | None:
        cached = self._cache.get(session_id)
        if cached is not None:
            return cached
        found = self._read(self.session_dir / session_id)
        if found is None or not self._mine(found[1]):
            return None
        self._cache[session_id] = found[0]
        return found[0]

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
        session = self._live_session(session_id)
        if session is None:
            return None
        metadata = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
        role = metadata.get("role") if metadata.get("role") == "orchestrator" else "worker"
        return AgentIdentity(session_id, session.get("projectId"), role)

    def _live_session(self, session_id: str) -> dict | None:
        """The session a token stands for, or None when its token no longer stands."""
        session = self.sessions.get(session_id)
        return session if token_live(session) else None

    def alive(self, identity: AgentIdentity) -> bool:
        """Whether an identity established earlier (an open WebSocket) still holds."""
        return identity.session_id in self._cache \
            and self._live_session(identity.session_id) is not None

    def on_commit(self, changes) -> None:
        """Remove the digest of every session that ended, was revoked or was deleted in a
        commit (the commit itself already made the token unusable)."""
        for kind, session_id, value in changes:
            if kind == "session" and not token_live(value):
                if session_id in self._cache or (self.session_dir / session_id).is_dir():
                    self.revoke(session_id)

    def revoke(self, session_id: str) -> None:
        """Forget a session's token: its digest is removed, durably."""
        self._cache.pop(session_id, None)
        folder = self.session_dir / session_id
        try:
            os.unlink(folder / TOKEN_FILE)
        except (FileNotFoundError, NotADirectoryError):
            return
        _sync_dir(folder)

    def sweep(self) -> int:
        """At start-up: remove the digest of every session whose token no longer stands (ended,
        revoked or gone while the server was away, or before a removal reached the disk).
        Returns how many were removed."""
        removed = 0
        try:
            entries = list(os.scandir(self.session_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if self._live_session(entry.name) is not None or not entry.is_dir():
                continue
            found = self._read(Path(entry.path))
            if found is None:
                continue
            owner = found[1]
            # Another server's digest stays; so does an old unnamed one of a session this
            # server does not know.
            if owner != self.owner and (owner is not None or self.sessions.get(entry.name)
                                        is None):
                continue
            try:
                os.unlink(os.path.join(entry.path, TOKEN_FILE))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                log.warning("cannot remove the token digest of session %s: %s", entry.name, exc)
                continue
            self._cache.pop(entry.name, None)
            _sync_dir(Path(entry.path))
            removed += 1
        if removed:
            log.info("removed %d token digest(s) of ended or deleted sessions", removed)
        return removed


def _sync_dir(folder: Path) -> None:
    """Make a removal in `folder` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
