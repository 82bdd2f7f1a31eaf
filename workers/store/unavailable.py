"""``StoreUnavailable``, the store's one failure that is not about the data, in a module of its
own that loads no engine: ``hitstream stats`` names it when it only asks the worker that owns
an embedded store (workers.stats_reader), without loading clickhouse-connect, chdb or Arrow."""


class StoreUnavailable(Exception):
    """The store could not be reached, or it failed a statement for a reason other than the
    data; nothing of the failed statement was written."""
