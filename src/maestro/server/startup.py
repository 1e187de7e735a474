"""Checks made before the server starts, each failing with one line that names what is wrong:
the listening sockets, the session directory, the number of open files allowed."""

from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path

from ..store.layout import find_link, link_message, unwritable

log = logging.getLogger("maestro")

# File descriptors kept free for everything that is not a client connection: the store, its
# helper process, spare files being made, agents' pipes and logs.
RESERVED_FDS = 256


class StartupError(RuntimeError):
    """The server cannot start; the message says why in one line."""


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) sockets for every address `host` stands for, as asyncio's
    create_server would make them; bound before anything else starts, so that a port in use
    stops the start-up before the data directory is opened."""
    try:
        infos = socket.getaddrinfo(host or None, port, family=socket.AF_UNSPEC,
                                   type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                           "(check HOST)") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL and len(infos) > 1:
                    sock.close()  # e.g. IPv6 switched off: the other addresses will do
                    sockets.pop()
                    continue
                where = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
                hint = (" (another server is using it; stop it or choose another PORT)"
                        if exc.errno == errno.EADDRINUSE else "")
                raise StartupError(f"cannot listen on {where}:{port}: "
                                   f"{exc.strerror or exc}{hint}") from None
        if not sockets:
            raise StartupError(f"cannot listen on {host}:{port}: no usable address")
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def check_session_dir(folder: Path) -> None:
    """SESSION_DIR exists (made if missing), is a writable folder and holds no symbolic link
    in the places the server writes (the sessions' folders and their files)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StartupError(f"the session directory {folder} is a file, not a folder; set "
                           "SESSION_DIR to a folder") from None
    except OSError as exc:
        raise StartupError(f"cannot create the session directory {folder}: "
                           f"{exc.strerror}") from None
    why = unwritable(folder)
    if why is not None:
        raise StartupError(f"the session directory {folder} is not usable ({why}); fix its "
                           "permissions or set SESSION_DIR to another folder")
    link = find_link(str(folder), 2)
    if link is not None:
        raise StartupError(link_message(link, "SESSION_DIR"))


def allow_open_files(connections: int) -> None:
    """Raise the soft limit on open files so that `connections` clients fit beside the
    server's own files; warn when the hard limit does not allow it."""
    try:
        import resource
    except ImportError:  # not a Unix: nothing to adjust
        return
    wanted = connections + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < wanted:
        log.warning("only %d open files are allowed (ulimit -n): fewer than "
                    "MAESTRO_MAX_CONNECTIONS=%d connections may be served; raise the limit or "
                    "lower MAESTRO_MAX_CONNECTIONS", soft, connections)

