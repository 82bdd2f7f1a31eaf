"""``hitstream replay``: historical replay of NDJSON, CSV or combined access logs through the
public ingest endpoints, with bounded concurrency, Retry-After backoff, resume without sending
a line twice, and a summary with a rejects file.

Readers (ndjson, csvfile, combined) turn an input file into ``ReadResult``s in line order; the
runner skips lines the journal already holds, sends the rest with the sender and records each
answer in the journal, the tally and the rejects file.
"""
