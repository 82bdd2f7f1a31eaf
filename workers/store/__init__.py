"""The ClickHouse store (see workers.store.store)."""

from workers.store.store import Store, StoreUnavailable, open_store

__all__ = ["Store", "StoreUnavailable", "open_store"]
