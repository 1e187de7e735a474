"""Small asyncio helpers shared by the server's background loops."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background loop and wait until it has ended. What it raised on the way out is
    dropped: it is being stopped, and whatever stops it still has its own cleanup to do."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` seconds have passed; True when it is set.

    Unlike `asyncio.wait_for(event.wait(), timeout)` on Python 3.11, a cancellation that
    arrives just as the event is set is never lost: wait_for then returns normally and swallows
    it, and a loop that waits this way goes on after its task was cancelled, so whatever
    awaits its end (a server shutting down) waits forever."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
