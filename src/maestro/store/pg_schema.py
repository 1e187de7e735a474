"""The PostgreSQL layout's numbered migrations (`migrations/NNNN_name.sql`, shipped with the
package) and the one way they are applied: in order, each in a transaction of its own, under an
advisory lock of the schema, so that any number of processes migrating at once (servers
starting, `maestro db migrate`) apply each version exactly once.

`maestro_schema_version` records every version applied (a database from before numbered
migrations, which recorded version 1 in `maestro_meta`, is taken as at version 1).
`maestro_meta`'s `schema_version` follows the latest, so that an older Maestro, which reads only
that row, refuses a layout it does not know. A database ahead of this code is refused."""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("maestro.store")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "maestro_schema_version"
# First half of the migration lock's key ("MAEM"); the second half comes from the schema name.
MIGRATE_LOCK_CLASS = 0x4D41454D
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


class SchemaAheadError(RuntimeError):
    """The database was migrated by a newer Maestro."""


def migrations() -> list[Migration]:
    """Every migration shipped, in order; their numbers run 1, 2, 3... without a gap."""
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the migrations in {MIGRATIONS_DIR} are not numbered 1..n")
    return found


def latest_version() -> int:
    return len(migrations())


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def migrate_lock_key(schema: str) -> tuple[int, int]:
    return (_signed32(MIGRATE_LOCK_CLASS), _signed32(zlib.crc32(schema.encode())))


def current_version(conn, schema: str) -> int:
    """The version the tables of `schema` are at (0: none yet); reads only."""
    version_table, meta = conn.execute(
        "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)), "
        "to_regclass(format('%%I.maestro_meta', %s::text))",
        (schema, VERSION_TABLE, schema)).fetchone()
    version = 0
    if version_table is not None:
        version = conn.execute(
            f"SELECT coalesce(max(version), 0) FROM {_qualified(schema, VERSION_TABLE)}"
        ).fetchone()[0]
    if meta is not None:
        row = conn.execute(
            f"SELECT value FROM {_qualified(schema, 'maestro_meta')} "
            "WHERE name = 'schema_version'").fetchone()
        if row is not None:
            version = max(version, int(row[0]))
    return version


def _qualified(schema: str, table: str) -> str:
    from psycopg import sql

    return sql.Identifier(schema, table).as_string()


def ahead_message(location: str, version: int, latest: int) -> str:
    return (f"the tables in {location} are at schema version {version}, newer than this "
            f"Maestro knows ({latest}); upgrade Maestro (or use another database or schema)")


def migrate(conn, schema: str, location: str, may_write=None) -> list[Migration]:
    """Bring `schema` to the latest version; returns the migrations applied here (none when
    another process did it first). `conn` is in autocommit mode. `may_write`, called under the
    lock when something is to be applied, raises to refuse (e.g. a server holds the schema).
    Raises SchemaAheadError for a database ahead of this code."""
    known = migrations()
    latest = len(known)
    key = migrate_lock_key(schema)
    conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
    try:
        version = current_version(conn, schema)
        if version > latest:
            raise SchemaAheadError(ahead_message(location, version, latest))
        pending = known[version:]
        if not pending:
            return []
        if may_write is not None:
            may_write()
        with conn.transaction():
            _search_path(conn, schema)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
                         "version integer PRIMARY KEY, name text NOT NULL, "
                         "applied_at timestamptz NOT NULL DEFAULT now())")
            # A layout from before numbered migrations: its versions count as applied.
            for old in known[:version]:
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version, name) VALUES (%s, %s) "
                             "ON CONFLICT (version) DO NOTHING", (old.version, old.name))
        for migration in pending:
            with conn.transaction():
                _search_path(conn, schema)
                conn.execute(migration.sql())
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version, name) VALUES (%s, %s)",
                             (migration.version, migration.name))
                conn.execute("UPDATE maestro_meta SET value = %s WHERE name = 'schema_version'",
                             (migration.version,))
            log.info("applied migration %04d_%s to %s", migration.version, migration.name,
                     location)
        return pending
    finally:
        if not (conn.closed or conn.broken):
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)


def _search_path(conn, schema: str) -> None:
    """Unqualified names of the migration's SQL name the tables of `schema` (this transaction)."""
    from psycopg import sql

    conn.execute("SELECT set_config('search_path', %s, true)",
                 (sql.Identifier(schema).as_string(),))
