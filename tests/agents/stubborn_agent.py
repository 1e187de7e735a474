#!/usr/bin/env python3
"""A stand-in for an agent that ignores SIGTERM (only SIGKILL ends it)."""

import signal
import time

signal.signal(signal.SIGTERM, lambda *_: print("agent: ignoring SIGTERM", flush=True))
print("agent: working forever", flush=True)
deadline = time.monotonic() + 120  # never outlive a test run by much
while time.monotonic() < deadline:
    time.sleep(0.05)
