"""WebSocket fan-out: N clients listen while one HTTP client PATCHes a task M times in a row.

Each PATCH carries a marker (`ws-<run>-<i>`) in the task's description, so a client finds which
PATCH an event belongs to with one byte search instead of a JSON parse. Delivery latency is the
time from just before the PATCH is written to the moment a client has the frame; every
(client, PATCH) pair that never arrives is a lost event. The clients may be spread over several
servers (replicas of one database): `spread` gives each server's share, and the figures of each
share are kept apart as well."""

from __future__ import annotations

import asyncio
import secrets
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .client import HttpConnection, Measurement, Meter, Target, percentile

CONNECT_BATCH = 100


class _Listener:
    __slots__ = ("arrivals", "closed", "count", "ws")

    def __init__(self, ws, slots: int):
        self.ws = ws
        self.arrivals = [0.0] * slots
        self.count = 0
        self.closed = False

    async def listen(self, marker: bytes) -> None:
        perf = time.perf_counter
        arrivals = self.arrivals
        width = len(marker)
        try:
            while True:
                frame = await self.ws.recv(decode=False)
                now = perf()
                at = frame.find(marker)
                if at < 0:
                    continue
                end = frame.find(b'"', at + width)
                index = int(frame[at + width:end])
                if not arrivals[index]:
                    arrivals[index] = now
                    self.count += 1
        except ConnectionClosed:
            self.closed = True


async def _open(target: Target, count: int, slots: int, deflate: bool,
                token: str | None) -> list[_Listener]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    listeners: list[_Listener] = []
    for start in range(0, count, CONNECT_BATCH):
        batch = min(CONNECT_BATCH, count - start)
        sockets = await asyncio.gather(*(
            connect(target.ws_url, compression="deflate" if deflate else None, max_size=None,
                    ping_interval=None, open_timeout=60, close_timeout=2,
                    additional_headers=headers)
            for _ in range(batch)))
        listeners.extend(_Listener(ws, slots) for ws in sockets)
    return listeners


async def _until(predicate, deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def fanout(target: Target, conn: HttpConnection, task_id: str, clients: int,
                 patches: int, server_pid: int | None, *, deflate: bool = False,
                 token: str | None = None, gap_ms: float = 0.0, settle_s: float = 15.0,
                 spread: list[tuple[Target, int]] | None = None) -> Measurement:
    """Measure delivery of `patches` task:updated events to `clients` WebSocket clients of
    `target`, or with `spread`, to that many clients of each of those servers (`target` and
    `clients` are then ignored; `conn` may be connected to any server). With `spread`,
    `m.extra["groups"]` has the deliveries, losses and latencies of each server's clients."""
    if spread is None:
        spread = [(target, clients)]
    clients = sum(count for _, count in spread)
    run = secrets.token_hex(3)
    marker = f"ws-{run}-".encode()
    path = f"/api/tasks/{task_id}".encode()
    warmup = patches  # the extra slot: a first PATCH that proves every client is subscribed
    m = Measurement(f"WebSocket fan-out: {clients} clients, {patches} task PATCHes",
                    f"ws_fanout_{clients}", concurrency=clients)
    groups: list[list[_Listener]] = []
    listeners: list[_Listener] = []
    try:
        for where, count in spread:
            groups.append(await _open(where, count, patches + 1, deflate, token))
            listeners.extend(groups[-1])
    except BaseException:
        await asyncio.gather(*(asyncio.wait_for(lst.ws.close(), 5) for lst in listeners),
                             return_exceptions=True)
        raise
    readers = [asyncio.create_task(lst.listen(marker)) for lst in listeners]
    try:
        body = b'{"description":"ws-%s-%d"}' % (run.encode(), warmup)
        status, answer = await conn.request(b"PATCH", path, body)
        if status >= 400:
            raise RuntimeError(f"PATCH {path.decode()} failed: {status} {answer[:200]!r}")
        subscribed = await _until(lambda: all(lst.arrivals[warmup] or lst.closed
                                              for lst in listeners), 30.0)
        if not subscribed:
            m.notes.append("not every client heard the warm-up event within 30 s")
        sent = [0.0] * patches
        perf = time.perf_counter
        with Meter(server_pid) as meter:
            for i in range(patches):
                body = b'{"description":"ws-%s-%d"}' % (run.encode(), i)
                sent[i] = perf()
                status, answer = await conn.request(b"PATCH", path, body)
                if status >= 400:
                    m.errors += 1
                    m.first_error = m.first_error or f"{status} {answer[:200]!r}"
                if gap_ms:
                    await asyncio.sleep(gap_ms / 1000.0)
            expected = patches + 1
            await _until(lambda: all(lst.count >= expected or lst.closed
                                     for lst in listeners), settle_s)
        last = max((max(lst.arrivals[:patches]) for lst in listeners), default=0.0)
        meter.fill(m)
        if last and sent:
            m.seconds = last - sent[0]
        for lst in listeners:
            arrivals = lst.arrivals
            m.latencies.extend(arrivals[i] - sent[i] for i in range(patches) if arrivals[i])
        delivered = len(m.latencies)
        lost = clients * patches - delivered
        closed = sum(1 for lst in listeners if lst.closed)
        m.ops = delivered
        m.notes.append(f"ops/s = deliveries/s; {delivered:,} of {clients * patches:,} "
                       f"deliveries, lost {lost:,}"
                       + (f", {closed} client(s) disconnected by the server" if closed else ""))
        if delivered:
            # All listeners share one client process, so a frame waits for the client to read
            # the frames queued before it: say how much of the latency that can explain.
            per = m.client_cpu / (delivered + clients) * 1e6
            m.notes.append(f"client reads cost {per:.0f} us/delivery, i.e. up to "
                           f"{per * clients / 1000:.1f} ms to read one event on every client")
        m.extra = {"clients": clients, "patches": patches, "delivered": delivered,
                   "lost": lost, "disconnected": closed, "deflate": deflate}
        if len(spread) > 1 or spread[0][0] is not target:
            m.extra["groups"] = [_group(where, group, sent, patches)
                                 for (where, _), group in zip(spread, groups)]
        return m
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.gather(*(asyncio.wait_for(lst.ws.close(), 5) for lst in listeners),
                             return_exceptions=True)


def _group(where: Target, listeners: list[_Listener], sent: list[float], patches: int) -> dict:
    """The figures of the clients of one server."""
    latencies = sorted(lst.arrivals[i] - sent[i] for lst in listeners for i in range(patches)
                       if lst.arrivals[i])
    return {"server": f"{where.host}:{where.port}", "clients": len(listeners),
            "delivered": len(latencies), "lost": len(listeners) * patches - len(latencies),
            "disconnected": sum(1 for lst in listeners if lst.closed),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 3),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
            "max_ms": round(latencies[-1] * 1000, 3) if latencies else None}
