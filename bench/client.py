"""The measuring side: a lean keep-alive HTTP/1.1 client on raw asyncio streams, a closed-loop
runner that times every request, and meters for CPU time and memory.

The client must not be the bottleneck on a 2-core machine shared with the server, so a request
is one pre-formatted bytes write and a response is one header read plus one exact body read
(Content-Length framing; chunked and close-delimited bodies are understood but not expected)."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import urlsplit

READ_LIMIT = 1 << 20  # largest header block accepted; bodies are read by length


class HttpError(Exception):
    """The server answered something this client cannot frame, or closed mid-response."""


@dataclass(frozen=True)
class Target:
    """Where the server is and the constant header lines every request carries."""

    host: str
    port: int
    base_path: str
    fixed_headers: bytes

    @classmethod
    def from_url(cls, url: str, token: str | None = None) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http://host:port URL, got {url!r}")
        port = parts.port or 80
        host_header = f"{parts.hostname}:{port}" if ":" not in parts.hostname \
            else f"[{parts.hostname}]:{port}"
        lines = [f"Host: {host_header}"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        fixed = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return cls(parts.hostname, port, parts.path.rstrip("/"), fixed)

    @property
    def ws_url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"ws://{host}:{self.port}{self.base_path}/"


class HttpConnection:
    """One persistent connection; requests on it are strictly sequential."""

    __slots__ = ("reader", "target", "writer")

    def __init__(self, target: Target):
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.target.host, self.target.port, limit=READ_LIMIT)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: bytes, path: bytes, body: bytes | None = None
                      ) -> tuple[int, bytes]:
        """Send one request and return (status, body). Reconnects once if the server had
        closed an idle keep-alive connection."""
        t = self.target
        if body is None:
            head = b"%s %s%s HTTP/1.1\r\n%s\r\n" % (method, t.base_path.encode(), path,
                                                   t.fixed_headers)
            data = head
        else:
            data = b"%s %s%s HTTP/1.1\r\n%sContent-Type: application/json\r\n" \
                   b"Content-Length: %d\r\n\r\n%s" % (method, t.base_path.encode(), path,
                                                      t.fixed_headers, len(body), body)
        for attempt in (0, 1):
            if self.writer is None:
                await self._connect()
            try:
                self.writer.write(data)
                return await self._read_response()
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                self.close()
                if attempt:
                    raise HttpError(f"connection lost during {method.decode()} "
                                    f"{path.decode()}: {exc}") from None
        raise AssertionError("unreachable")

    async def _read_response(self) -> tuple[int, bytes]:
        reader = self.reader
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.find(b"\r\n", at + 2)
            length = int(lower[at + 17:end])
            body = await reader.readexactly(length) if length else b""
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._read_chunked()
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            body = await reader.read()
            self.close()
            return status, body
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    async def _read_chunked(self) -> bytes:
        reader = self.reader
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)


# ---------------------------------------------------------------------------- measuring


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int | None) -> float | None:
    """user+system CPU of a whole process (all threads), from /proc/PID/stat."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def machine_busy_seconds() -> float | None:
    """CPU time all processes of the machine have used since boot (/proc/stat, all cores)."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def process_rss_mb(pid: int | None) -> float | None:
    """Resident set size (VmRSS) in MB (10^6 bytes), or None when unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


@dataclass
class Measurement:
    """The figures of one workload."""

    name: str
    key: str
    ops: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    errors: int = 0
    first_error: str | None = None
    client_cpu: float = 0.0
    server_cpu: float | None = None
    other_cpu: float | None = None  # used by every other process of the machine meanwhile
    concurrency: int = 1
    notes: list[str] = field(default_factory=list)
    p50_override: float | None = None
    p99_override: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float | None:
        return self.ops / self.seconds if self.seconds > 0 and self.ops else None

    def p(self, fraction: float) -> float | None:
        if fraction == 0.5 and self.p50_override is not None:
            return self.p50_override
        if fraction == 0.99 and self.p99_override is not None:
            return self.p99_override
        if not self.latencies:
            return None
        return percentile(sorted(self.latencies), fraction) * 1000.0

    def as_dict(self) -> dict:
        return {
            "workload": self.name, "key": self.key, "ops": self.ops,
            "seconds": round(self.seconds, 4), "concurrency": self.concurrency,
            "ops_per_s": _round(self.ops_per_s, 1), "p50_ms": _round(self.p(0.5), 3),
            "p99_ms": _round(self.p(0.99), 3), "errors": self.errors,
            "first_error": self.first_error, "client_cpu_s": round(self.client_cpu, 3),
            "client_cpu_share": _round(self.client_cpu / self.seconds if self.seconds else None,
                                       3),
            "server_cpu_s": _round(self.server_cpu, 3),
            "other_cpu_s": _round(self.other_cpu, 3),
            "server_cpu_share": _round(self.server_cpu / self.seconds
                                       if self.seconds and self.server_cpu is not None
                                       else None, 3),
            "notes": self.notes, **({"details": self.extra} if self.extra else {}),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class Meter:
    """Wall clock, client CPU and server CPU over one stretch of work."""

    def __init__(self, server_pid: int | None):
        self.server_pid = server_pid

    def __enter__(self) -> Self:
        self.cpu0 = client_cpu_seconds()
        self.server0 = process_cpu_seconds(self.server_pid)
        self.machine0 = machine_busy_seconds()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.client_cpu = client_cpu_seconds() - self.cpu0
        end = process_cpu_seconds(self.server_pid)
        self.server_cpu = end - self.server0 if end is not None and self.server0 is not None \
            else None
        machine = machine_busy_seconds()
        self.other_cpu = None
        if machine is not None and self.machine0 is not None and self.server_cpu is not None:
            self.other_cpu = max(0.0, machine - self.machine0 - self.client_cpu
                                 - self.server_cpu)

    def fill(self, m: Measurement) -> Measurement:
        m.seconds, m.client_cpu, m.server_cpu = self.seconds, self.client_cpu, self.server_cpu
        m.other_cpu = self.other_cpu
        return m


Operation = Callable[[HttpConnection, int], Awaitable[tuple[int, bytes]]]


async def open_pool(target: Target, size: int) -> list[HttpConnection]:
    """`size` connected keep-alive connections (connected up front, outside any timing)."""
    conns = [HttpConnection(target) for _ in range(size)]
    await asyncio.gather(*(c._connect() for c in conns))
    return conns


def close_pool(conns: list[HttpConnection]) -> None:
    for c in conns:
        c.close()


async def closed_loop(conns: list[HttpConnection], n_ops: int, operation: Operation,
                      measurement: Measurement, server_pid: int | None,
                      on_response: Callable[[int, int, bytes], None] | None = None
                      ) -> Measurement:
    """Run `n_ops` operations with one worker per connection, each sending its next request as
    soon as the previous one is answered; every request is timed from write to full body."""
    counter = itertools.count()
    latencies = measurement.latencies
    perf = time.perf_counter

    async def worker(conn: HttpConnection) -> None:
        while True:
            i = next(counter)
            if i >= n_ops:
                return
            t0 = perf()
            status, body = await operation(conn, i)
            latencies.append(perf() - t0)
            if status >= 400:
                measurement.errors += 1
                if measurement.first_error is None:
                    measurement.first_error = f"{status} {body[:200].decode(errors='replace')}"
            elif on_response is not None:
                on_response(i, status, body)

    measurement.concurrency = len(conns)
    with Meter(server_pid) as meter:
        await asyncio.gather(*(worker(c) for c in conns))
    measurement.ops = n_ops
    return meter.fill(measurement)
