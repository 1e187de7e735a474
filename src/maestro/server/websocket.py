"""The WebSocket event stream (SPEC §10): every client gets every event.

Each client has a bounded queue and its own sender task, so a slow or dead client never delays
the others or a request: when its queue is full it is disconnected (close code 1013), not waited
for. Events arrive already encoded; each is decoded to text once for all clients.

The hub keeps the last `replay` events (at most REPLAY_BYTES of their JSON). A client that connects with `?since=<seq>` (the `seq`
of the last event it received, possibly from another replica of the same database) first gets
every event after that one, then the live ones, with no gap and no duplicate; when the events
after `since` are no longer kept (or are from before this server's start on the file store),
it gets a `resync` event instead, after which it should read the state again. On PostgreSQL the
hub starts with the last events rebuilt from the log (replica.history, `seed`)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..events import Event, EventBus
from ..ids import now_ms
from ..policy import seen_by
from . import _fast

log = logging.getLogger("maestro.ws")

READY_STATES = {0: "CONNECTING", 1: "OPEN", 2: "CLOSING", 3: "CLOSED"}
# The events kept for `?since=` hold at most about this many bytes of JSON: an event keeps the
# entity version it tells of alive, and thousands of versions of big entities would cost the
# server memory and time (a client further behind gets a resync).
REPLAY_BYTES = 16 << 20
# What an event whose size is not known (not an entity's stored encoding) is counted as.
SMALL_EVENT_BYTES = 256


class Client:
    __slots__ = ("ws", "queue", "wakeup", "limit", "lag", "dropped", "state", "closed",
                 "identity", "raw", "direct", "revoked", "floor")

    def __init__(self, ws: WebSocket, limit: int, identity=None, lag: float = 10.0):
        self.ws = ws
        # None for the user; an agent identity hears only its project, with secrets redacted.
        self.identity = identity
        self.queue: collections.deque[tuple[float, str]] = collections.deque()
        self.raw = None
        self.direct = 0
        self.revoked = False
        # Events up to this seq were already delivered (a `since` ahead of this server).
        self.floor: int | None = None
        self.wakeup = asyncio.Event()
        self.limit = limit
        self.lag = lag
        self.dropped = False
        self.state = 1
        self.closed = asyncio.Event()

    def write_frame(self, frame: bytes) -> bool:
        """Write a pre-built frame straight to the connection when nothing is queued before it
        and the connection takes more; False when it must be queued like any other message."""
        raw = self.raw
        if raw is not None and not self.queue and not self.dropped \
                and _fast.write_frame(raw, frame):
            self.direct += 1
            return True
        return False

    def offer(self, text: str, now: float) -> bool:
        """Queue one frame. A client is too far behind, and is dropped, when its oldest
        unsent frame has waited longer than `lag` seconds or its queue holds `limit` frames;
        a burst from one big request does not count against a client that keeps reading."""
        if self.dropped:
            return False
        queue = self.queue
        if queue and (now - queue[0][0] > self.lag or len(queue) >= self.limit):
            self.dropped = True
            self.wakeup.set()
            # The sender may be stuck in a send that never completes (a peer that stopped
            # reading): end the connection from the receiving side instead.
            self.closed.set()
            return False
        queue.append((now, text))
        self.wakeup.set()
        return True


class Hub:
    def __init__(self, bus: EventBus, queue_limit: int = 100_000, lag_seconds: float = 10.0,
                 fast_paths: bool = True, replay: int = 10_000,
                 replay_bytes: int = REPLAY_BYTES):
        self.clients: set[Client] = set()
        self.bus = bus
        # The last events published and their sizes, for clients that reconnect with `since`.
        self.recent: collections.deque[tuple[Event, int]] = collections.deque()
        self.replay = max(replay, 1)
        self.replay_bytes = replay_bytes
        self._recent_bytes = 0
        # Events framed once and written straight to uvicorn's connections (_fast.py); False:
        # every message goes through the ASGI `send` (MAESTRO_FAST_PATHS=0).
        self.fast_paths = fast_paths
        self.queue_limit = queue_limit
        self.lag_seconds = lag_seconds
        self.sent = 0
        self.dropped_clients = 0
        # alive(identity) -> bool: an agent's stream ends with its token.
        self.alive = None
        bus.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        seq = event.seq
        if seq is not None:
            self._keep(event)
        if not self.clients:
            return
        frame = event.frame()
        text = None  # decoded only for a client that cannot take the frame directly
        wire = _fast.text_frame(frame) if self.fast_paths else None
        now = time.monotonic()
        agent_text = None
        for client in self.clients:
            if client.floor is not None:
                if seq is not None and seq <= client.floor:
                    continue
                client.floor = None
            if client.identity is None:
                if not client.write_frame(wire):
                    if text is None:
                        text = frame.decode()
                    client.offer(text, now)
                continue
            if self.alive is not None and not self.alive(client.identity):
                client.revoked = True
                client.closed.set()
                continue
            # What an agent sees (policy.seen_by): its own project, secrets redacted; the
            # redaction is the same for every agent, so the text is made once per event.
            seen = seen_by(client.identity, event.data, event.project_id)
            if seen is None:
                continue
            if agent_text is None:
                agent_text = Event(event.type, seen, seq=event.seq).envelope(
                    event.timestamp).decode()
            client.offer(agent_text, now)
        # The kept event holds what it was built from (shared with the state), not its bytes:
        # a replay frames it again.
        event._frame = None

    def _keep(self, event: Event) -> None:
        encoded = event.encoded_data
        size = SMALL_EVENT_BYTES if encoded is None else \
            len(encoded) if type(encoded) is bytes else getattr(encoded, "size", 0)
        recent = self.recent
        recent.append((event, size))
        total = self._recent_bytes + size
        while len(recent) > self.replay or (total > self.replay_bytes and len(recent) > 1):
            total -= recent.popleft()[1]
        self._recent_bytes = total

    def seed(self, events: list[Event]) -> None:
        """Keep `events` (published before this server started, oldest first, ending where the
        first event it publishes follows) for clients that come back with `since`."""
        if not events:
            return
        kept = list(self.recent)
        following = kept[0][0].seq if kept else self.bus.seq + 1
        if events[-1].seq is None or events[-1].seq + 1 != following:
            return
        self.recent.clear()
        self._recent_bytes = 0
        for event in events:
            self._keep(event)
        for event, _ in kept:
            self._keep(event)

    def _replay(self, client: Client, since: int) -> None:
        """Queue for `client` every event after `since`, or a `resync` when they are not all
        kept; called before the client is added, with no await in between (no gap)."""
        current = self.bus.seq
        recent = self.recent
        now = time.monotonic()
        if since >= current:
            client.floor = since if since > current else None
            return
        oldest = recent[0][0].seq if recent else current + 1
        if since < oldest - 1:
            client.offer(orjson.dumps({"type": "resync", "event": "resync",
                                       "data": {"since": since, "seq": current},
                                       "timestamp": now_ms(), "seq": current}).decode(), now)
            return
        for event, _ in itertools.islice(recent, since - oldest + 1, None):
            if client.identity is None:
                client.offer(event.frame().decode(), now)
                continue
            seen = seen_by(client.identity, event.data, event.project_id)
            if seen is not None:
                client.offer(Event(event.type, seen, seq=event.seq).envelope(
                    event.timestamp).decode(), now)

    def status(self) -> dict:
        clients = [{"readyState": c.state, "readyStateText": READY_STATES[c.state]}
                   for c in self.clients]
        return {"connectedClients": len(clients), "clients": clients}

    def stats(self) -> dict:
        """Diagnostics for /health: clients, frames written directly or queued, drops."""
        return {"clients": len(self.clients),
                "framesDirect": sum(c.direct for c in self.clients),
                "queued": sum(len(c.queue) for c in self.clients),
                "droppedClients": self.dropped_clients}

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        identity = (ws.scope.get("state") or {}).get("identity")
        client = Client(ws, self.queue_limit, identity, self.lag_seconds)
        client.raw = _fast.raw_connection(ws.scope) if self.fast_paths else None
        since = ws.query_params.get("since")
        if since is not None and since.strip().lstrip("-").isdigit():
            self._replay(client, int(since))
        self.clients.add(client)
        sender = asyncio.create_task(self._send_loop(client))
        try:
            await self._receive_loop(client)
        finally:
            client.state = 3
            self.clients.discard(client)
            sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):
                pass
            if client.dropped:
                await self._close_slow(client)
            elif client.revoked:
                try:
                    await asyncio.wait_for(client.ws.close(code=1008, reason="token ended"), 1.0)
                except Exception:
                    pass

    async def _close_slow(self, client: Client) -> None:
        self.dropped_clients += 1
        log.warning("disconnecting a WebSocket client that stopped reading (%d events behind)",
                    len(client.queue))
        client.queue.clear()
        try:
            await asyncio.wait_for(client.ws.close(code=1013, reason="too slow"), 1.0)
        except Exception:
            pass

    async def _receive_loop(self, client: Client) -> None:
        ws = client.ws
        receiver = asyncio.ensure_future(ws.receive())
        dropped = asyncio.ensure_future(client.closed.wait())
        try:
            while True:
                done, _ = await asyncio.wait({receiver, dropped},
                                             return_when=asyncio.FIRST_COMPLETED)
                if dropped in done:
                    return
                try:
                    message = receiver.result()
                except (WebSocketDisconnect, RuntimeError):
                    return
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None and message.get("bytes") is not None:
                    text = message["bytes"].decode(errors="replace")
                if text:
                    self._answer(client, text)
                receiver = asyncio.ensure_future(ws.receive())
        finally:
            receiver.cancel()
            dropped.cancel()

    def _answer(self, client: Client, text: str) -> None:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            return  # unparsable client frames are ignored
        if isinstance(message, dict) and message.get("type") == "ping":
            client.offer(orjson.dumps({"type": "pong", "timestamp": now_ms()}).decode(),
                         time.monotonic())

    async def _send_loop(self, client: Client) -> None:
        ws = client.ws
        try:
            while True:
                await client.wakeup.wait()
                client.wakeup.clear()
                if client.dropped:  # closed by serve() once the receive loop has ended
                    client.closed.set()
                    return
                while client.queue:
                    _, text = client.queue[0]
                    await ws.send({"type": "websocket.send", "text": text})
                    client.queue.popleft()  # after the send: its age measures the lag
                    self.sent += 1
        except (WebSocketDisconnect, RuntimeError, OSError):
            client.closed.set()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.debug("WebSocket send failed", exc_info=True)
            client.closed.set()

    async def close_all(self) -> None:
        for client in list(self.clients):
            client.state = 2
            if client.ws.application_state == WebSocketState.CONNECTED:
                try:
                    await asyncio.wait_for(client.ws.close(code=1001, reason="server stopping"),
                                           1.0)
                except Exception:
                    pass
            client.closed.set()
