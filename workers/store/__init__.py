"""The ClickHouse store (see workers.store.store)."""

from workers.store.store import Refusals, Store, StoreUnavailable, open_store

__all__ = ["Refusals", "Store", "StoreUnavailable", "open_store"]
