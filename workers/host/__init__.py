"""Threads that serve the worker host rather than a batch: the metrics endpoint (and its
directories) and the Redis file rewrite. They import neither workers.batch nor workers.runtime."""
