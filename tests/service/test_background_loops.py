"""The server's background loops (the log follower, the committer, the workspace scanner) wait
for a wake-up or a timeout with aio.wait_event, and are stopped by cancelling them. A stop that
arrives in the very moment the loop is woken must still end it: on Python 3.11,
`asyncio.wait_for(event.wait(), t)` swallows such a cancellation, and a server shutting down
then waits for its log follower forever."""

from __future__ import annotations

import asyncio

from maestro.aio import cancel_and_wait, wait_event


def test_wait_event_says_whether_the_event_was_set():
    async def main() -> None:
        event = asyncio.Event()
        assert await wait_event(event, 0.01) is False
        asyncio.get_running_loop().call_later(0.01, event.set)
        assert await wait_event(event, 5.0) is True
        assert await wait_event(event, 0.0) is True  # already set

    asyncio.run(main())


def test_a_loop_cancelled_as_it_is_woken_ends():
    async def main() -> None:
        event = asyncio.Event()
        rounds = 0

        async def loop() -> None:
            nonlocal rounds
            while True:
                await wait_event(event, 10.0)
                event.clear()
                rounds += 1

        for _ in range(50):
            event.clear()
            task = asyncio.create_task(loop())
            await asyncio.sleep(0)  # the loop waits
            event.set()  # woken ...
            task.cancel()  # ... and stopped in the same moment
            done, _ = await asyncio.wait({task}, timeout=2.0)
            assert task in done and task.cancelled()
        assert rounds == 0

    asyncio.run(main())


def test_cancel_and_wait_ends_a_loop_woken_while_it_is_stopped():
    async def main() -> None:
        event = asyncio.Event()

        async def loop() -> None:
            while True:
                if not await wait_event(event, 0.001):
                    continue
                event.clear()

        task = asyncio.create_task(loop())
        await asyncio.sleep(0.01)
        event.set()
        await asyncio.wait_for(cancel_and_wait(task), 2.0)
        assert task.done()

    asyncio.run(main())
