"""Replicas on one machine forward their changes to one of them, the write lead (README "Run
several replicas").

Replicas that each write themselves take turns at the log (turns.py): the replica holding the
turn checks and writes at the pace of one replica, while the other applies what it writes. On
machines of their own that still adds up to more than one replica (each checks its own changes
on its own CPU). Replicas sharing one machine's cores, though, each also spend CPU applying the
others' records and taking turns, and together they write less than one alone. For them one
replica, the *lead*, checks and writes every change: it is whichever replica holds the schema's
lead lock (a session-level advisory lock on a connection of its own), and it writes where it
listens for changes, and its machine, into `maestro_write_lead`. Every other replica on that
machine (`MAESTRO_FORWARD_WRITES=auto`, the default; `1`: wherever the lead runs; `0`: never)
forwards each change its clients ask for, as the service call it would have made (its name and
JSON arguments, the caller's rights already checked), over one TCP connection to the lead; the
lead runs it as if a client of its own had asked and answers with the result and the head of
the log after it. The forwarding replica waits until it has applied the log up to that head
(replica.Follower), so its client reads its own write there at once, then answers. No change
waits for a turn or is refused because another replica wrote first.

Forwarding is only a shortcut. Every replica can still write itself (turns and the log's check
keep that correct) and does so while no lead is known or reachable, for a while after a
connection to the lead failed, and for the changes that are not forwarded: the methods not
marked `forwardable` (the launcher's session creation, the workspaces, the lease sweeper) and
what this replica's own machinery writes inside `writes_here` (the launcher's updates of its
agents' sessions, the takeover of a gone replica), whose callers take any refusal for the
session being gone. A change whose answer never comes because the lead died, or said nothing
for HUNG_SECONDS, after it was sent is answered `503 INTERNAL_ERROR`: it may or may not have
been made. A big session or task in an answer is sent by reference (REF) and read from this
replica's memory once the record is applied.

The connection to the lead is authenticated both ways, under the secret the lead wrote beside its
address (only who can read the database can forward, or be forwarded to): the lead sends a
random challenge and the replica answers with its HMAC-SHA256 and a challenge of its own, which
the lead answers in turn (`proof(..., LEAD)`, a different message, so that neither side's proof
can be played back as the other's; a replica signs only a lead's challenge of hex digits). A
replica forwards nothing to a peer that cannot prove it is the lead: a process that took the
lead's port after it stopped gets no client's change. The link is not encrypted; across
machines, keep it on a trusted network. `MAESTRO_WRITE_LEAD_PORT` fixes the port the lead
listens on (default: any free one): on 127.0.0.1 in `auto` (only replicas of its machine
forward to it), else on the address the HTTP server binds, advertised under
MAESTRO_REPLICA_URL's host name."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import hmac
import itertools
import logging
import re
import secrets
import socket
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from . import jsonio
from .aio import cancel_and_wait
from .errors import ApiError, StorageError

log = logging.getLogger("maestro.replica")

TABLE = "maestro_write_lead"
# First half of the lead lock's key ("MAEL"); the second half comes from the schema name.
LEAD_CLASS = 0x4D41454C
# How often a replica tries for the lead, reads who leads, and the lead checks it still holds it.
CHECK_SECONDS = 1.0
CONNECT_TIMEOUT = 2.0
# The longest a forwarded change waits for the lead's answer.
CALL_TIMEOUT = 60.0
# While changes wait for answers, the replica pings the lead every second; a lead not heard
# from for this long (stopped, or its machine gone) is given up: its calls fail with a 503.
HUNG_SECONDS = 3.0
HANDSHAKE_TIMEOUT = HUNG_SECONDS
# After the lead could not be reached or stopped answering, this replica writes itself for
# RETRY_SECONDS, doubled after each failure in a row up to RETRY_MAX_SECONDS.
RETRY_MAX_SECONDS = 30.0
# A lead that steps down tells each replica to stop sending ("bye"), answers what was already
# sent, and closes what the replicas have not closed after this long.
DRAIN_SECONDS = 2.0
RETRY_SECONDS = 1.0
# The longest the forwarding replica waits to apply the lead's record before it answers anyway.
APPLY_TIMEOUT = 10.0
MAX_FRAME = 256 * 1024 * 1024
# The largest frame read before the peer has proved it knows the secret.
HANDSHAKE_BYTES = 4096
# A result with more entries than this in its growing lists (a session's events, a task's
# timeline) is answered by reference: the forwarding replica reads it from its own memory once
# it has applied the lead's record, rather than receive it (write_lead.ENTRY_REF).
REF_MIN_ENTRIES = 64
_HEADER = struct.Struct(">I")

# Service methods that may be run by the lead instead: name -> the method itself.
FORWARDABLE: dict[str, Callable] = {}

# The change was not sent to the lead (or the lead did not run it): run it here.
NOT_SENT = object()

# Answers of the lead: [call id, kind, value, head]; REF's value is [entity kind, id].
OK, REFUSED, NOT_RUN, REF = 0, 1, 2, 3

# Set while this replica's own machinery writes (the launcher's updates of its agents'
# sessions, the takeover of a gone replica): those changes are written here, never forwarded.
_HERE: contextvars.ContextVar[bool] = contextvars.ContextVar("maestro_writes_here",
                                                            default=False)


@contextlib.contextmanager
def writes_here():
    """Changes made inside are written by this replica itself (see `_HERE`)."""
    token = _HERE.set(True)
    try:
        yield
    finally:
        _HERE.reset(token)


def forwardable(fn: Callable) -> Callable:
    """Mark a service mutation whose arguments and result are JSON as one the lead may run for
    this replica (see the module's docstring)."""
    name = fn.__name__
    FORWARDABLE[name] = fn

    @functools.wraps(fn)
    async def call(self, *args, **kwargs):
        lead = self.write_lead
        if lead is not None and not _HERE.get() and lead.forwarding():
            out = await lead.forward(name, args, kwargs)
            if out is not NOT_SENT:
                return out
        return await fn(self, *args, **kwargs)

    return call


def lock_key(schema: str) -> tuple[int, int]:
    def signed(value: int) -> int:
        return value - (1 << 32) if value >= 1 << 31 else value

    return (signed(LEAD_CLASS), signed(zlib.crc32(schema.encode())))


# What the lead's proof is made over, besides the replica's challenge.
LEAD = "lead "
# A challenge either side signs: hex digits only (so never a LEAD message).
_CHALLENGE = re.compile(r"[0-9a-f]{16,128}")


def proof(secret: str, challenge: str, side: str = "") -> str:
    """A replica's proof of the secret for `challenge`; the lead's with side=LEAD."""
    return hmac.new(secret.encode(), (side + challenge).encode(), hashlib.sha256).hexdigest()


def _proves(answer: Any, secret: str, challenge: str, side: str = "") -> bool:
    return (isinstance(answer, str) and answer.isascii()
            and hmac.compare_digest(answer, proof(secret, challenge, side)))


def frame(message: Any) -> bytes:
    body = jsonio.dumps(message)
    return _HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME) -> Any:
    size = _HEADER.unpack(await reader.readexactly(4))[0]
    if size > limit:
        raise ConnectionError(f"a frame of {size} bytes is over the limit")
    return jsonio.loads(await reader.readexactly(size))


