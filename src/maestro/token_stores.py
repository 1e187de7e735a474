"""Where the digests of agents' tokens are kept (see identity.py for the rules they serve).

`TokenStore` is the interface; `FileTokenStore` keeps one digest file per session under
SESSION_DIR (the store of a server on its data directory), `PostgresTokenStore` one row per
session in `maestro_session_tokens`, so that every server of one database accepts a token
minted by any of them."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger("maestro.identity")

TOKEN_FILE = "token.sha256"
# A digest whose session is unknown is removed by the start-up sweep of PostgreSQL only once it
# is this old: another server may have minted it for a session it is about to create.
UNKNOWN_SESSION_GRACE = "1 hour"


class TokenStore(Protocol):
    """The digests of agents' tokens, one per session. Every call is durable on return."""

    # How long a digest read may be trusted before it is read again (None: for good, since
    # this server is the only writer).
    cache_seconds: float | None

    def bind(self, store_location: str) -> None:
        """Name the data the server serves (its data directory or database)."""

    def put(self, session_id: str, digest: str, created_at: int | None) -> None:
        """Keep `digest` as the session's (replacing any earlier one); `created_at` is the
        session's `startedAt` (when it was created), which a store may bind the digest to."""

    def get(self, session_id: str, created_at: int | None) -> str | None:
        """The digest of the session (of that `startedAt`, where the store binds it), or
        None."""

    def held(self, session_id: str) -> bool:
        """Whether the session may have a digest here (cheap; False means surely none)."""

    def remove(self, session_id: str) -> None:
        """Forget the session's digest."""

    def sweep(self, live: Callable[[str], bool], known: Callable[[str], bool]) -> int:
        """Remove the digests of sessions whose token no longer stands (`live` false): of
        sessions that exist (`known`) at once, of unknown ones as the store's rules say.
        Returns how many were removed."""

    def close(self) -> None:
        """Release what the store holds (the server stops)."""


class FileTokenStore:
    """`SESSION_DIR/<sessionId>/token.sha256` (written atomically and fsynced). Each file also
    records the server it was minted by, so that servers sharing one SESSION_DIR never accept
    nor remove each other's tokens."""

    cache_seconds = None

    def __init__(self, session_dir: Path):
        self.session_dir = Path(session_dir)
        self.owner = ""

    def bind(self, store_location: str) -> None:
        self.owner = hashlib.sha256(store_location.encode()).hexdigest()[:16] \
            if store_location else ""

    def put(self, session_id: str, digest: str, created_at: int | None = None) -> None:
        folder = self.session_dir / session_id
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{TOKEN_FILE}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f"{digest}\n{self.owner}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, folder / TOKEN_FILE)

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

    def get(self, session_id: str, created_at: int | None = None) -> str | None:
        found = self._read(self.session_dir / session_id)
        if found is None or not (found[1] is None or found[1] == self.owner):
            return None
        return found[0]

    def held(self, session_id: str) -> bool:
        return (self.session_dir / session_id).is_dir()

    def remove(self, session_id: str) -> None:
        folder = self.session_dir / session_id
        try:
            os.unlink(folder / TOKEN_FILE)
        except (FileNotFoundError, NotADirectoryError):
            return
        _sync_dir(folder)

    def sweep(self, live: Callable[[str], bool], known: Callable[[str], bool]) -> int:
        removed = 0
        try:
            entries = list(os.scandir(self.session_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if live(entry.name) or not entry.is_dir():
                continue
            found = self._read(Path(entry.path))
            if found is None:
                continue
            owner = found[1]
            # Another server's digest stays; so does an old unnamed one of a session this
            # server does not know.
            if owner != self.owner and (owner is not None or not known(entry.name)):
                continue
            try:
                os.unlink(os.path.join(entry.path, TOKEN_FILE))
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                log.warning("cannot remove the token digest of session %s: %s", entry.name, exc)
                continue
            _sync_dir(Path(entry.path))
            removed += 1
        return removed

    def close(self) -> None:
        """Nothing held between calls."""


class PostgresTokenStore:
    """`maestro_session_tokens` (session_id, digest, session_started_at, created_at), through a
    connection of its own: a digest is committed before the agent gets its token, and read on a
    cache miss, so a token minted by another server is accepted at once.

    A digest is bound to its session's `startedAt` (set when it is created): the digest of a
    deleted session that a crash kept from being removed (the start-up sweep may keep it, see
    `sweep`) never stands for a session created again under the same id."""

    # A digest replaced by another server (a session launched again) is seen within this time.
    cache_seconds = 30.0

    def __init__(self, connection):
        self.db = connection  # store.pg_side.SideConnection
        self.table = connection.table("maestro_session_tokens")
        # Sessions whose digest this server removed: later changes of an ended session do
        # not delete it again.
        self._removed: set[str] = set()

    def bind(self, store_location: str) -> None:
        """The database is the data: nothing to name."""

    def put(self, session_id: str, digest: str, created_at: int | None) -> None:
        self.db.execute(
            f"INSERT INTO {self.table} (session_id, digest, session_started_at) "
            "VALUES (%s, %s, %s) ON CONFLICT (session_id) DO UPDATE SET "
            "digest = EXCLUDED.digest, session_started_at = EXCLUDED.session_started_at, "
            "created_at = now()", (session_id, digest, created_at))
        self._removed.discard(session_id)

    def get(self, session_id: str, created_at: int | None) -> str | None:
        rows = self.db.execute(
            f"SELECT digest FROM {self.table} WHERE session_id = %s "
            "AND session_started_at IS NOT DISTINCT FROM %s", (session_id, created_at))
        return rows[0][0] if rows else None

    def held(self, session_id: str) -> bool:
        return session_id not in self._removed

    def remove(self, session_id: str) -> None:
        self.db.execute(f"DELETE FROM {self.table} WHERE session_id = %s", (session_id,))
        if len(self._removed) > 100_000:
            self._removed.clear()
        self._removed.add(session_id)

    def sweep(self, live: Callable[[str], bool], known: Callable[[str], bool]) -> int:
        rows = self.db.execute(
            f"SELECT session_id, created_at < now() - interval '{UNKNOWN_SESSION_GRACE}' "
            f"FROM {self.table}")
        doomed = [sid for sid, old in rows if not live(sid) and (known(sid) or old)]
        if doomed:
            self.db.execute(f"DELETE FROM {self.table} WHERE session_id = ANY(%s)", (doomed,))
        return len(doomed)

    def close(self) -> None:
        self.db.close()


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
