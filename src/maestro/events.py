"""Events: the envelope of SPEC §10.2 and an in-process bus.

Each event is encoded once, whatever the number of listeners (`Event.frame`). Listeners are
called synchronously in publish order and must not block (the WebSocket hub only enqueues).

Every event of a change carries `seq`, its place in the order all events are published in:
strictly increasing without a gap. On PostgreSQL it is the event's number in the log that every
replica of the database follows, so all replicas publish the same events under the same
numbers. On the file store the committer numbers them, from the start time of the server in
microseconds, so numbers keep growing across restarts (a restart leaves one gap, and a client
asking for events from before it is told to resync)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from . import jsonio
from .encoding import encoded_bytes
from .ids import now_ms

log = logging.getLogger("maestro.events")


@dataclass(slots=True)
class Event:
    type: str
    data: Any
    # Pre-encoded compact JSON of `data`, when the caller already has it (bytes, or a big
    # entity's encoding by parts, joined only when the event is framed).
    encoded_data: Any = None
    # The project the event concerns (agents only hear about their own project).
    project_id: str | None = None
    timestamp: int | None = None
    # The event's place in the order of all events (see the module's docstring).
    seq: int | None = None
    _frame: bytes | None = None

    def frame(self) -> bytes:
        """The envelope with the publish timestamp, built on first use (once per event,
        and not at all when nobody listens)."""
        if self._frame is None:
            self._frame = self.envelope(self.timestamp)
        return self._frame

    def envelope(self, timestamp: int | None = None) -> bytes:
        data = encoded_bytes(self.encoded_data) if self.encoded_data is not None \
            else jsonio.dumps(self.data)
        name = jsonio.dumps(self.type)
        ts = now_ms() if timestamp is None else timestamp
        tail = b"}" if self.seq is None else b',"seq":' + str(self.seq).encode() + b"}"
        return (b'{"type":' + name + b',"event":' + name + b',"data":' + data
                + b',"timestamp":' + str(ts).encode() + tail)


Listener = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        # The seq of the last event published (or, before any, of the last one the server
        # knows of: see Committer and the replica's log).
        self.seq = 0

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def publish(self, events: list[Event]) -> None:
        if events and events[-1].seq is not None:
            self.seq = events[-1].seq
        if not self._listeners:
            return
        ts = now_ms()
        for event in events:
            event.timestamp = ts
            event._frame = None
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception:  # a broken listener never stops the others
                    log.exception("event listener failed on %s", event.type)