class Outbox:
    """Frames for one connection, written together once per turn of the event loop (one
    system call for every answer or change that became ready meanwhile)."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self._frames: list[bytes] = []

    def put(self, message: Any) -> None:
        data = frame(message)
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self._frames.append(data)

    def _flush(self) -> None:
        frames, self._frames = self._frames, []
        if not self.writer.is_closing():
            self.writer.write(b"".join(frames))


class LeadLost(Exception):
    """The connection to the lead broke while a change sent to it had no answer."""


class LeadLink:
    """This replica's connection to the lead: calls in flight at once, answered by id."""

    def __init__(self, replica_id: str, lead_id: str, address: str, secret: str):
        self.replica_id = replica_id
        self.lead_id = lead_id
        self.address = address
        self.secret = secret
        self.broken = False
        # The lead said "bye" (it no longer leads): no new calls; closed once answered.
        self.draining = False
        self._ids = itertools.count(1)
        # Call id -> (its future, when it was sent).
        self._pending: dict[int, tuple[asyncio.Future, float]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._out: Outbox | None = None
        self._task: asyncio.Task | None = None
        self._watch: asyncio.TimerHandle | None = None

    async def open(self) -> None:
        host, _, port = self.address.rpartition(":")
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), CONNECT_TIMEOUT)
        try:
            hello = await asyncio.wait_for(read_frame(reader, HANDSHAKE_BYTES),
                                           HANDSHAKE_TIMEOUT)
            if not (isinstance(hello, list) and len(hello) == 3 and hello[0] == "hello"
                    and isinstance(hello[1], str) and _CHALLENGE.fullmatch(hello[1])):
                raise ConnectionError("the lead did not greet as expected")
            mine = secrets.token_hex(16)
            writer.write(frame(["auth", proof(self.secret, str(hello[1])), self.replica_id,
                                mine]))
            answer = await asyncio.wait_for(read_frame(reader, HANDSHAKE_BYTES),
                                            HANDSHAKE_TIMEOUT)
            if not (isinstance(answer, list) and answer[:1] == ["ok"]):
                raise ConnectionError("the lead refused this replica's proof")
            if not (len(answer) == 2 and _proves(answer[1], self.secret, mine, LEAD)):
                raise ConnectionError(f"the peer at {self.address} did not prove it is the "
                                      "write lead")
        except BaseException:
            writer.close()
            raise
        self._writer = writer
        self._out = Outbox(writer)
        self.last_heard = time.monotonic()
        self._task = asyncio.create_task(self._read(reader), name="maestro-lead-link")
        self._watch = asyncio.get_running_loop().call_later(1.0, self._check)

    def _check(self) -> None:
        """Every second while calls wait: ping the lead; give it up when it has not been heard
        from for HUNG_SECONDS; fail the calls unanswered for CALL_TIMEOUT."""
        if self.broken:
            return
        now = time.monotonic()
        if self._pending:
            if now - self.last_heard > HUNG_SECONDS:
                log.warning("the write lead %s has not answered for %g s; writing here",
                            self.lead_id, HUNG_SECONDS)
                self._fail()
                return
            self._out.put(["ping"])
        limit = now - CALL_TIMEOUT
        for cid, (fut, sent) in list(self._pending.items()):
            if sent < limit:
                del self._pending[cid]
                if not fut.done():
                    fut.set_exception(LeadLost())
        self._watch = asyncio.get_running_loop().call_later(1.0, self._check)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await read_frame(reader)
                self.last_heard = time.monotonic()
                if message == ["bye"]:
                    self.draining = True
                else:
                    waiting = self._pending.pop(message[0], None)
                    if waiting is not None and not waiting[0].done():
                        waiting[0].set_result(message)
                if self.draining and not self._pending:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError) as exc:
            if not self.broken:
                log.warning("the connection to the write lead %s broke: %s", self.lead_id,
                            exc or type(exc).__name__)
        except asyncio.CancelledError:
            pass
        finally:
            self._fail()  # (nothing is pending after a "bye" once all is answered)

    def _fail(self) -> None:
        self.broken = True
        pending, self._pending = self._pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(LeadLost())
        if self._watch is not None:
            self._watch.cancel()
        if self._writer is not None:
            self._writer.close()

    async def call(self, name: str, args: tuple, kwargs: dict) -> list:
        """[call id, kind, value, head]; NOT_SENT when the connection was already broken."""
        if self.broken or self.draining or self._writer is None or self._writer.is_closing():
            return NOT_SENT
        cid = next(self._ids)
        try:
            self._out.put([cid, name, list(args), kwargs])
        except Exception:  # noqa: BLE001 - not JSON: nothing went out
            return NOT_SENT
        fut = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        if not self._pending:
            self.last_heard = now  # silence counts from here, not from the last answer
        self._pending[cid] = (fut, now)
        return await fut

    def retire(self) -> None:
        """No new calls; closed once those sent are answered (or failed)."""
        self.draining = True
        if not self._pending:
            self.close()

    def close(self) -> None:
        self.broken = True
        if self._task is not None:
            self._task.cancel()
        elif self._writer is not None:
            self._writer.close()


