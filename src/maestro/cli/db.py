"""`maestro db migrate` and `maestro db status`: the PostgreSQL layout's version. A server
migrates its database itself when it starts; these commands do it (or show where it stands)
ahead of a start, e.g. in a deployment step. Both read DATABASE_URL (or --database-url)."""

from __future__ import annotations

import json

import typer

app = typer.Typer(help="The PostgreSQL database's layout: apply migrations, show its version "
                       "and the servers (replicas) that use it.",
                  no_args_is_help=True)

URL_OPTION = typer.Option("", "--database-url", metavar="URL",
                          help="The database [env DATABASE_URL]; the schema comes from "
                               "options=-csearch_path=... or the default.")
JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")


def _store(database_url: str):
    from ..config import database_url as configured
    from ..store.postgres import PostgresStore

    url = database_url or configured()
    if not url:
        _fail("no database given: set DATABASE_URL or pass --database-url", 2)
    return PostgresStore(url)


@app.command("migrate")
def migrate(database_url: str = URL_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Apply the migrations the database lacks, in order, each once (several processes may
    run this at the same time). Refused while a server uses the database.

    Example: DATABASE_URL=postgresql://maestro@127.0.0.1/maestro maestro db migrate
    """
    from ..store.base import StoreLockedError
    from ..store.pg_schema import latest_version
    from ..store.postgres import DatabaseUnavailableError

    store = _store(database_url)
    try:
        version, applied = store.run_migrations()
    except StoreLockedError as exc:
        _fail(f"{exc} (a server migrates its database when it starts)", 1)
    except DatabaseUnavailableError as exc:
        _fail(str(exc), 1)
    names = [f"{m.version:04d}_{m.name}" for m in applied]
    if as_json:
        print(json.dumps({"success": True, "database": store.location, "version": version,
                          "latest": latest_version(), "applied": names}))
        return
    if names:
        print(f"applied {', '.join(names)} to {store.location}: now at schema version {version}")
    else:
        print(f"{store.location} is up to date (schema version {version})")


@app.command("status")
def status(database_url: str = URL_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Show the schema version of the database and the latest this Maestro knows, the head of
    the log the servers share, the server that leads the writes (the others forward their
    changes to it), and every server (replica) that joined the database: its address, how
    long ago its last heartbeat was, and whether it counts as live (exit 1 when the database
    is ahead of this Maestro or cannot be reached).

    Example: maestro db status --database-url postgresql://maestro@127.0.0.1/maestro
    """
    from ..config import ConfigError, replica_timeout_seconds
    from ..replicas import state_of
    from ..store.pg_schema import migrations
    from ..store.postgres import DatabaseUnavailableError

    store = _store(database_url)
    try:
        version = store.schema_status()
        shared = store.replicas_status() if version else {"logHead": None, "replicas": []}
    except DatabaseUnavailableError as exc:
        _fail(str(exc), 1)
    try:
        timeout = replica_timeout_seconds()
    except ConfigError as exc:
        _fail(str(exc), 2)
    for replica in shared["replicas"]:
        replica["state"] = state_of(replica["takenOverBy"], replica["heartbeatAgeSeconds"],
                                    timeout)
    known = migrations()
    latest = len(known)
    pending = [f"{m.version:04d}_{m.name}" for m in known[version:]]
    if as_json:
        print(json.dumps({"database": store.location, "version": version, "latest": latest,
                          "pending": pending, "ahead": version > latest, **shared}))
    else:
        _print_status(store.location, version, latest, pending)
        _print_shared(shared, timeout)
    if version > latest:
        raise typer.Exit(1)


def _print_status(location: str, version: int, latest: int, pending: list[str]) -> None:
    if version > latest:
        print(f"{location}: schema version {version}, newer than this Maestro knows "
              f"({latest}); upgrade Maestro")
    elif pending:
        print(f"{location}: schema version {version}, latest {latest}; pending: "
              f"{', '.join(pending)} (maestro db migrate, or start the server)")
    else:
        print(f"{location}: schema version {version}, latest {latest} (up to date)")


def _print_shared(shared: dict, timeout: float) -> None:
    if shared["logHead"] is not None:
        print(f"shared log: {shared['logHead']:,} records written")
    lead = shared.get("writeLead")
    if lead is not None:
        if lead["held"]:
            print(f"write lead: {lead['id']} at {lead['address']}, for "
                  f"{lead['sinceSeconds']:g} s (the other servers forward their changes to it)")
        else:
            print(f"write lead: none now (the last was {lead['id']}; its lock is free, so "
                  "every server writes itself until one takes it)")
    replicas = shared["replicas"]
    if not replicas:
        return
    print(f"servers ({len(replicas)}; live: a heartbeat within {timeout:g} s, "
          "MAESTRO_REPLICA_TIMEOUT_SECONDS):")
    width = max(len(r["id"]) for r in replicas)
    for r in replicas:
        state = f"taken over by {r['takenOverBy']}" if r["takenOverBy"] else r["state"]
        print(f"  {r['id']:<{width}}  {r['url'] or '-'}  pid {r['pid'] or '-'}  heartbeat "
              f"{r['heartbeatAgeSeconds']:g} s ago  {state}")


def _fail(message: str, code: int):
    import sys

    print(f"maestro: {message}", file=sys.stderr)
    raise typer.Exit(code)
