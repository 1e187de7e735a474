#!/usr/bin/env python3
"""A stand-in for an agent that prints a lot: LINES numbered lines (default 20000) in colour,
then a progress line redrawn with carriage returns, then a last line; exits 0."""

import sys

lines = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
out = sys.stdout
for i in range(1, lines + 1):
    out.write(f"\x1b[32mline {i:06d}\x1b[0m of the agent's output\n")
for i in range(1, 4):
    out.write(f"\rprogress {i}/3")
out.write("\nagent: finished\n")
out.flush()
