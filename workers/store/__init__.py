"""The ClickHouse store (see workers.store.store). The package itself imports nothing: its
light modules (workers.store.dsn, workers.store.unavailable) load without the engine."""