class WriteLead:
    """This replica's part: the lead, or a replica that forwards to it (module docstring)."""

    def __init__(self, service, db, replica_id: str, bind_host: str, advertise_host: str,
                 port: int = 0, mode: str = "auto", host: str | None = None):
        self.service = service
        # `on`: forward to the lead wherever it runs; `auto`: only to a lead on this machine.
        self.mode = mode
        self.host = host if host is not None else socket.gethostname()
        if mode != "on":
            # Only replicas of this machine forward to it: it listens on loopback alone.
            bind_host = advertise_host = "127.0.0.1"
        self.db = db  # store.pg_side.SideConnection, holding the lead lock while this leads
        self.replica_id = replica_id
        self.bind_host = bind_host
        self.advertise_host = advertise_host
        self.port = port
        self.key = lock_key(db.schema)
        self.table = db.table(TABLE)
        self.leading = False
        self.lead_id: str | None = None  # the lead as last read (None: none known)
        # The lead as read: (its id, address, secret, machine).
        self._target: tuple[str, str, str, str] | None = None
        self._link: LeadLink | None = None
        self._connecting: asyncio.Lock | None = None
        self._retry_at = 0.0
        self._failures = 0  # failures to reach the lead in a row
        self._secret = ""
        self._server: asyncio.AbstractServer | None = None
        self._conns: dict[asyncio.StreamWriter, Outbox] = {}
        self._calls: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        # Figures for /health.
        self.forwarded = 0
        self.served = 0
        self.fallbacks = 0
        self.lost = 0
        self.leads = 0
        self.referenced = 0

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        self._connecting = asyncio.Lock()
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="maestro-write-lead")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._link is not None:
            self._link.close()
            self._link = None
        await self._step_down("stopping")
        await asyncio.to_thread(self.db.close)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            await self.tick()

    async def tick(self) -> None:
        """Lead: check the lock is still held. Otherwise: try for it, else read who leads."""
        store = self.service.store
        try:
            if store.restart_needed:
                # It cannot apply the log any more: it neither writes for the others nor
                # forwards (its own changes are refused until it is restarted).
                if self.leading:
                    await self._step_down("it needs a restart")
                self._follow(None)
                return
            if self.leading:
                await asyncio.to_thread(functools.partial(self.db.execute, "SELECT 1",
                                                          reconnect=False))
                return
            if await asyncio.to_thread(self._try_lock):
                await self._lead()
                return
            rows = await asyncio.to_thread(
                self.db.execute, f"SELECT replica_id, address, secret, host FROM {self.table}")
            self._follow(tuple(rows[0]) if rows else None)
        except Exception as exc:  # noqa: BLE001 - the lock went with the connection
            if self.leading:
                log.warning("replica %s: lost the write lead (%s); another replica may take "
                            "it", self.replica_id, _first_line(exc))
                await self._step_down("lost its lock")
            else:
                log.debug("looking for the write lead failed: %s", exc)

    def _try_lock(self) -> bool:
        rows = self.db.execute("SELECT pg_try_advisory_lock(%s, %s)", self.key)
        return bool(rows and rows[0][0])

    def _follow(self, target: tuple[str, str, str, str] | None) -> None:
        if target is not None and target[0] == self.replica_id:
            target = None  # this replica's own row from before it stopped leading
        if target == self._target:
            return
        self._target = target
        self.lead_id = target[0] if target else None
        self._retry_at = 0.0
        self._failures = 0
        if self._link is not None:
            self._link.retire()  # what it already sent still gets its answer
            self._link = None

    # ------------------------------------------------------------ leading
    async def _lead(self) -> None:
        """This replica holds the lead lock: listen, and say where. Should either fail, the
        lock is given back (another replica may lead) and tried for again at the next tick."""
        self._follow(None)
        self._secret = secrets.token_hex(32)
        try:
            self._server = await asyncio.start_server(self._serve, self.bind_host, self.port)
            port = self._server.sockets[0].getsockname()[1]
            host = self.advertise_host
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            await asyncio.to_thread(functools.partial(
                self.db.execute,
                f"INSERT INTO {self.table} (one, replica_id, address, secret, host) "
                "VALUES (true, %s, %s, %s, %s) ON CONFLICT (one) DO UPDATE SET "
                "replica_id = EXCLUDED.replica_id, address = EXCLUDED.address, "
                "secret = EXCLUDED.secret, host = EXCLUDED.host, since = now()",
                (self.replica_id, address, self._secret, self.host), reconnect=False))
        except Exception as exc:  # noqa: BLE001 - tried again at the next tick
            server, self._server = self._server, None
            if server is not None:
                server.close()
            log.warning("replica %s could not lead the writes (%s); giving the lead lock back",
                        self.replica_id, _first_line(exc))
            try:
                await asyncio.to_thread(functools.partial(
                    self.db.execute, "SELECT pg_advisory_unlock(%s, %s)", self.key,
                    reconnect=False))
            except Exception:  # noqa: BLE001 - gone with the connection
                pass
            return
        self.leading = True
        self.leads += 1
        self.lead_id = self.replica_id
        log.info("replica %s leads the writes: the other replicas forward their changes to %s",
                 self.replica_id, address)

    async def _step_down(self, why: str) -> None:
        was = self.leading
        self.leading = False
        if self.lead_id == self.replica_id:
            self.lead_id = None
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # Every replica connected is told to send nothing more; what it already sent is
        # answered (run when it came before this, else "not run": it writes that itself).
        for out in list(self._conns.values()):
            out.put(["bye"])
        deadline = time.monotonic() + CALL_TIMEOUT
        while self._calls and time.monotonic() < deadline:
            await asyncio.wait(list(self._calls), timeout=deadline - time.monotonic())
        deadline = time.monotonic() + DRAIN_SECONDS
        while self._conns and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for writer in list(self._conns):
            writer.close()
        if was:
            log.info("replica %s no longer leads the writes (%s)", self.replica_id, why)
            try:  # the lock, if this connection still holds it
                await asyncio.to_thread(functools.partial(
                    self.db.execute, "SELECT pg_advisory_unlock(%s, %s)", self.key,
                    reconnect=False))
            except Exception:  # noqa: BLE001 - gone with the connection
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        challenge = secrets.token_hex(16)
        try:
            writer.write(frame(["hello", challenge, self.replica_id]))
            auth = await asyncio.wait_for(read_frame(reader, HANDSHAKE_BYTES),
                                          HANDSHAKE_TIMEOUT)
            if not (isinstance(auth, list) and len(auth) in (3, 4) and auth[0] == "auth"
                    and _proves(auth[1], self._secret, challenge)):
                log.warning("refused a connection to the write lead from %s: wrong proof",
                            writer.get_extra_info("peername"))
                writer.close()
                return
            # The lead's own proof, for the replica's challenge (a replica of an earlier
            # version sends none and checks none).
            if len(auth) == 4 and not (isinstance(auth[3], str)
                                       and _CHALLENGE.fullmatch(auth[3])):
                writer.close()
                return
            writer.write(frame(["ok", proof(self._secret, auth[3], LEAD)]
                               if len(auth) == 4 else ["ok"]))
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError,
                ValueError):
            writer.close()
            return
        out = Outbox(writer)
        self._conns[writer] = out
        if not self.leading:
            out.put(["bye"])
        try:
            while True:
                message = await read_frame(reader)
                if message == ["ping"]:
                    out.put([0])  # (call ids start at 1)
                    continue
                if not _is_call(message):
                    log.warning("dropped the connection of %s to the write lead: not a call",
                                writer.get_extra_info("peername"))
                    return
                task = asyncio.create_task(self._run_call(message, out))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError):
            pass
        finally:
            self._conns.pop(writer, None)
            writer.close()

    async def _run_call(self, message: list, out: Outbox) -> None:
        cid = message[0]
        store = self.service.store
        try:
            name, args, kwargs = message[1], message[2], message[3]
            fn = FORWARDABLE.get(name)
            if fn is None or not self.leading or store.restart_needed:
                answer = [cid, NOT_RUN, "not the lead" if fn else f"{name} is not forwarded",
                          store.log_head]
            else:
                result = await fn(self.service, *args, **kwargs)
                self.served += 1
                ref = self._reference(result)
                answer = [cid, OK, result, store.log_head] if ref is None \
                    else [cid, REF, ref, store.log_head]
        except ApiError as exc:
            answer = [cid, REFUSED, [exc.status, exc.code, exc.message, exc.details],
                      store.log_head]
        except StorageError as exc:
            answer = [cid, REFUSED, [500, "INTERNAL_ERROR", str(exc), None], store.log_head]
        except Exception as exc:  # noqa: BLE001 - answered like the HTTP server's crash handler
            log.exception("a change forwarded to the write lead failed")
            answer = [cid, REFUSED, [500, "INTERNAL_ERROR", str(exc), None], store.log_head]
        try:
            out.put(answer)
        except Exception as exc:  # noqa: BLE001 - a result that is not JSON
            log.exception("the answer to a forwarded change could not be sent")
            out.put([cid, REFUSED, [500, "INTERNAL_ERROR", str(exc), None], store.log_head])

    def _reference(self, result: Any) -> list | None:
        """[kind, id] when `result` is a big session or task exactly as the committed view
        holds it now (at the head the answer carries); None: answer it whole."""
        if type(result) is not dict:
            return None
        size = len(result.get("events") or ()) + len(result.get("timeline") or ())
        if size < REF_MIN_ENTRIES:
            return None
        eid = result.get("id")
        for kind in ("session", "task"):
            if self.service.view.table(kind).get(eid) is result:
                return [kind, eid]
        return None

    # ------------------------------------------------------------ forwarding
    def forwarding(self) -> bool:
        """Whether this replica's changes go to the lead now."""
        target = self._target
        return not self.leading and target is not None \
            and (self.mode == "on" or target[3] == self.host) \
            and time.monotonic() >= self._retry_at and not self.service.store.restart_needed

    async def forward(self, name: str, args: tuple, kwargs: dict) -> Any:
        """Have the lead run service method `name`; its result (or its refusal raised), once
        this replica has applied the log up to the lead's head. NOT_SENT: run it here."""
        link = self._link
        if link is None or link.broken:
            link = await self._connect()
            if link is None:
                self.fallbacks += 1
                return NOT_SENT
        try:
            answer = await link.call(name, args, kwargs)
        except LeadLost:
            self.lost += 1
            self._failed()
            raise ApiError(503, "INTERNAL_ERROR",
                           f"the replica that writes for this one ({link.lead_id}) stopped "
                           "answering before it said whether the change was made; read the "
                           "current state before trying again") from None
        if answer is NOT_SENT or answer[1] == NOT_RUN:
            self.fallbacks += 1
            return NOT_SENT
        self.forwarded += 1
        self._failures = 0
        _, kind, value, head = answer
        follower = self.service.follower
        if follower is not None:
            await follower.wait_applied(head, APPLY_TIMEOUT)
        if kind == OK:
            return value
        if kind == REF:
            return self._referenced(*value, head)
        status, code, message, details = value
        raise ApiError(status, code, message, details)

    def _referenced(self, kind: str, eid: str, head: int) -> dict:
        """The entity an answer by reference names, from this replica's memory: as of the
        lead's head when no record applied here since changed it (the usual case), else the
        later version (a change of the same entity applied in the same moment)."""
        self.referenced += 1
        data = self.service.view.table(kind).get(eid)
        if data is None:
            raise ApiError(404, f"{kind.upper()}_NOT_FOUND",
                           f"{kind.capitalize()} not found: deleted right after the change",
                           {f"{kind}Id": eid})
        return data

    async def _connect(self) -> LeadLink | None:
        assert self._connecting is not None
        async with self._connecting:
            if self._link is not None and not self._link.broken:
                return self._link
            target = self._target
            if target is None or time.monotonic() < self._retry_at:
                return None
            link = LeadLink(self.replica_id, *target[:3])
            try:
                await link.open()
            except Exception as exc:  # noqa: BLE001 - written here meanwhile
                wait = self._failed()
                log.warning("could not reach the write lead %s at %s (%s); writing here for "
                            "%g s", target[0], target[1], _first_line(exc) or
                            type(exc).__name__, wait)
                return None
            self._link = link
            return link

    def _failed(self) -> float:
        """The lead could not be reached, or stopped answering: write here for a while."""
        wait = min(RETRY_SECONDS * 2 ** self._failures, RETRY_MAX_SECONDS)
        self._failures += 1
        self._retry_at = time.monotonic() + wait
        return wait

    # ------------------------------------------------------------ /health
    def status(self) -> dict:
        """GET /health's `writeLead`: `role` is `lead`, `forwarding` (to `lead`) or `writing`
        (this replica writes itself: no lead known, the lead could not be reached a moment
        ago, or this replica needs a restart)."""
        role = "lead" if self.leading else ("forwarding" if self.forwarding() else "writing")
        return {"role": role, "mode": self.mode, "lead": self.lead_id,
                "forwarded": self.forwarded,
                "served": self.served, "fallbacks": self.fallbacks, "lost": self.lost,
                "referenced": self.referenced, "leads": self.leads}


def _is_call(message: Any) -> bool:
    """[call id, method name, positional arguments, keyword arguments]."""
    return type(message) is list and len(message) == 4 and type(message[0]) is int \
        and message[0] > 0 and type(message[1]) is str and type(message[2]) is list \
        and type(message[3]) is dict and all(type(k) is str for k in message[3])


def advertised_host(replica_url: str) -> str:
    return urlsplit(replica_url).hostname or "127.0.0.1"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
