"""How the C heap (glibc's malloc) of each Maestro process hands memory to and from the system.

Two of glibc's defaults cost a server like this one dearly:

- Its mmap threshold rises to the size of every large block freed (up to 32 MiB), so after one
  list of all tasks (~25 MB of JSON, copied once more into the socket's buffer) such buffers
  come from the heap and stay in the process's memory. A fixed threshold keeps them in
  mappings of their own, returned as soon as they are freed.
- Fixing that threshold also fixes the trim threshold at 128 KiB: whenever that much is free at
  the heap's top, `free` gives it back with `brk`, and the next allocations fault it in again,
  page by page, zeroed by the kernel. Under a stream of writes (a batch's rows, its log record,
  the frames to the store process, the answers) the heap breathes like that hundreds of times
  a second: ~12 page faults per session created, ~10% of the server's CPU. The heap now keeps
  up to TRIM_THRESHOLD free at its top (and asks for TOP_PAD more than it needs).

What loading the state used and freed is given back once it is loaded (`give_back`: the heap's
top and the free pages inside it). Not when the server is idle: `malloc_trim` walks every free
block under the heap's lock, 10-25 ms on a large heap, a pause for the reads that go on.
"""

from __future__ import annotations

import ctypes

# Blocks at least this large get their own mapping, returned to the system when freed.
MMAP_THRESHOLD = 2 << 20
# Free memory at the heap's top kept for the next allocations rather than given back at once.
TRIM_THRESHOLD = 8 << 20
# Asked of the system beyond what an allocation that grows the heap needs.
TOP_PAD = 1 << 20

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def _libc():
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def tune() -> bool:
    """Fix the heap's thresholds (see the module's docstring); False where malloc is not
    glibc's (nothing to tune)."""
    if _LIBC is None:
        return False
    ok = True
    for param, value in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                         (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)):
        ok = bool(_LIBC.mallopt(param, value)) and ok
    return ok


def give_back() -> bool:
    """Return the heap's free memory (its top beyond TOP_PAD, and whole free pages inside it)
    to the system; True when some was returned."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(TOP_PAD))
