from .base import KINDS, LoadResult, Op, Store, StoreLockedError

__all__ = ["KINDS", "LoadResult", "Op", "Store", "StoreLockedError"]
