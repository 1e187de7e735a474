#!/usr/bin/env python3
"""A stand-in for a long-running agent. By default it ignores SIGTERM (only SIGKILL ends it);
with --polite it finishes cleanly (exit 0) on SIGTERM."""

import signal
import sys
import time

polite = "--polite" in sys.argv[1:]


def on_term(*_):
    if polite:
        print("agent: SIGTERM, finishing cleanly", flush=True)
        sys.exit(0)
    print("agent: ignoring SIGTERM", flush=True)


signal.signal(signal.SIGTERM, on_term)
print("agent: working forever", flush=True)
deadline = time.monotonic() + 120  # never outlive a test run by much
while time.monotonic() < deadline:
    time.sleep(0.05)
