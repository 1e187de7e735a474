"""The garbage-collection policy (commit.settle_memory): surviving objects are frozen out of
later collections, so a settle only walks what was made since the last one; a reference cycle
that becomes garbage while frozen (a closed connection's objects, say) is still collected by
the next full settle (at start-up, and at least every FULL_SETTLE_EVERY_SECONDS), so nothing
leaks for long."""

from __future__ import annotations

import gc
import time
import weakref

from maestro import commit
from maestro.commit import settle_memory


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_a_cycle_that_dies_while_frozen_is_collected_by_the_next_full_settle():
    try:
        node = _Node()
        alive = weakref.ref(node)
        settle_memory(full=True)  # node is alive: frozen with everything else
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()  # an ordinary collection does not look at frozen objects
        assert alive() is not None
        settle_memory(full=False)  # nor does a quick settle
        assert alive() is not None
        settle_memory(full=True)
        assert alive() is None
    finally:
        gc.unfreeze()


def test_a_quick_settle_collects_young_cycles_and_freezes_the_survivors():
    try:
        settle_memory(full=True)
        frozen = gc.get_freeze_count()
        young = _Node()
        dead = weakref.ref(_Node())  # garbage already: only its cycle keeps it
        assert dead() is not None
        settle_memory(full=False)
        assert dead() is None
        assert gc.get_freeze_count() > frozen  # `young` and its dict joined the frozen ones
        assert young.me is young
    finally:
        gc.unfreeze()


def test_settles_are_full_again_once_the_last_full_one_is_old(monkeypatch):
    try:
        settle_memory(full=True)
        node = _Node()
        alive = weakref.ref(node)
        settle_memory()
        del node
        settle_memory()  # the last full settle is recent: quick
        assert alive() is not None
        monkeypatch.setattr(commit, "_full_settled_at",
                            time.monotonic() - commit.FULL_SETTLE_EVERY_SECONDS - 1)
        settle_memory()
        assert alive() is None
    finally:
        gc.unfreeze()


_LARGE_BUFFERS = """
import sys
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
if sys.argv[1] == "tuned":
    from maestro.commit import tune_collector
    tune_collector()
before = rss_mb()
for _ in range(3):  # an answer as large as the list of 50k tasks, built and freed
    parts = [b"x" * 1000 for _ in range(30_000)]
    body = b"".join(parts)
    del parts, body
print(rss_mb() - before)
"""


def test_large_buffers_go_back_to_the_system_once_freed():
    """glibc raises its mmap threshold to the size of a large block once one is freed, so the
    next ~30 MB answer comes from the heap and stays in the process; the server fixes the
    threshold at start-up (tune_collector), so such buffers are returned when freed."""
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        import pytest
        pytest.skip("the mmap threshold is a glibc setting")

    def grown(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _LARGE_BUFFERS, mode], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        return int(out.strip())

    assert grown("tuned") < 10
    assert grown("plain") >= 25  # what the fix is about (glibc's default behaviour)


_BREATHING = """
import ctypes, resource, sys
from maestro import heap
if sys.argv[1] == "tuned":
    heap.tune()
else:  # only the mmap threshold fixed, as before: the trim threshold stays at 128 KiB
    ctypes.CDLL(None).mallopt(-3, heap.MMAP_THRESHOLD)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # warm up
    frame = b"x" * 1_000_000
    del frame
before = faults()
for _ in range(300):  # a batch's frame (1 MB, under the mmap threshold) made and freed
    frame = b"x" * 1_000_000
    del frame
print(faults() - before)
"""


def _run(script: str, mode: str) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", script, mode], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return out.strip()


def test_the_heap_keeps_what_a_stream_of_writes_frees_for_the_next_ones():
    """With only the mmap threshold fixed, glibc gives back everything over 128 KiB free at
    the heap's top at once, and the next batch faults it in again page by page; the tuned
    heap keeps it (heap.tune)."""
    import platform

    if platform.libc_ver()[0] != "glibc":
        import pytest
        pytest.skip("the trim threshold is a glibc setting")
    assert int(_run(_BREATHING, "tuned")) < 500
    assert int(_run(_BREATHING, "threshold-only")) > 30_000  # ~245 pages a round


_GIVE_BACK = """
import sys
from maestro import heap
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
heap.tune()
keep = []
parts = []
size = int("2000")  # not a constant: each block its own
for i in range(20_000):  # 40 MB of heap blocks, one in 50 kept: the heap cannot shrink
    parts.append(b"x" * size)
    if i % 50 == 0:
        keep.append(b"y" * size)
before = rss_mb()
del parts
freed = rss_mb()
returned = heap.give_back()
print(before - freed, before - rss_mb(), int(returned))
"""


def test_the_free_pages_inside_the_heap_are_given_back_on_request():
    """Free memory between live blocks stays in the process until heap.give_back (called
    once the state is loaded) returns its whole pages."""
    import platform

    if platform.libc_ver()[0] != "glibc":
        import pytest
        pytest.skip("malloc_trim is glibc's")
    on_free, after_give_back, returned = map(int, _run(_GIVE_BACK, "").split())
    assert on_free < 10  # held by the heap: live blocks all the way up
    assert after_give_back >= 25 and returned == 1
