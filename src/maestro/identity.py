"""Agent identities: one bearer token per spawned session (SPEC §0.2, security issue).

A token looks like `mst.<sessionId>.<64 hex digits>`; only the SHA-256 of the whole token is
kept, durably before the agent gets the token: in `SESSION_DIR/<sessionId>/token.sha256` on the
file store, in the table `maestro_session_tokens` on PostgreSQL, which every server of the
database reads (token_stores.py). A token is valid while its session exists, has not completed
or failed, and its token was never revoked. Revocation is part of the session itself: the change
that ends a spawned session also sets its `tokenRevokedAt`, in the same durable write on every
store, so no crash can bring a token back and reopening the session does not either; every
server refuses the token as soon as it holds that change of the session. The digest is removed
after that commit (the removal made durable), and at start-up every digest whose session is
ended, revoked or gone is removed. The user's own `MAESTRO_TOKEN` is checked separately and
always has full rights."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .ids import is_valid_client_id
from .token_stores import FileTokenStore, TokenStore
from .vocabulary import FINAL_SESSION_STATUSES

log = logging.getLogger("maestro.identity")

PREFIX = "mst."
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


def _session_of(token: bytes) -> str | None:
    """The session id an agent token names, or None when it is not shaped like one."""
    try:
        text = token.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text.startswith(PREFIX) or len(text) > 400:
        return None
    session_id, sep, secret = text[len(PREFIX):].rpartition(".")
    if not sep or not secret or not is_valid_client_id(session_id):
        return None
    return session_id


def _started_at(session: dict) -> int | None:
    """The session's `startedAt` (set once, when it is created) where it is a time in ms:
    what a digest may be bound to."""
    created = session.get("startedAt")
    return created if isinstance(created, int) and not isinstance(created, bool) else None


class TokenRegistry:
    """Mints tokens and tells who a presented token stands for. The digests are kept by a
    `TokenStore` (token_stores.py): files under SESSION_DIR, or a table every server of one
    PostgreSQL database shares; read through a cache."""

    def __init__(self, session_dir: Path, sessions, owner: str = "",
                 store: TokenStore | None = None):
        self.session_dir = Path(session_dir)
        # The service's session table: identities follow the live session record.
        self.sessions = sessions
        self.store: TokenStore = store if store is not None else FileTokenStore(session_dir)
        # session id -> (digest, the session's startedAt, monotonic time it was read or written)
        self._cache: dict[str, tuple[str, int | None, float]] = {}
        self.bind(owner)

    def use(self, store: TokenStore) -> int:
        """Keep the digests in `store` from now on (before the server answers requests). The
        digests of live sessions the earlier store holds are copied over, so that agents
        started before (e.g. by a server that kept them in files) keep working; returns how
        many were."""
        earlier, self.store = self.store, store
        self._cache.clear()
        copied = 0
        for session in list(self.sessions.rows.values()):
            if not token_live(session) or not may_hold_token(session):
                continue
            started = _started_at(session)
            digest = earlier.get(session["id"], started)
            if digest is not None and store.get(session["id"], started) is None:
                store.put(session["id"], digest, started)
                copied += 1
        if copied:
            log.info("copied %d token digest(s) of live sessions to the shared store", copied)
        return copied

    def bind(self, store_location: str) -> None:
        """Name the data this server serves (its data directory or database), see the
        store's `bind`."""
        self.store.bind(store_location)

    def mint(self, session: dict) -> str:
        """A new token for `session` (replacing any earlier one); the plain token is returned
        once and never stored."""
        session_id = session.get("id")
        if not isinstance(session_id, str) or not is_valid_client_id(session_id):
            raise ValueError(f"session id {session_id!r} cannot carry a token")
        token = f"{PREFIX}{session_id}.{secrets.token_hex(32)}"
        digest = _digest(token.encode())
        created = _started_at(session)
        self.store.put(session_id, digest, created)
        self._cache[session_id] = (digest, created, time.monotonic())
        return token

    def _stored_digest(self, session: dict, fresh: bool = False) -> str | None:
        """The session's digest: from the cache while it may be trusted, else from the store
        (`fresh`: from the store in any case)."""
        session_id, created = session["id"], _started_at(session)
        cached = self._cache.get(session_id)
        ttl = self.store.cache_seconds
        if cached is not None and not fresh and cached[1] == created \
                and (ttl is None or time.monotonic() - cached[2] < ttl):
            return cached[0]
        digest = self.store.get(session_id, created)
        if digest is None:
            self._cache.pop(session_id, None)
            return None
        self._cache[session_id] = (digest, created, time.monotonic())
        return digest

    def awaits_session(self, token: bytes) -> bool:
        """Whether `token` is shaped like an agent token of a session this server does not
        hold (yet: another server of the database may have just created it)."""
        session_id = _session_of(token)
        return session_id is not None and self.sessions.get(session_id) is None

    def identify(self, token: bytes) -> AgentIdentity | None:
        """The identity a presented token stands for, or None if it is not a live agent token."""
        session_id = _session_of(token)
        if session_id is None:
            return None
        # The session first: a token of no live session never costs a read of the store.
        session = self._live_session(session_id)
        if session is None:
            return None
        presented = _digest(token)
        expected = self._stored_digest(session)
        if expected is not None and not hmac.compare_digest(expected, presented) \
                and self.store.cache_seconds is not None:
            # Another server may have minted a new token for the session since it was read.
            expected = self._stored_digest(session, fresh=True)
        if expected is None or not hmac.compare_digest(expected, presented):
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
                if session_id in self._cache or self.store.held(session_id):
                    self.revoke(session_id)

    def revoke(self, session_id: str) -> None:
        """Forget a session's token: its digest is removed, durably."""
        self._cache.pop(session_id, None)
        self.store.remove(session_id)

    def sweep(self) -> int:
        """At start-up: remove the digest of every session whose token no longer stands (ended,
        revoked or gone while the server was away, or before a removal reached the disk).
        Returns how many were removed."""
        removed = self.store.sweep(lambda sid: self._live_session(sid) is not None,
                                   lambda sid: self.sessions.get(sid) is not None)
        for sid in [sid for sid in self._cache if self._live_session(sid) is None]:
            self._cache.pop(sid, None)
        if removed:
            log.info("removed %d token digest(s) of ended or deleted sessions", removed)
        return removed
