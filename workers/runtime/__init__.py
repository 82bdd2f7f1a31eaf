"""The RQ runtime of a worker process: its context, its OS processes and their roles, the RQ
jobs and the dispatcher that keeps them queued. It runs the batch's life (workers.batch)."""
