"""The garbage-collection policy (commit.settle_memory): surviving objects are frozen out of
later collections, yet a reference cycle that becomes garbage while frozen (a closed
connection's objects, say) is still collected at the next settle, so nothing leaks."""

from __future__ import annotations

import gc
import weakref

from maestro.commit import settle_memory


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector can free it


def test_a_cycle_that_dies_while_frozen_is_collected_at_the_next_settle():
    try:
        node = _Node()
        alive = weakref.ref(node)
        settle_memory()  # node is alive: frozen with everything else
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()  # an ordinary collection does not look at frozen objects
        assert alive() is not None
        settle_memory()
        assert alive() is None
    finally:
        gc.unfreeze()
