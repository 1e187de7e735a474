"""The JSON-file store's write path in a helper process.

Writing an entity file is a few system calls (temp file, write, rename) that cost tens to
hundreds of microseconds of kernel time each on some disks, and a request may touch several
entities. On the event loop that time is taken from every other request; in a thread it queues
for the interpreter lock after every call. The helper process runs the very same `FileStore`
write path (stage the files, append + fdatasync the journal, swap the files into place,
checkpoint) on the other core, one whole batch per round trip, while the server keeps serving.
The server's event loop writes the batches and reads the replies itself (`_Channel`); a second
batch may be sent before the first one's reply.

The server loads the data directory and holds its lock; the helper only writes. Protocol on
stdin/stdout: frames of a 4-byte big-endian length and a JSON document.
  {"op": "init", "strays": [[kind, id, [paths]]], "known": [folders],
   "checkpointBytes": n}  -> {"ok": true}
  {"op": "batch", "count": n}, then n more frames, each a record's journal line (built by
  the server from cached JSON; the helper reads the changes from them and appends them as
  they are)
      -> {"ok": true, "ready": k, "error": null|message, "stats": {...}}   (k records committed)
      -> {"ok": false, "error": message, "stats": {...}}                  (nothing committed)
  {"op": "flush", "count": n}, then n journal lines of whole values of entities whose files
  are behind (their last changes were journaled as deltas): journaled and written like a
  batch, never refused for a file that cannot be written yet
      -> {"ok": true, "flushed": true|false, "stats": {...}}  (false: declined, as a batch
         would be refused after a refusal; nothing written)
      -> {"ok": false, "error": message, "stats": {...}}       (the journal write failed)
  {"op": "maintenance"} / {"op": "close"} -> {"ok": true, "stats": {...}}
  {"op": "resume"} -> {"ok": true}: accept batches again after a refusal or failure (until
  then every batch is answered ready 0: the server may send the next batch before the reply
  to the previous one arrives, and such a batch is built on the refused changes)."""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

from .. import heap, jsonio
from .files.syscalls import write_all

log = logging.getLogger("maestro.store")

_HEADER = struct.Struct(">I")
_F_SETPIPE_SZ = 1031


