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
    """Start the server in the foreground; returns the process exit code. Whatever stops the
    start-up is reported in one line on stderr, with exit code 1."""
    import uvicorn

    from ..store.base import StoreLockedError, StoreUnusableError
    from .app import create_app
    from .limits import ConnectionLimits, protocol_class
    from .startup import StartupError, allow_open_files, bind_listeners, check_session_dir

    setup_logging(settings)
    # The journal's fsync runs in a worker thread; a short switch interval lets it get the GIL
    # back quickly while the event loop is busy, so group commits are not delayed by 5 ms.
    sys.setswitchinterval(0.0005)
    log = logging.getLogger("maestro")
    try:
        store = _take_store(settings)
        check_session_dir(settings.session_dir)
        listeners = bind_listeners(settings.host, settings.port)
    except (StoreLockedError, StoreUnusableError, StartupError) as exc:
        print(f"maestro: {exc}", file=sys.stderr)
        return 1
    allow_open_files(settings.max_connections)
    app = _StartupReport(create_app(settings, store=store))
    limits = ConnectionLimits(header_timeout=settings.header_timeout,
                              body_timeout=settings.body_timeout,
                              max_connections=settings.max_connections,
                              max_header_bytes=settings.max_header_bytes)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level
        if settings.log_level != "warn" else "warning",
        access_log=settings.debug, lifespan="on", ws_max_size=1024 * 1024,
        http=protocol_class(limits), timeout_keep_alive=settings.keepalive_timeout,
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
    try:
        server.run(sockets=listeners)
    except SystemExit:
        pass  # uvicorn's way of saying the start-up failed (reported below)
    if not server.started:
        print(f"maestro: could not start: {app.failure or 'see the log above'}",
              file=sys.stderr)
        return 1
    return 0


def _take_store(settings: Settings):
    """The store, locked for this server and checked, not yet loaded."""
    if settings.database_type == "postgres":
        from ..store.base import StoreUnusableError
        from ..store.postgres import DatabaseUnavailableError, PostgresStore
        store = PostgresStore(settings.database_url, writer_process=settings.store_process,
                              pipeline_min_ops=settings.pipeline_min_ops)
        try:
            store.take_lock()
        except DatabaseUnavailableError as exc:
            raise StoreUnusableError(str(exc)) from None
        return store
    from ..store.files import FileStore
    store = FileStore(settings.data_dir, worker=settings.store_process,
                      checkpoint_bytes=settings.checkpoint_bytes,
                      pipeline_min_ops=settings.pipeline_min_ops)
    store.take_lock()
    store.check_layout()
    return store


class _StartupReport:
    """Reports a failed application start-up (the store could not be loaded, ...) as the
    exception's own line instead of a traceback; `failure` keeps that line."""

    def __init__(self, app):
        self.app = app
        self.failure: str | None = None

    def __getattr__(self, name):
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def report(message):
            if message["type"] == "lifespan.startup.failed":
                lines = [line for line in str(message.get("message") or "").splitlines()
                         if line.strip()]
                self.failure = lines[-1].strip() if lines else None
                message = {**message, "message": ""}
            await send(message)

        return await self.app(scope, receive, report)
