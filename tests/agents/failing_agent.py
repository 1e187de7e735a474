#!/usr/bin/env python3
"""A stand-in for an agent that gives up: says why on stderr, exits 3."""

import sys

print("agent: starting", flush=True)
print("agent: cannot reach the model, giving up", file=sys.stderr, flush=True)
sys.exit(3)