def _read_exact(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("the store process closed its pipe")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _send(fd: int, body: bytes) -> None:
    write_all(fd, _HEADER.pack(len(body)) + body)


def _receive(fd: int):
    (size,) = _HEADER.unpack(_read_exact(fd, 4))
    return jsonio.loads(_read_exact(fd, size))


def batch_message(count: int) -> bytes:
    """The head of a batch: its journal lines follow as `count` frames."""
    return b'{"op":"batch","count":%d}' % count


class _FrameReader:
    """Frames from a pipe, read in large chunks (a batch and its journal lines arrive as
    several frames; one read usually brings them all)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray()
        self.pos = 0

    def _fill(self, need: int) -> None:
        while len(self.buf) - self.pos < need:
            if self.pos:
                del self.buf[:self.pos]
                self.pos = 0
            chunk = os.read(self.fd, max(need - (len(self.buf) - self.pos), 65536))
            if not chunk:
                raise EOFError("the server closed the pipe")
            self.buf += chunk

    def next(self) -> bytes:
        self._fill(4)
        (size,) = _HEADER.unpack_from(self.buf, self.pos)
        self._fill(4 + size)
        start = self.pos + 4
        self.pos = start + size
        return bytes(self.buf[start:self.pos])


# ------------------------------------------------------------------ the helper process
def _die_with_parent() -> None:
    """The helper must never outlive the server: a server killed with -9 must look like a
    crash on disk too (no checkpoint behind its back, no second writer when a new server
    starts and replays the journal)."""
    parent = os.getppid()
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent or parent == 1:
        os._exit(1)


def main() -> None:
    from .files import FileStore, decode_journal_line

    _die_with_parent()
    heap.tune()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    store = FileStore(Path(sys.argv[1]), worker=False)

    # Set when a batch is refused or fails: the batches the server sent after it (it may
    # have several in flight) are refused too, until it says "resume".
    refusing: str | None = None
    frames = _FrameReader(stdin)
    while True:
        try:
            message = jsonio.loads(frames.next())
        except EOFError:
            store.close()
            return
        op = message.get("op")
        if op == "init":
            store.attach({(k, i): set(paths) for k, i, paths in message["strays"]},
                         set(message["known"]), int(message["checkpointBytes"]))
            reply = {"ok": True}
        elif op == "batch":
            lines = [frames.next() for _ in range(message["count"])]
            records = [decode_journal_line(line) for line in lines]
            if any(record is None for record in records):
                # Never expected (the server just encoded them): refuse, change nothing.
                _send(stdout, jsonio.dumps({"ok": False, "error": "unreadable batch",
                                            "stats": store.stats()}))
                refusing = "an earlier batch was unreadable"
                continue
            if refusing:
                # Sent before the server learnt that an earlier batch was refused: built on
                # changes that never reached the journal, so it must not reach it either.
                _send(stdout, jsonio.dumps({"ok": True, "ready": 0, "error": refusing,
                                            "stats": store.stats()}))
                continue
            try:
                outcome = store.prepare_batch(records)
                ready, error = outcome.accepted, outcome.reason
            except Exception as exc:  # noqa: BLE001 - reported to the server, never fatal here
                ready, error = 0, str(exc)
            reply = {"ok": True, "ready": ready, "error": error}
            if ready < len(records):
                refusing = f"an earlier change was refused ({error})"
            if ready:
                try:
                    store.write_batch(records[:ready], lines[:ready])
                except Exception as exc:  # noqa: BLE001
                    reply = {"ok": False, "error": str(exc)}
                    refusing = f"an earlier change could not be stored ({exc})"
                else:
                    store.apply_batch(records[:ready])
                    if store.wants_maintenance():
                        try:
                            store.checkpoint_in_background()
                        except Exception:  # noqa: BLE001 - the journal is kept; retried later
                            log.exception("store checkpoint failed")
            reply["stats"] = store.stats()
        elif op == "flush":
            lines = [frames.next() for _ in range(message["count"])]
            records = [decode_journal_line(line) for line in lines]
            reply = {"ok": True, "flushed": False}
            if not refusing and all(record is not None for record in records):
                try:
                    for record, line in zip(records, lines):
                        store.flush(record, line)
                except Exception as exc:  # noqa: BLE001 - the entities stay behind
                    reply = {"ok": False, "error": str(exc)}
                else:
                    reply["flushed"] = True
                    if store.wants_maintenance():
                        try:
                            store.checkpoint_in_background(wait=True)
                        except Exception:  # noqa: BLE001 - the journal is kept
                            log.exception("store checkpoint failed")
            reply["stats"] = store.stats()
        elif op == "resume":
            refusing = None
            reply = {"ok": True, "stats": store.stats()}
        elif op == "maintenance":
            _maintain(store)
            reply = {"ok": True, "stats": store.stats()}
        elif op == "close":
            store.close()
            _send(stdout, jsonio.dumps({"ok": True, "stats": store.stats()}))
            return
        else:
            reply = {"ok": False, "error": f"unknown message {op!r}"}
        _send(stdout, jsonio.dumps(reply))


def _maintain(store) -> None:
    try:
        store.maintenance()
    except Exception:  # noqa: BLE001 - a failed checkpoint keeps the journal; retried later
        log.exception("store maintenance failed")


# ------------------------------------------------------------------ the server's side
def start_helper(root: Path | None, module: str, what: str,
                 otherwise: str = "writing in-process") -> StoreWorker | None:
    """Start a helper process running `module`'s main (it boots while the server loads), or
    None when it cannot be started (logged with what happens `otherwise`)."""
    helper = StoreWorker(root, module)
    try:
        helper.spawn()
    except OSError as exc:
        log.warning("%s unavailable (%s); %s", what, exc, otherwise)
        helper.close()
        return None
    return helper


class StoreWorker:
    """Talks to the helper process: blocking round trips (`request`) while the store opens and
    closes, the event loop's non-blocking channel (`request_async`) in between."""

    def __init__(self, root: Path | None, module: str = "maestro.store.worker"):
        """`root`: the data directory handed to the helper; `module`: whose `main()` the
        helper runs (the PostgreSQL writer uses the same channel, see pg_writer.py)."""
        self.root = root
        self.module = module
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.stats: dict = {}
        self.dead: str | None = None
        # What the server does about a dead helper, told with its death, and who to tell
        # (called once, on whichever thread noticed it).
        self.remedy = "restart the server"
        self.on_dead = None
        self._channel: _Channel | None = None

    def spawn(self) -> None:
        """Start the helper process; it waits for `init` (so it can boot while the server
        loads the data directory)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", f"from {self.module} import main; main()",
             *([str(self.root)] if self.root is not None else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
            start_new_session=True)  # Ctrl-C in a terminal reaches the server, which stops it
        for fd in (self._proc.stdin.fileno(), self._proc.stdout.fileno()):
            try:  # room for a whole batch, so the loop rarely waits to write one
                fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
            except OSError:
                pass

    def init(self, strays: dict, known: set[str], checkpoint_bytes: int) -> None:
        """Hand over the loaded store: from the reply on, the helper owns the journal."""
        self.request(jsonio.dumps({"op": "init",
                                   "strays": [[k, i, sorted(p)] for (k, i), p in strays.items()],
                                   "known": sorted(known),
                                   "checkpointBytes": checkpoint_bytes}))

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """From now on requests go through `request_async` on `loop`: the event loop writes
        the batch and wakes up on the reply itself, with no thread in between (a thread
        waits for the interpreter lock at every step while the loop is busy)."""
        if self._channel is None and self.dead is None:
            self._channel = _Channel(loop, self._proc.stdin.fileno(),
                                     self._proc.stdout.fileno(), self._channel_died)

    def detach_loop(self) -> None:
        """Back to blocking round trips (`request`), e.g. before closing from a thread. Call
        it on the loop's thread, once no request is in flight."""
        channel, self._channel = self._channel, None
        if channel is not None:
            busy = bool(channel.pending or channel.out)
            channel.close()
            if busy and self.dead is None:  # the two sides no longer agree on the next frame
                self._channel_died("detached with a request in flight")

    def _channel_died(self, why: str) -> str:
        if self.dead is None:
            self.dead = f"the store process stopped ({why}); {self.remedy}"
            log.critical(self.dead)
            if self.on_dead is not None:
                try:
                    self.on_dead()
                except Exception:  # noqa: BLE001 - the death is reported all the same
                    log.exception("reporting the store process's death failed")
        return self.dead

    def request_async(self, body: bytes, lines: list[bytes] | None = None) -> asyncio.Future:
        """Send one request now; the future resolves to its reply (replies come in order)."""
        if self.dead is not None:
            raise OSError(self.dead)
        frame = _HEADER.pack(len(body)) + body
        if lines is not None:
            frame += b"".join(_HEADER.pack(len(line)) + line for line in lines)
        return self._channel.send(frame)

    def kill(self) -> None:
        """End the helper process at once (one that died, or no longer answers in step)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)

    def request(self, body: bytes, lines: list[bytes] | None = None,
                timeout: float | None = None) -> dict:
        """One round trip; OSError when the helper is gone (the file store then refuses
        writes: whether the last batch reached the journal is unknown until a restart replays
        it; PostgreSQL's writer process is replaced, see `remedy`). `lines` (a batch's journal
        lines) follow the message as one more frame each. With `timeout`, a helper that has
        not begun to answer within that many seconds is killed and reported dead."""
        with self._lock:
            if self.dead is not None:
                raise OSError(self.dead)
            try:
                if lines is not None:
                    body = _HEADER.pack(len(body)) + body + b"".join(
                        _HEADER.pack(len(line)) + line for line in lines)
                    write_all(self._proc.stdin.fileno(), body)
                else:
                    _send(self._proc.stdin.fileno(), body)
                if timeout is not None and not select.select(
                        [self._proc.stdout.fileno()], [], [], timeout)[0]:
                    self._proc.kill()
                    raise OSError(f"no answer within {timeout:g} s")
                reply = _receive(self._proc.stdout.fileno())
            except (OSError, EOFError, ValueError) as exc:
                raise OSError(self._channel_died(str(exc))) from None
        if "stats" in reply:
            self.stats = reply["stats"]
        return reply

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            if self.dead is None:
                self.request(b'{"op":"close"}')
            self._proc.stdin.close()
            self._proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait(5)
        finally:
            if self._proc.stdout:
                self._proc.stdout.close()
            self._proc = None


class _Channel:
    """Frames to and from the helper on the event loop: non-blocking pipes, a reader callback
    and one future per request, resolved in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wfd: int, rfd: int, on_death):
        self.loop, self.wfd, self.rfd = loop, wfd, rfd
        self.on_death = on_death
        self.pending: collections.deque[asyncio.Future] = collections.deque()
        self.out = bytearray()
        self.inbox = bytearray()
        self.closed = False
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        loop.add_reader(rfd, self._readable)

    def send(self, frame: bytes) -> asyncio.Future:
        fut = self.loop.create_future()
        self.pending.append(fut)
        if self.out:
            self.out += frame
            return fut
        try:
            written = os.write(self.wfd, frame)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._die(str(exc))
            return fut
        if written < len(frame):
            self.out += frame[written:]
            self.loop.add_writer(self.wfd, self._writable)
        return fut

    def _writable(self) -> None:
        try:
            written = os.write(self.wfd, self.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._die(str(exc))
            return
        del self.out[:written]
        if not self.out:
            self.loop.remove_writer(self.wfd)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.rfd, 1 << 20)
        except BlockingIOError:
            return
        except OSError as exc:
            self._die(str(exc))
            return
        if not chunk:
            self._die("it closed its pipe")
            return
        inbox = self.inbox
        inbox += chunk
        while len(inbox) >= 4:
            (size,) = _HEADER.unpack_from(inbox)
            if len(inbox) < 4 + size:
                break
            body = bytes(inbox[4:4 + size])
            del inbox[:4 + size]
            if not self.pending:
                self._die("it answered a request that was never sent")
                return
            try:
                reply = jsonio.loads(body)
            except ValueError as exc:
                self._die(f"unreadable reply: {exc}")
                return
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_result(reply)

    def _die(self, why: str) -> None:
        err = OSError(self.on_death(why))
        self.close()
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_exception(err)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.rfd)
        if self.out:
            self.loop.remove_writer(self.wfd)
        for fd in (self.wfd, self.rfd):
            try:
                os.set_blocking(fd, True)
            except OSError:
                pass
