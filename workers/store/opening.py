"""A store opened on first use and migrated once, shared by a process's writer and readers."""

from __future__ import annotations

import threading
from collections.abc import Callable

from workers.store.store import Store


class StoreOpening:
    """The store, opened and migrated on first use (migrations are idempotent, so every worker
    process that writes brings the schema up to date). ``get`` raises StoreUnavailable until
    the store can be opened; the next call tries again."""

    def __init__(self, open_: Callable[[], Store]) -> None:
        self._open = open_
        self._store: Store | None = None
        self._lock = threading.Lock()  # the batch loop's writer thread and a stats job may race

    def get(self) -> Store:
        with self._lock:
            if self._store is None:
                store = self._open()
                store.migrate()
                self._store = store
            return self._store
