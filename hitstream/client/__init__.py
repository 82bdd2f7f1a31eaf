"""The Python client for backends that post pageviews and events to hitstream.

``Client`` (any thread; its sender runs in a background thread) and ``AsyncClient`` (its
sender runs as a task in the application's event loop) share one hot path: ``send_pageview``
/ ``send_event`` put the item in a bounded in-memory queue and return its id at once. The
sender posts queued pageviews to the batch endpoint (events one by one to the event
endpoint), retrying with Retry-After and jitter for a bounded time. Middleware that records
a pageview per served HTML page: ``hitstream.client.asgi`` and ``hitstream.client.wsgi``.

The client imports only the replay client's HTTP helpers and shared contracts (no server
code: no Redis, no store). See docs/client.md.
"""

from hitstream.client.clients import AsyncClient, Client
from hitstream.client.options import Options
from hitstream.client.stats import Stats

__all__ = ["AsyncClient", "Client", "Options", "Stats"]
