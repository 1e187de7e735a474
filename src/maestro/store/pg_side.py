"""A connection of its own to the PostgreSQL store's database, for what every server of that
database shares beside the entities (session token digests, the servers' heartbeats): short
autocommit statements, each its own committed transaction, on the schema the store opened.

The store's own connection stays its committer's alone. One lock serialises the statements (they
come from the event loop and from worker threads); a broken connection is replaced once per
statement before the error is raised."""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

log = logging.getLogger("maestro.store")

CONNECT_TIMEOUT = 5


class SideConnection:
    def __init__(self, dsn: str, schema: str, purpose: str):
        self.dsn = dsn
        self.schema = schema
        self.purpose = purpose
        self._conn = None
        self._lock = threading.Lock()

    def table(self, name: str) -> str:
        """`name` qualified by the store's schema, quoted, for a statement's text."""
        from psycopg import sql

        return sql.Identifier(self.schema, name).as_string()

    def _connect(self):
        import psycopg

        # A database that goes silent (a network cut, a machine gone) breaks the connection
        # within about 20 s rather than the kernel's minutes: what it holds (the write lead's
        # lock) is then given up here as it is by the database.
        alive: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5,
                                 "keepalives_interval": 3, "keepalives_count": 3}
        if psycopg.pq.version() >= 120000:
            alive["tcp_user_timeout"] = 20000
        conn = psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
            application_name=f"maestro {self.purpose} pid {os.getpid()} on "
                             f"{socket.gethostname()}", **alive)
        conn.execute("SET synchronous_commit = on")
        return conn

    def execute(self, query: str, params: tuple | list = (), *,
                reconnect: bool = True) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction; its rows (empty when it returns none).
        `reconnect=False`: raise rather than use a new connection when this one broke (what
        the connection holds, a session-level lock, went with it)."""
        import psycopg

        with self._lock:
            for attempt in range(2):
                conn = self._conn
                if conn is None or conn.closed or conn.broken:
                    if conn is not None and not reconnect:
                        raise psycopg.OperationalError(f"{self.purpose}: the connection to "
                                                       "the database broke")
                    self._conn = conn = self._connect()
                try:
                    cur = conn.execute(query, params)
                    return cur.fetchall() if cur.description is not None else []
                except psycopg.OperationalError:
                    if attempt or not reconnect or not (conn.closed or conn.broken):
                        raise
                    log.warning("%s: the connection to the database broke; reconnecting",
                                self.purpose)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
