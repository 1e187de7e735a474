from .base import KINDS, LoadResult, Op, Outcome, Store, StoreLockedError, SyncStore

__all__ = ["KINDS", "LoadResult", "Op", "Outcome", "Store", "StoreLockedError", "SyncStore"]
