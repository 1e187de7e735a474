"""The PostgreSQL store's write path in a helper process.

A batch's rows are planned from the link rows the store knows, turned into one SQL text and sent
in one round trip (postgres.py). In the server process that is a thread: it takes the
interpreter lock from the event loop for every step and waits for it after every reply. Here the
helper process does all of it on the other core, with the writing connection: the server sends
what only it can make (each entity row's JSON, the new list entries, the log records, made from
its cached JSON) and the helper plans, writes and reports. The server's event loop writes the
frames and reads the replies itself (worker._Channel); a second batch may be sent before the
first one's reply. The turn lock of servers writing at once (turns.py) is taken on the same
connection, in the same order as the batches.

Protocol on stdin/stdout, frames of a 4-byte big-endian length and a body (as worker.py):
  {"op": "init", "dsn": ..., "schema": ..., "origin": ..., "retention": n, "at": log head,
   "links": [[kind, id, field, [ids], [positions]]] | null, "inline": [[kind, id, field]]}
      -> {"ok": true, "linksAt": n, "stats": {...}} or {"ok": false, "error": message}
  (links null: a writer process started anew after the last one died reads the link rows
  itself, with the log's head, from one snapshot: "linksAt", at least the server's head)
  {"op": "batch", "expected": log head, "firstEvent": n, "counts": [events per record],
   "rows": [[kind, id, fresh, project, lists] | [kind, id, fresh]]}, then one frame per record
  (its log record), then one frame per row that is not a deletion (its entity row's JSON)
      -> {"ok": true, "ready": k, "error": null|message, "inlineGone": [...], "stats": ...}
      -> {"ok": false, "moved": true|false, "error": message, "stats": ...}
  {"op": "resume"}: accept batches again after a refused or failed one (until then every batch
  is answered ready 0: it was built on changes that were not stored)
  {"op": "shapes", "text": ..., "seq": n}: the link rows the record n of another server left
  (postgres_log); ignored when the link rows known here are already past it
  {"op": "turn", "waitMs": n} -> {"ok": true, "head": log head | null}; {"op": "give"}
  {"op": "maintenance"}, {"op": "ping"}, {"op": "close"} -> {"ok": true, "stats": ...}"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

import orjson

from .. import heap, jsonio
from . import postgres_log, worker as channel
from .base import Op, Outcome

if TYPE_CHECKING:
    from .postgres import PostgresStore

log = logging.getLogger("maestro.store")

# Batches in flight to the helper: the server prepares the next while the helper writes one.
PIPELINE_DEPTH = 2
# The longest a new writer process may take to start, connect and read the link rows when it
# replaces one that died (every change of the server waits meanwhile).
INIT_TIMEOUT_SECONDS = 60.0


# ------------------------------------------------------------------ the helper process
def main() -> None:
    from .postgres import PostgresStore

    channel._die_with_parent()
    heap.tune()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    frames = channel._FrameReader(stdin)
    store: PostgresStore | None = None
    refusing: str | None = None

    def reply(body: dict) -> None:
        if store is not None:
            body["stats"] = store.writer_stats()
        channel._send(stdout, jsonio.dumps(body))

    while True:
        try:
            message = jsonio.loads(frames.next())
        except EOFError:
            if store is not None:
                store.close()
            return
        op = message.get("op")
        if op == "batch":
            counts = message["counts"]
            logged = [frames.next() for _ in counts]
            rows = []
            for row in message["rows"]:
                if len(row) == 3:
                    rows.append((row[0], row[1], row[2], None, None, None))
                else:
                    rows.append((row[0], row[1], row[2], row[3], row[4], frames.next()))
            if refusing is not None:
                reply({"ok": True, "ready": 0, "error": refusing})
                continue
            answer = _write(store, message, rows, logged, counts)
            if not answer["ok"]:
                # The batches sent after it were built on its changes: refused until the
                # server, having undone them, says "resume".
                refusing = f"an earlier change could not be stored ({answer['error']})"
            reply(answer)
            continue
        if op == "init":
            try:
                store = PostgresStore(message["dsn"])
                store.attach_writer(message)
                if message.get("links") is None:
                    store.end_connections(message.get("replaces") or {})
                    store.load_links(int(message["at"]))
            except Exception as exc:  # noqa: BLE001 - reported to the server, which gives up
                if store is not None:
                    store.close()
                store = None
                reply({"ok": False, "error": str(exc)})
                continue
            reply({"ok": True, "linksAt": store.links_seq})
        elif op == "resume":
            refusing = None
            reply({"ok": True})
        elif op == "shapes":
            seq, text = message.get("seq"), message.get("text")
            if seq is None or seq > store.links_seq:
                postgres_log.adopt_shapes(store.shapes, text)
                if seq is not None:
                    store.links_seq = seq
            elif text:
                # The link rows read at start-up already hold this record's; which lists it
                # moved out of entity rows came from the server's (older) view.
                postgres_log.adopt_inline(store.shapes, text)
            reply({"ok": True})
        elif op == "turn":
            reply({"ok": True, "head": store.take_turn(int(message["waitMs"]))})
        elif op == "give":
            store.give_turn()
            reply({"ok": True})
        elif op == "maintenance":
            store.maintenance()
            reply({"ok": True})
        elif op == "ping":
            reply({"ok": True})
        elif op == "close":
            if store is not None:
                store.close()
            reply({"ok": True})
            return
        else:
            reply({"ok": False, "error": f"unknown message {op!r}"})
    # (the loop ends with the server's pipe)


def _write(store: PostgresStore, message: dict, rows: list, logged: list[bytes],
           counts: list[int]) -> dict:
    """One batch; the refusal of a batch makes the helper refuse the ones after it."""
    store.log_head = int(message["expected"])
    store.log_events = int(message["firstEvent"])
    inline = store.shapes.inline
    before = {(kind, eid, name) for kind, eid, _, _, lists, _ in rows if lists
              for name, _, _ in lists if (kind, eid, name) in inline} if inline else ()
    try:
        store.write_rows(rows, logged, counts)
    except postgres_log.LogMoved as exc:
        return {"ok": False, "moved": True, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - nothing of the batch was stored
        return {"ok": False, "moved": False, "error": str(exc) or type(exc).__name__}
    store.links_seq = store.log_head  # the link rows as this batch left them
    out: dict[str, Any] = {"ok": True, "ready": len(logged), "error": None}
    if before:
        out["inlineGone"] = [list(key) for key in before if key not in inline]
    return out


# ------------------------------------------------------------------ the server's side
def spawn(otherwise: str = "writing in-process") -> channel.StoreWorker | None:
    """Start the helper process (it boots while the server loads), or None when it cannot
    (logged with what happens `otherwise`)."""
    return channel.start_helper(None, __name__, "PostgreSQL writer process", otherwise)


class WriterProxy:
    """Commits a PostgresStore's batches through the helper process."""

    def __init__(self, store: PostgresStore, helper: channel.StoreWorker):
        self.store = store
        self.helper = helper
        # Records and events sent and not yet answered: the next batch follows them in the log.
        self._records = 0
        self._events = 0

    @classmethod
    def hand_over(cls, store: PostgresStore, helper: channel.StoreWorker,
                  anew: bool = False, replaces: dict | None = None) -> WriterProxy | None:
        """Give the loaded store's write path to the helper, with the link rows the store
        loaded, or (`anew`: the last helper died) for the helper to read itself, after ending
        the database connections of the dead one (`replaces`: its pid and last backend pid).
        None when it cannot take it (the server then writes in-process, or tries again
        later)."""
        shapes = store.shapes
        init = {"op": "init", "dsn": store.dsn, "schema": store.schema, "origin": store.origin,
                "retention": store.log_retention, "at": store.log_head,
                "links": None if anew else [[*key, ids, positions] for key, (ids, positions)
                                            in shapes.links.items()],
                "inline": [list(key) for key in shapes.inline]}
        if anew and replaces is not None:
            init["replaces"] = replaces
        helper.remedy = "a new writer process is being started"
        try:
            answer = helper.request(jsonio.dumps(init), timeout=INIT_TIMEOUT_SECONDS if anew
                                    else None)
        except OSError as exc:
            answer = {"ok": False, "error": str(exc)}
        if not answer.get("ok"):
            if not anew:
                log.warning("PostgreSQL writer process unavailable (%s); writing in-process",
                            answer.get("error"))
            helper.close()
            if anew:
                raise OSError(answer.get("error") or "the writer process did not start")
            return None
        return cls(store, helper)

    def _send(self, body: bytes, frames: list[bytes] | None = None) -> asyncio.Future:
        helper = self.helper
        helper.attach_loop(asyncio.get_running_loop())
        return helper.request_async(body, frames)

    def _remember(self, answer: dict) -> dict:
        if "stats" in answer:
            self.helper.stats = answer["stats"]
        return answer

    def send_batch(self, records: list[list[Op]], txs) -> asyncio.Future:
        store = self.store
        rows, logged, counts = store.described(records, txs)
        header = {"op": "batch", "expected": store.log_head + self._records,
                  "firstEvent": store.log_events + self._events, "counts": counts,
                  "rows": [row[:5] if row[5] is not None else row[:3] for row in rows]}
        try:
            body = orjson.dumps(header)
        except TypeError:  # integers beyond 64 bits in an entry, kept verbatim by jsonio
            header["rows"] = [row if len(row) == 3 else
                              [*row[:4], [(name, since, _verbatim(items))
                                          for name, since, items in row[4]]]
                              for row in header["rows"]]
            body = orjson.dumps(header)
        frames = logged + [row[5] for row in rows if row[5] is not None]
        loop = asyncio.get_running_loop()
        result = loop.create_future()
        try:
            sent = self._send(body, frames)
        except OSError as exc:
            result.set_exception(exc)
            return result
        n, events = len(records), sum(counts)
        self._records += n
        self._events += events

        def done(fut: asyncio.Future) -> None:
            self._records -= n
            self._events -= events
            try:
                answer = self._remember(fut.result())
            except BaseException as exc:  # noqa: BLE001 - handed on to the committer
                if not result.done():
                    result.set_exception(exc)
                return
            if not answer.get("ok"):
                error = answer.get("error") or "the PostgreSQL writer refused the batch"
                exc = postgres_log.LogMoved(error) if answer.get("moved") else OSError(error)
                if not result.done():
                    result.set_exception(exc)
                return
            ready = int(answer["ready"])
            if ready:
                store._appended(ready, counts, txs)
                for key in answer.get("inlineGone") or ():
                    store.shapes.inline.discard(tuple(key))
            if not result.done():
                result.set_result(Outcome(ready, answer.get("error")))

        sent.add_done_callback(done)
        return result

    async def request(self, message: dict) -> dict:
        """One message after everything sent before; its answer."""
        return self._remember(await self._send(jsonio.dumps(message)))

    def post(self, message: dict) -> None:
        """One message after everything sent before, its answer not awaited (dropped while
        the helper is dead: the next one starts from the database)."""
        if self.helper.dead is not None:
            return
        try:
            fut = self._send(jsonio.dumps(message))
        except OSError as exc:
            log.warning("the PostgreSQL writer process is gone: %s", exc)
            return
        fut.add_done_callback(self._posted)

    def _posted(self, fut: asyncio.Future) -> None:
        if fut.cancelled():
            return
        if fut.exception() is not None:
            log.warning("the PostgreSQL writer process failed: %s", fut.exception())
        else:
            self._remember(fut.result())

    def attach_loop(self) -> None:
        """Read the helper's pipe on the running loop from now on, so that its death is
        noticed at once rather than at the next write."""
        self.helper.attach_loop(asyncio.get_running_loop())

    def detach_loop(self) -> None:
        self.helper.detach_loop()

    def close(self) -> None:
        self.helper.close()

    def replaced(self) -> dict:
        """What a new writer process needs to end this (dead) one's database connections."""
        pid = self.helper._proc.pid if self.helper._proc is not None else None
        return {"pid": pid, "backendPid": self.helper.stats.get("backendPid")}

    @property
    def stats(self) -> dict:
        return self.helper.stats

    @property
    def dead(self) -> str | None:
        return self.helper.dead


def _verbatim(items):
    """A list's entries as JSON fragments made by jsonio (which keeps integers beyond 64
    bits), for a message orjson could not encode; link ids are plain strings."""
    if items is None:
        return None
    return [item if type(item) is str else orjson.Fragment(jsonio.dumps(item))
            for item in items]
