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
