"""`maestro import-data`: copy a JSON data directory (this server's or the original's) into the
PostgreSQL store, so that a team can move to DATABASE_TYPE=postgres without losing anything."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer


def import_data(
    data_dir: Path = typer.Option(..., "--data-dir", help="The data directory to copy from "
                                  "(projects/, tasks/, sessions/)."),
    database_url: str = typer.Option("", "--database-url", metavar="URL",
                                     help="Target database [env DATABASE_URL]; the schema comes "
                                          "from options=-csearch_path=... or the default."),
    replace: bool = typer.Option(False, "--replace", help="Discard what the database already "
                                 "holds (in the same transaction as the copy)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Copy every project, task and session of a data directory into PostgreSQL, verbatim
    (unknown keys and key order kept), in one transaction.

    Neither side may be in use by a running server. A directory left by a crash is recovered
    first (journal replay) and corrupt files are moved to its quarantine/ folder, as the server
    itself would do at start-up.

    Example: DATABASE_URL=postgresql://maestro@127.0.0.1/maestro
    maestro import-data --data-dir ~/.maestro/data
    """
    from ..config import database_url as configured_database_url
    from ..config import expand_path
    from ..store.base import StoreLockedError
    from ..store.files import FileStore
    from ..store.postgres import DatabaseUnavailableError, PostgresStore, redact

    url = database_url or configured_database_url()
    if not url:
        _fail("no database given: set DATABASE_URL or pass --database-url", 2)
    source_dir = expand_path(str(data_dir))
    if not source_dir.is_dir():
        _fail(f"{source_dir} is not a directory", 2)
    try:
        import psycopg
        database_errors: tuple[type[Exception], ...] = (psycopg.Error,)
    except ImportError:  # PostgresStore says so in one line
        database_errors = ()
    source, target = FileStore(source_dir), PostgresStore(url)
    try:
        try:
            loaded = source.open()
        except StoreLockedError:
            _fail(f"the data directory {source_dir} is in use by another Maestro server; stop "
                  "that server first, then import (the copy must not miss its latest "
                  "changes)", 1)
        try:
            target.open()
        except StoreLockedError:
            _fail(f"the database {target.location} is in use by another Maestro server; stop "
                  "that server first, then import (start it again afterwards)", 1)
        counts = target.import_entities(loaded, replace=replace)
    except (DatabaseUnavailableError, ValueError, OSError) as exc:
        _fail(str(exc), 1)
    except database_errors as exc:  # one line, never a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _fail(f"the import failed and changed nothing: {redact(first)}", 1)
    finally:
        target.close()
        source.close()
    summary = {"success": True, "imported": {f"{k}s": v for k, v in counts.items()},
               "from": str(source_dir), "to": target.location,
               "quarantined": loaded.quarantined}
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
        return
    print(f"imported {counts['project']} project(s), {counts['task']} task(s) and "
          f"{counts['session']} session(s) from {source_dir} into {target.location}")
    for entry in loaded.quarantined:
        print(f"not imported (corrupt, moved to {entry['movedTo']}): {entry['file']}",
              file=sys.stderr)


def _fail(message: str, code: int):
    print(f"maestro: {message}", file=sys.stderr)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("import-data")(import_data)
