"""PostgreSQL store: the same contract as the JSON-file store, kept in a database.

One table per kind (`maestro_projects`, `maestro_tasks`, `maestro_sessions`) holds each entity as
`json`, not `jsonb`: `json` keeps the text exactly as written, so key order, unknown keys and
numbers too large for a float round-trip verbatim (SPEC §4.9, §5.2). The lists that only grow
(timelines, session events) and the task-session links have tables of their own, so that a
change writes what changed rather than the whole entity (see pg_rows.py). The tables live in the
schema the connection string selects (`options=-csearch_path=...`), or the default one, and are
made and upgraded by the numbered migrations of pg_schema.py when the store opens.

A batch of records is one transaction (a commit with `synchronous_commit` on is durable) that
also appends the records to the log every replica follows (postgres_log.py): any number of
servers may use the same database and schema. When the connection breaks while committing, the
store reconnects and reads the log to tell whether the commit happened: a committed batch is
reported as such, an uncommitted one is retried once on the new connection.

Servers hold a shared session-level advisory lock keyed by the schema; what must have the schema
to itself (`maestro import-data`, `maestro db migrate`) takes it exclusively, and so is refused
while a server runs. The lock dies with the connection, so a reconnect takes it again."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import socket
import threading
import time
import zlib
from typing import Any

from .. import jsonio
from . import pg_rows, pg_schema, pg_writer, postgres_log
from .base import LoadResult, Op, StoreLockedError, SyncStore

log = logging.getLogger("maestro.store")

# First half of the advisory lock key ("MAES"); the second half is derived from the schema name.
LOCK_CLASS = 0x4D414553
# The same for the turn lock of servers that write at once (turns.py): "MAET".
TURN_CLASS = 0x4D414554
TABLES = {"project": "maestro_projects", "task": "maestro_tasks", "session": "maestro_sessions"}
META_TABLE = "maestro_meta"
DEFAULT_CONNECT_TIMEOUT = 10
# The log is trimmed to its retention at least every this many records (and when idle).
TRIM_EVERY = 1000
INSTALL_HINT = "pip install 'maestro[postgres]' (or: pip install 'psycopg[binary]>=3.1')"


class DatabaseUnavailableError(RuntimeError):
    """The database cannot be used: no driver, a bad connection string, or no connection."""


_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*):[^\s/]*@", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str, password: str | None = None) -> str:
    """`text` with any password of a connection string masked (URL or key=value form)."""
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    text = _KEYWORD_PASSWORD.sub(r"\1***", text)
    if password:
        text = text.replace(password, "***")
    return text


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def _psycopg():
    try:
        import psycopg
    except ImportError as exc:
        raise DatabaseUnavailableError(
            f"DATABASE_TYPE=postgres needs the psycopg driver, which is not installed ({exc}); "
            f"install it with: {INSTALL_HINT}") from None
    return psycopg


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _prefer_lz4(conn) -> None:
    """Values this connection writes that PostgreSQL compresses (over ~2 KB: a task with a long
    description, a session with large metadata, a long timeline entry) are compressed with
    lz4 rather than the default pglz, as the log's records already are (migration 0005):
    18-22 against 26 µs of the database's CPU to insert a 3 KB JSON text, for ~15% more
    bytes. Where the server has no lz4 (built without it, or older than 14) the default
    stays."""
    psycopg = _psycopg()
    try:
        conn.execute("SET default_toast_compression = lz4")
    except psycopg.Error:
        pass


def _run_text(conn, text: bytes) -> None:
    """Run an SQL text of several statements in one round trip, as one implicit transaction
    (libpq's PQexec, which releases the interpreter lock while it waits); raise the psycopg
    error of a statement refused or of a broken connection. Without psycopg's cursor (made
    anew for every `execute`), a call costs the writer about half the CPU (a third less of
    its CPU per patch, where batches are small)."""
    psycopg = _psycopg()
    pq = psycopg.pq
    with conn.lock:
        result = conn.pgconn.exec_(text)
    status = result.status
    if status == pq.ExecStatus.FATAL_ERROR:
        raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
    if status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK,
                      pq.ExecStatus.EMPTY_QUERY):
        raise psycopg.OperationalError("unexpected result of a batch: "
                                       f"{pq.ExecStatus(status).name}")


def _project_id(op: Op) -> str | None:
    pid = op.value.get("projectId") if op.value is not None else op.project_id
    return pid if isinstance(pid, str) else None


class PostgresStore(SyncStore):
    name = "postgres"
    # Updates come as deltas (see Op.delta), so that an append writes only its new rows.
    wants_deltas = True
    # Batches come with their change requests, recorded in the log (postgres_log.py).
    keeps_log = True

    def __init__(self, dsn: str, writer_process: bool = False, pipeline_min_ops: int = 24):
        """`writer_process`: once loaded, batches are written by a helper process
        (pg_writer.py) rather than a thread of this one (a server's choice);
        `pipeline_min_ops`: see Store.pipeline_min_ops (MAESTRO_PIPELINE_MIN_OPS)."""
        self.dsn = dsn
        self._use_writer = writer_process
        self.pipeline_min_ops = pipeline_min_ops
        self._proxy: pg_writer.WriterProxy | None = None
        self._params: dict[str, Any] | None = None
        self._password: str | None = None
        self._conn = None
        self.schema: str | None = None
        self._lock_key: tuple[int, int] | None = None
        self.reconnects = 0
        self.quarantined: list[dict] = []
        self._last_error: str | None = None
        # Sequence number of a transaction whose commit a broken connection left in doubt.
        self._interrupted: int | None = None
        # The turn lock's key while this server holds it (take_turn).
        self._turn_key: tuple[int, int] | None = None
        self.restart_needed = False
        self.shapes = pg_rows.Shapes()
        # In the writer process: the record of the log the link rows in `shapes` stand at.
        self.links_seq = 0
        # Writer processes started anew after one died (renew_writer), and what keeps a new
        # one from being put in place once the store closes.
        self.writer_restarts = 0
        self._swap = threading.Lock()
        self._closing = False
        self._statements: pg_rows.Statements | None = None
        self._writer: tuple[Any, pg_rows.Writer] | None = None
        self.schema_version: int | None = None
        # The log: the last record and event this store's server has applied, its own name
        # in the records it writes, and how many records are kept for replicas behind.
        self.log_head = 0
        self.log_events = 0
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.log_retention = 100_000
        self._trimmed_at = 0
        self._log: postgres_log.Statements | None = None

    # ----------------------------------------------------------------- connecting
    @property
    def location(self) -> str:
        """The database as a URL without its password, for messages and /health."""
        params = self._parse()
        info = getattr(self._conn, "info", None) if self._conn is not None else None
        user = params.get("user") or (info.user if info else "") or ""
        host = params.get("host") or (info.host if info else "") or "localhost"
        port = params.get("port") or (info.port if info else "") or "5432"
        dbname = params.get("dbname") or (info.dbname if info else "") or user
        where = f"postgresql://{user + '@' if user else ''}{host}:{port}/{dbname}"
        return f"{where} (schema {self.schema})" if self.schema else where

    def _parse(self) -> dict[str, Any]:
        if self._params is None:
            psycopg = _psycopg()
            try:
                params = psycopg.conninfo.conninfo_to_dict(self.dsn)
            except psycopg.Error as exc:
                raise DatabaseUnavailableError(
                    "DATABASE_URL is not a valid PostgreSQL connection string: "
                    + redact(_first_line(exc))
                ) from None
            self._password = params.pop("password", None)
            self._params = params
        return self._params

    def _connect(self):
        """A new autocommit connection with durable commits, or DatabaseUnavailableError."""
        psycopg = _psycopg()
        params = self._parse()
        extra: dict[str, Any] = {}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT
        if "application_name" not in params:
            extra["application_name"] = f"maestro pid {os.getpid()} on {socket.gethostname()}"
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, **extra)
        except psycopg.Error as exc:
            first = _first_line(exc)
            raise DatabaseUnavailableError(
                f"cannot connect to the PostgreSQL database {self.location}: "
                f"{redact(first, self._password)}") from None
        try:
            conn.execute("SET synchronous_commit = on")
            _prefer_lz4(conn)
            encoding = conn.execute("SHOW server_encoding").fetchone()[0]
            if encoding != "UTF8":
                # Entities hold any Unicode text; another encoding would refuse or alter it.
                raise DatabaseUnavailableError(
                    f"the PostgreSQL database {self.location} uses the {encoding} encoding; "
                    "Maestro needs a UTF8 database (CREATE DATABASE ... ENCODING 'UTF8')")
            if conn.execute("SHOW fsync").fetchone()[0] != "on":
                log.warning("the PostgreSQL server runs with fsync=off: committed changes may be "
                            "lost if its machine crashes")
        except BaseException:
            conn.close()
            raise
        return conn

    def take_lock(self) -> None:
        """Connect and take exclusive ownership of the schema, or raise at once:
        StoreLockedError when another server holds it, DatabaseUnavailableError otherwise."""
        if self._conn is not None:
            return
        psycopg = _psycopg()
        conn = self._connect()
        try:
            self._lock(conn)
            self._migrate(conn)
        except pg_schema.SchemaAheadError as exc:
            conn.close()
            raise DatabaseUnavailableError(str(exc)) from None
        except psycopg.Error as exc:
            conn.close()
            first = _first_line(exc)
            raise DatabaseUnavailableError(
                f"cannot prepare the tables in {self.location}: "
                f"{redact(first, self._password)}") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _connect_locked(self):
        """A new connection holding the schema's shared lock (see _lock)."""
        conn = self._connect()
        try:
            self._lock(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _lock(self, conn) -> None:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        if schema is None:
            schema = self._create_schema(conn)
        self.schema = schema
        self._take_owner(conn, shared=True)

    def _take_owner(self, conn, shared: bool = False) -> None:
        """The schema's lock on `conn` (`shared`: a server's), or StoreLockedError naming a
        holder."""
        key = (_signed32(LOCK_CLASS), _signed32(zlib.crc32(self.schema.encode())))
        take = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        if conn.execute(f"SELECT {take}(%s, %s)", key).fetchone()[0]:
            self._shared = shared
            self._lock_key = key
            return
        row = conn.execute(
            "SELECT a.application_name, a.client_addr FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.classid::int = %s AND l.objid::int = %s AND l.objsubid = 2 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            key).fetchone()
        holder = ""
        if row is not None and row[0]:
            holder = f" ({row[0]}{', from ' + str(row[1]) if row[1] else ''})"
        raise StoreLockedError(
            f"the PostgreSQL database {self.location} is in use by another Maestro "
            f"server{holder}; stop it first or start this one with another database or schema")

    def _create_schema(self, conn) -> str:
        """Create the first schema of the search path when none of it exists yet."""
        from psycopg import sql

        path = conn.execute("SHOW search_path").fetchone()[0]
        names = [n.strip() for n in path.split(",") if n.strip() and n.strip() != '"$user"']
        if not names:
            raise DatabaseUnavailableError(
                f"the search_path of {self.location} names no schema to create the tables in")
        name = names[0]
        if name.startswith('"') and name.endswith('"'):
            name = name[1:-1].replace('""', '"')
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))
        except _psycopg().errors.UniqueViolation:
            pass  # made by another process at the same moment
        log.info("created schema %s", name)
        return conn.execute("SELECT current_schema()").fetchone()[0] or name

    def _table(self, kind_or_name: str):
        from psycopg import sql

        name = TABLES.get(kind_or_name, kind_or_name)
        return sql.Identifier(self.schema, name)

    # ----------------------------------------------------------------- opening
    def _migrate(self, conn) -> None:
        """Bring the tables to the layout this code writes (see pg_schema.py)."""
        pg_schema.migrate(conn, self.schema, self.location)
        self.schema_version = pg_schema.latest_version()
        self._statements = pg_rows.Statements(self.schema)
        self._log = postgres_log.Statements(self.schema)

    def run_migrations(self) -> tuple[int, list[pg_schema.Migration]]:
        """`maestro db migrate`: bring the schema to the latest version (made if missing) and
        return (the version now, the migrations applied here). Refused while a server holds
        the schema (servers migrate when they start); raises StoreLockedError, or
        DatabaseUnavailableError for a database that cannot be used or is ahead of this code."""
        return self._with_schema(lambda conn: pg_schema.migrate(
            conn, self.schema, self.location, may_write=lambda: self._take_owner(conn)))

    def schema_status(self) -> int:
        """`maestro db status`: the version the schema is at (0: no tables yet)."""
        return self._with_schema(lambda conn: None, create=False)[0]

    def replicas_status(self) -> dict[str, Any]:
        """`maestro db status`: the shared log's head and the servers that joined this schema
        (`maestro_replicas`), each with its heartbeat's age on the database's clock and who
        took it over, if anyone; empty before the layout has them."""
        from psycopg import sql

        def read(conn) -> dict[str, Any]:
            def exists(table: str) -> bool:
                return conn.execute("SELECT to_regclass(%s)", (
                    sql.Identifier(self.schema, table).as_string(conn),)).fetchone()[0] \
                    is not None

            out: dict[str, Any] = {"logHead": None, "replicas": []}
            if exists(META_TABLE) and exists(postgres_log.LOG_TABLE):
                row = conn.execute(sql.SQL("SELECT value FROM {} WHERE name = 'log_seq'").format(
                    sql.Identifier(self.schema, META_TABLE))).fetchone()
                out["logHead"] = row[0] if row else None
            if exists("maestro_replicas"):
                out["replicas"] = [
                    {"id": rid, "url": url, "pid": pid, "heartbeatAgeSeconds": round(age, 1),
                     "takenOverBy": by}
                    for rid, url, pid, age, by in conn.execute(sql.SQL(
                        "SELECT replica_id, url, pid, "
                        "extract(epoch FROM clock_timestamp() - heartbeat_at)::float8, "
                        "taken_over_by FROM {} ORDER BY replica_id").format(
                        sql.Identifier(self.schema, "maestro_replicas")))]
            if exists("maestro_write_lead"):
                from ..write_lead import TABLE, lock_key

                classid, objid = (k & 0xFFFFFFFF for k in lock_key(self.schema))
                row = conn.execute(sql.SQL(
                    "SELECT replica_id, address, "
                    "extract(epoch FROM clock_timestamp() - since)::float8, "
                    "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database()) "
                    "AND classid = %s::oid AND objid = %s::oid AND objsubid = 2) "
                    "FROM {}").format(sql.Identifier(self.schema, TABLE)),
                    (classid, objid)).fetchone()
                out["writeLead"] = None if row is None else {
                    "id": row[0], "address": row[1], "sinceSeconds": round(row[2], 1),
                    "held": row[3]}
            return out

        version, found = self._with_schema(read, create=False)
        return found if version else {"logHead": None, "replicas": []}

    def _with_schema(self, action, create: bool = True):
        psycopg = _psycopg()
        conn = self._connect()
        try:
            schema = conn.execute("SELECT current_schema()").fetchone()[0]
            if schema is None and not create:
                return 0, None
            self.schema = schema if schema is not None else self._create_schema(conn)
            done = action(conn)
            return pg_schema.current_version(conn, self.schema), done
        except pg_schema.SchemaAheadError as exc:
            raise DatabaseUnavailableError(str(exc)) from None
        except psycopg.Error as exc:
            raise DatabaseUnavailableError(
                f"cannot migrate the tables in {self.location}: "
                f"{redact(_first_line(exc), self._password)}") from None
        finally:
            conn.close()  # releases every lock taken

    def open(self) -> LoadResult:
        self.take_lock()
        # The writer process boots (a Python start-up) while this one loads the tables.
        booting = pg_writer.spawn() if self._use_writer and self._proxy is None else None
        try:
            result = self._load()
        except BaseException:
            if booting is not None:
                booting.close()
            raise
        if booting is not None:
            self._proxy = pg_writer.WriterProxy.hand_over(self, booting)
            if self._proxy is not None:
                # The link rows are the writer process's from now on (it plans the batches);
                # this process keeps only which lists are still inline (to describe them).
                self.shapes = pg_rows.Shapes(inline=self.shapes.inline)
        return result

    def _load(self) -> LoadResult:
        conn = self._conn
        result = LoadResult()
        state: dict[str, dict[str, dict]] = {kind: {} for kind in TABLES}
        from psycopg import sql

        self.shapes = pg_rows.Shapes()
        # One snapshot: the rows exactly as the log's head left them.
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self.log_head, self.log_events = conn.execute(self._log.head).fetchone()
            for kind in TABLES:
                rows = conn.execute(sql.SQL("SELECT id, data::text FROM {} ORDER BY id").format(
                    self._table(kind))).fetchall()
                for row_id, text in rows:
                    value = self._decode_row(kind, row_id, text)
                    if value is not None:
                        state[kind][row_id] = value
                pg_rows.load_lists(conn, self._statements, kind, state[kind], self.shapes)
        result.projects = list(state["project"].values())
        result.tasks = list(state["task"].values())
        result.sessions = list(state["session"].values())
        result.quarantined = list(self.quarantined)
        log.info("PostgreSQL store: %s", self.location)
        return result

    def _decode_row(self, kind: str, row_id: str, text: str) -> dict | None:
        """The entity of one row, or None (listed as quarantined, left in place) when the row
        does not hold an object whose id is the row's id."""
        try:
            value = jsonio.loads(text)
            if not isinstance(value, dict) or value.get("id") != row_id:
                raise ValueError("not a JSON object whose id is the row's id")
        except ValueError as exc:
            entry = {"table": TABLES[kind], "id": row_id, "reason": str(exc)}
            self.quarantined.append(entry)
            log.error("unreadable row %s in %s.%s (left in place, not loaded): %s", row_id,
                      self.schema, TABLES[kind], exc)
            return None
        return value

    def attach_writer(self, init: dict) -> None:
        """In the writer process (pg_writer.py): connect and take the schema's shared lock
        like the server that loaded it, and take over its log position and link rows."""
        conn = self._connect_locked()
        if self.schema != init["schema"]:
            conn.close()
            raise DatabaseUnavailableError(
                f"the writer process sees schema {self.schema}, the server {init['schema']}")
        self._conn = conn
        self.schema_version = pg_schema.latest_version()
        self._statements = pg_rows.Statements(self.schema)
        self._log = postgres_log.Statements(self.schema)
        self.origin = init["origin"]
        self.log_retention = int(init["retention"])
        self.shapes = pg_rows.Shapes(
            links={(k, i, f): (ids, positions) for k, i, f, ids, positions
                   in init.get("links") or ()},
            inline={tuple(key) for key in init["inline"]})
        self.links_seq = int(init.get("at") or 0)

    def end_connections(self, replaces: dict) -> None:
        """In a writer process replacing one that died: end the dead one's database
        connections and wait until they are gone, so that no batch it had sent can still
        commit behind this one's back (under the same origin, it would pass for this one's)."""
        pid, backend = replaces.get("pid"), replaces.get("backendPid")
        if pid is None and backend is None:
            return
        conn = self._conn
        query = ("SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
                 "(pid = %s OR application_name = %s)")
        # The name _connect gives a connection (unless the URL names it): this host, that pid.
        args = (backend or 0, f"maestro pid {pid} on {socket.gethostname()}" if pid is not None
                else "")
        deadline = time.monotonic() + 10
        while True:
            pids = [row[0] for row in conn.execute(query, args).fetchall()]
            if not pids:
                return
            for target in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (target,))
            if time.monotonic() > deadline:
                raise DatabaseUnavailableError(
                    f"the dead writer process's connections {pids} to {self.location} did "
                    "not end")
            time.sleep(0.05)

    def load_links(self, at: int) -> int:
        """In a writer process started after the last one died: the link rows and the log's
        head from one snapshot (the server, which holds every change back meanwhile, stands at
        record `at`; the snapshot holds at least that). The records the server applies later
        and forwards (adopt_shapes) are taken only past that head."""
        psycopg = _psycopg()
        conn = self._conn
        shapes = pg_rows.Shapes(inline=self.shapes.inline)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        try:
            with conn.transaction():
                conn.execute("SET LOCAL statement_timeout = '30s'")
                head = int(conn.execute(self._log.head).fetchone()[0])
                for kind in TABLES:
                    pg_rows.load_lists(conn, self._statements, kind, {}, shapes,
                                       links_only=True)
        finally:
            conn.isolation_level = None
        if head < at:
            raise DatabaseUnavailableError(
                f"the log's head {head} is behind the server's {at}: not the server's database")
        self.shapes = shapes
        self.links_seq = head
        return head

    def writer_stats(self) -> dict[str, Any]:
        """The writing connection's state, for the server's /health."""
        return {"connected": self._usable(), "reconnects": self.reconnects,
                "backendPid": self._conn.info.backend_pid if self._usable() else None,
                "lastError": redact(self._last_error, self._password)
                if self._last_error else None}

    # ----------------------------------------------------------------- writing

    @property
    def pipeline_depth(self) -> int:
        return pg_writer.PIPELINE_DEPTH if self._proxy is not None else 1

    def send_batch(self, records: list[list[Op]], txs=None) -> asyncio.Future:
        if self._proxy is not None:
            return self._proxy.send_batch(records, txs)
        return SyncStore.send_batch(self, records, txs)

    async def resume(self) -> None:
        if self._proxy is not None:
            await self._proxy.request({"op": "resume"})
        else:
            await SyncStore.resume(self)

    async def maintain(self) -> None:
        if self._proxy is not None:
            await self._proxy.request({"op": "maintenance"})
        else:
            await SyncStore.maintain(self)

    def send_flush(self, ops: list[Op], keys: list[tuple[str, str]]) -> asyncio.Future:
        """Nothing to flush (no entity is behind); resolves once everything sent before is
        done."""
        if self._proxy is None:
            return SyncStore.send_flush(self, ops, keys)
        return asyncio.ensure_future(self._ping())

    async def _ping(self) -> bool:
        await self._proxy.request({"op": "ping"})
        return True

    def request_turn(self, wait_ms: int) -> asyncio.Future:
        """take_turn after every batch sent before; resolves to the log's head or None."""
        if self._proxy is None:
            return self.in_lane(self.take_turn, wait_ms)
        return asyncio.ensure_future(self._turn(wait_ms))

    async def _turn(self, wait_ms: int) -> int | None:
        head = (await self._proxy.request({"op": "turn", "waitMs": wait_ms})).get("head")
        return None if head is None else int(head)

    def release_turn(self) -> asyncio.Future:
        """give_turn after every batch sent before."""
        if self._proxy is None:
            return self.in_lane(self.give_turn)
        return asyncio.ensure_future(self._proxy.request({"op": "give"}))

    def adopt_shapes(self, text: str | None, seq: int) -> None:
        """Follow the link rows another server's batch (ending at record `seq`) left
        (postgres_log.adopt_shapes)."""
        if not text:
            return
        if self._proxy is None:
            postgres_log.adopt_shapes(self.shapes, text)
            return
        postgres_log.adopt_inline(self.shapes, text)
        self._proxy.post({"op": "shapes", "text": text, "seq": seq})

    @property
    def writer_dead(self) -> bool:
        """The writer process died (renew_writer starts another)."""
        proxy = self._proxy
        return proxy is not None and proxy.dead is not None

    def renew_writer(self) -> None:
        """Start a new writer process in place of the dead one (blocking: call it from a
        thread, while the server holds every change back, has nothing queued or being written
        and applies nothing from the log). It reads the link rows itself. Raises OSError when
        it cannot start (the dead one stays: writes are refused until a later try)."""
        old = self._proxy
        if old is not None:
            old.helper.kill()  # dead, or no longer answering in step
        helper = pg_writer.spawn(otherwise="tried again later, writes refused meanwhile")
        if helper is None:
            raise OSError("the writer process could not be started")
        proxy = pg_writer.WriterProxy.hand_over(
            self, helper, anew=True, replaces=old.replaced() if old is not None else None)
        with self._swap:
            if self._closing:
                proxy.close()
                raise OSError("the store is closing")
            self._proxy = proxy
        self.writer_restarts += 1
        if old is not None:
            old.close()

    def attach_loop(self, on_dead=None) -> None:
        """On the event loop: notice the writer process's death as it happens (and call
        `on_dead`, from any thread)."""
        if self._proxy is not None:
            self._proxy.helper.on_dead = on_dead
            self._proxy.attach_loop()

    def detach_loop(self) -> None:
        if self._proxy is not None:
            self._proxy.detach_loop()

    def check_op(self, op: Op) -> None:
        """Raise ValueError for what PostgreSQL text cannot hold (checked before any change)."""
        for label, value in (("id", op.id), ("project id", _project_id(op))):
            if value is not None and "\x00" in value:
                raise ValueError(f"{label} {value!r} cannot contain a NUL character")

    def write_batch(self, records: list[list[Op]], txs=None) -> None:
        """All records in one transaction with their log records (`txs`: the change requests,
        whose events are numbered once it is committed); returns once it is committed.

        A transaction the database refuses raises at once (nothing of it was stored), LogMoved
        when another replica wrote first. When the connection breaks instead, the store
        reconnects and reads the log to learn whether the commit happened; if not, the batch is
        tried once more."""
        self.write_rows(*self.described(records, txs), txs)

    def described(self, records: list[list[Op]], txs=None) -> tuple[list, list, list]:
        """A batch as write_rows takes it: its rows (pg_rows.describe), and per record its log
        record and number of events."""
        rows = pg_rows.describe(pg_rows.compose(records), self.shapes.inline, _project_id)
        if txs is None:
            return rows, [postgres_log.encode_record(ops) for ops in records], \
                [0] * len(records)
        return rows, [tx.log_record for tx in txs], [len(tx.events) for tx in txs]

    def write_rows(self, rows: list[pg_rows.Row], logged: list[bytes], counts: list[int],
                   txs=None) -> None:
        """write_batch once the batch is described (pg_rows.describe): its rows, and per
        change request its log record and number of events. The writer process's way in."""
        psycopg = _psycopg()
        if not self._usable() and self._reconnect() is not None:
            # An earlier batch was answered as failed (and undone in memory), yet committed:
            # its records are in the log, ahead of this server, which applies them from there
            # like another server's (this batch is refused as behind the log first).
            log.warning("a change reported as failed had been committed before the connection "
                        "to %s broke: it is applied from the log", self.location)
        plan = pg_rows.plan_rows(rows, self.shapes)
        for attempt in range(2):
            expected = self.log_head
            appended = self._log.batch(expected, self.log_events, self.origin, logged, counts,
                                       postgres_log.encode_shapes(plan, self.shapes))
            try:
                self._write(self._conn, plan, appended)
                self._appended(len(logged), counts, txs)
                self._last_error = None
                return
            except psycopg.Error as exc:
                if exc.sqlstate == postgres_log.MOVED:
                    raise postgres_log.LogMoved(_first_line(exc)) from None
                self._last_error = _first_line(exc)
                if self._usable():
                    raise
                self._interrupted = expected + 1
                log.warning("lost the connection to %s while writing (%s)", self.location,
                            _first_line(exc))
                if attempt:
                    raise
                if self._reconnect() == expected + 1:
                    log.info("the interrupted transaction had been committed")
                    plan.adopt(self.shapes)
                    self._appended(len(logged), counts, txs)
                    self._last_error = None
                    return

    def _appended(self, records: int, counts: list[int], txs) -> None:
        """A batch is committed at the head of the log: number its events."""
        self.log_head += records
        if self.log_head - self._trimmed_at >= TRIM_EVERY:
            self.maintenance()
        nxt = self.log_events + 1
        self.log_events += sum(counts)
        for tx in txs or ():
            for event in tx.events:
                event.seq = nxt
                nxt += 1

    def _reload_links(self) -> None:
        """Learn the link rows again from the database (after a change of unknown fate)."""
        shapes = pg_rows.Shapes(inline=self.shapes.inline)
        for kind in TABLES:
            pg_rows.load_lists(self._conn, self._statements, kind, {}, shapes, links_only=True)
        self.shapes = shapes

    def _usable(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed and not conn.broken

    def import_entities(self, result: LoadResult, replace: bool = False) -> dict[str, int]:
        """Copy every entity of `result` (e.g. a data directory loaded by the file store) into
        the open store in one transaction; returns the counts per kind. Tables that already hold
        entities are refused unless `replace`, which empties them in the same transaction."""
        from psycopg import sql

        self._exclusive()
        held = sum(self._conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            self._table(kind))).fetchone()[0] for kind in TABLES)
        if held and not replace:
            raise DatabaseUnavailableError(
                f"{self.location} already holds {held} entit{'y' if held == 1 else 'ies'}; "
                "importing would mix two data sets (use --replace to discard them)")
        record: list[Op] = []
        for kind, entities in (("project", result.projects), ("task", result.tasks),
                               ("session", result.sessions)):
            for value in entities:
                # `new`: the tables are empty (or emptied first), nothing to replace row by row.
                op = Op(kind, value["id"], value, jsonio.dumps(value), new=True)
                self.check_op(op)
                record.append(op)
        self.shapes = pg_rows.Shapes()
        plan = pg_rows.plan_batch(pg_rows.compose([record]), self.shapes, _project_id)
        self._write(self._conn, plan, None, clear=replace)
        return {kind: len(getattr(result, f"{kind}s")) for kind in TABLES}

    def _exclusive(self) -> None:
        """The schema to this process alone (no server runs on it), or StoreLockedError."""
        if not getattr(self, "_shared", False):
            return
        self._take_owner(self._conn)

    def _write(self, conn, plan: pg_rows.Plan, appended: postgres_log.Append | None,
               clear: bool = False) -> None:
        """One transaction: the log's statements `appended` first (the counter row is locked
        before any other row), then the rows of `plan`; the shapes follow once it is
        committed."""
        # One round trip for the whole transaction: the statements go as one query text,
        # which the server runs as one transaction (committed when the last one succeeds).
        writer = self._writer
        if writer is None or writer[0] is not conn:  # quoting follows the connection's settings
            writer = self._writer = (conn, pg_rows.Writer(
                self.schema, _psycopg().pq.Escaping(conn.pgconn).escape_literal))
        quote = writer[1].quote
        text = writer[1].text(plan, clear)
        if appended is not None:
            text = appended.text(quote) + b"; " + text if text else appended.text(quote)
        if text:
            _run_text(conn, text)
        plan.adopt(self.shapes)

    def take_turn(self, wait_ms: int) -> int | None:
        """Wait up to `wait_ms` for the turn to write among the servers of this schema
        (turns.py); returns the log's head once it is this server's turn, None when the
        wait timed out or the connection is unusable."""
        if not self._usable() or self.schema is None:
            return None
        key = (_signed32(TURN_CLASS), _signed32(zlib.crc32(self.schema.encode())))
        try:
            # One round trip; the timeout is local to the implicit transaction of the text.
            cur = self._conn.execute(
                b"SELECT set_config('lock_timeout', '%d', true); "
                b"SELECT pg_advisory_lock(%d, %d); " % (wait_ms, *key)
                + self._log.head.as_string(self._conn).encode())
            while cur.nextset():
                pass
            head = cur.fetchone()[0]
        except _psycopg().Error as exc:
            if exc.sqlstate != "55P03":  # lock_not_available: timed out
                log.warning("waiting for the turn to write failed: %s", _first_line(exc))
            return None
        self._turn_key = key
        return int(head)

    def give_turn(self) -> None:
        """Give the turn taken by `take_turn` back (a broken connection gave it back)."""
        key, self._turn_key = self._turn_key, None
        if key is not None and self._usable():
            self._conn.execute(b"SELECT pg_advisory_unlock(%d, %d)" % key)

    def _committed(self, seq: int) -> bool:
        """Whether this store wrote log record `seq` (a commit a broken connection hid)."""
        row = self._conn.execute(self._log.origin_of, (seq,)).fetchone()
        return row is not None and row[0] == self.origin

    def _reconnect(self) -> int | None:
        """A new connection holding the lock again; raises if the database is unreachable or
        another server took the lock meanwhile (writes are refused until this succeeds).

        Returns the sequence number of the transaction a broken connection interrupted if the
        database shows it was committed after all, else None."""
        old, self._conn = self._conn, None
        if old is not None:
            old.close()  # closing a broken connection does not raise
        try:
            conn = self._connect_locked()
        except Exception as exc:
            self._last_error = _first_line(exc)
            log.error("%s", redact(str(exc), self._password))
            raise
        self._conn = conn
        self.reconnects += 1
        log.warning("reconnected to %s and took its lock again", self.location)
        interrupted, self._interrupted = self._interrupted, None
        if interrupted is not None and self._committed(interrupted):
            return interrupted
        return None

    # ----------------------------------------------------------------- the log
    def log_record(self, tx, ops: list[Op]) -> bytes:
        """The log record of change request `tx` (see postgres_log.py), made when it is
        submitted, while the entities it wrote are as it left them."""
        return postgres_log.encode_record(ops, tx.events, tx.latest, tx.before)

    def connect(self):
        """A new connection to the database (for a replica's reader and listener)."""
        return self._connect()

    def maintenance(self) -> None:
        """Drop the log's records older than the retention (any replica may)."""
        self._trimmed_at = self.log_head
        if self._proxy is not None:
            return  # the writer process trims as it writes
        if self._usable() and self.log_head > self.log_retention:
            try:
                self._conn.execute(self._log.trim, (self.log_head - self.log_retention,))
            except _psycopg().Error as exc:  # tried again later; nothing depends on it
                log.warning("trimming the log failed: %s", _first_line(exc))

    # ----------------------------------------------------------------- closing
    def close(self) -> None:
        with self._swap:
            self._closing = True
            proxy, self._proxy = self._proxy, None
        if proxy is not None:
            proxy.close()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not (conn.closed or conn.broken) and self._lock_key is not None:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", self._lock_key)
        except _psycopg().Error as exc:  # closing the connection releases the lock anyway
            log.debug("advisory unlock failed: %s", exc)
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        conn = self._conn
        connected = conn is not None and not conn.closed and not conn.broken
        out: dict[str, Any] = {
            "backend": self.name,
            "database": self.location,
            "schema": self.schema,
            "connected": connected,
            "writable": connected,
            "schemaVersion": self.schema_version,
            "reconnects": self.reconnects,
            "restartNeeded": self.restart_needed,
            "quarantined": list(self.quarantined),
            "log": {"seq": self.log_head, "eventSeq": self.log_events, "replica": self.origin},
        }
        if self._last_error:
            out["lastError"] = redact(self._last_error, self._password)
        out["writer"] = "in-process"
        proxy = self._proxy
        if proxy is not None:
            stats = proxy.stats
            writing = proxy.dead is None and bool(stats.get("connected", True))
            out.update(connected=connected and writing, writable=writing,
                       reconnects=self.reconnects + int(stats.get("reconnects") or 0),
                       writer="process", writerRestarts=self.writer_restarts)
            if proxy.dead is not None or stats.get("lastError"):
                out["lastError"] = proxy.dead or stats["lastError"]
        return out
