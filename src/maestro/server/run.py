"""Running the server process: logging, the data-directory lock, uvicorn, signals."""

from __future__ import annotations

import logging
import re
import signal
import sys

from ..config import Settings

_LEVELS = {"error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO,
           "debug": logging.DEBUG}


_TOKEN_IN_URL = re.compile(r"(token=)[^&\s\"']+")


class RedactTokens(logging.Filter):
    """Browsers pass the token as `?token=` on the WebSocket URL, and uvicorn logs that URL:
    tokens never reach a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_TOKEN_IN_URL.sub(r"\1[redacted]", a) if isinstance(a, str)
                                else a for a in record.args)
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN_IN_URL.sub(r"\1[redacted]", record.msg)
        return True


def _redact_uvicorn_logs() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.addFilter(RedactTokens())
        for handler in logger.handlers:
            handler.addFilter(RedactTokens())


def setup_logging(settings: Settings) -> None:
    level = _LEVELS[settings.log_level]
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("maestro").setLevel(level)


def serve(settings: Settings) -> int:
    """Start the server in the foreground; returns the process exit code."""
    import uvicorn

    from ..store.base import StoreLockedError
    from ..store.files import FileStore
    from .app import create_app

    setup_logging(settings)
    # The journal's fsync runs in a worker thread; a short switch interval lets it get the GIL
    # back quickly while the event loop is busy, so group commits are not delayed by 5 ms.
    sys.setswitchinterval(0.0005)
    log = logging.getLogger("maestro")
    if settings.database_type == "postgres":
        from ..store.postgres import DatabaseUnavailableError, PostgresStore
        store = PostgresStore(settings.database_url)
        try:
            store.take_lock()
        except (StoreLockedError, DatabaseUnavailableError) as exc:
            print(f"maestro: {exc}", file=sys.stderr)
            return 1
    else:
        store = FileStore(settings.data_dir, worker=settings.store_process)
        try:
            store.take_lock()
        except StoreLockedError as exc:
            print(f"maestro: {exc}", file=sys.stderr)
            return 1
    app = create_app(settings, store=store)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level
        if settings.log_level != "warn" else "warning",
        access_log=settings.debug, lifespan="on", ws_max_size=1024 * 1024,
        # Compression would be per client, undoing "encode each event once" for every browser.
        ws_per_message_deflate=False,
        ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_graceful_shutdown=10,
        server_header=False, proxy_headers=False,
    )
    _redact_uvicorn_logs()  # after Config, which installs uvicorn's logging set-up
    server = uvicorn.Server(config)
    log.info("Maestro on http://%s:%d (data: %s)", settings.host, settings.port,
             getattr(store, "location", settings.data_dir))
    # After a graceful stop uvicorn re-raises the signal to the handler it found; with Python's
    # defaults that kills the process by the signal. A completed graceful stop exits 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    server.run()
    if not server.started:
        return 1
    return 0
