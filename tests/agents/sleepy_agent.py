#!/usr/bin/env python3
"""A stand-in for a short agent: works for SECONDS (default 0.3), then exits 0."""

import sys
import time

print("agent: working", flush=True)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0.3)
print("agent: done", flush=True)
