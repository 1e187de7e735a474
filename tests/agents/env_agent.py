#!/usr/bin/env python3
"""A stand-in for an agent that writes its whole environment, as JSON, to the file named by its
first argument (atomically, so a reader never sees half of it), then stays up to LINGER seconds
(second argument, default 0) so its surroundings can be inspected, and exits 0 (also on
SIGTERM)."""

import json
import os
import signal
import sys
import time

target = sys.argv[1]
linger = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
tmp = f"{target}.{os.getpid()}.tmp"
with open(tmp, "w", encoding="utf-8") as fh:
    json.dump(dict(os.environ), fh)
os.replace(tmp, target)
print("agent: environment written", flush=True)
time.sleep(linger)
