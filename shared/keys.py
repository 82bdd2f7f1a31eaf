"""Every Redis key hitstream uses, in one place, so API and workers cannot drift apart."""

PREFIX = "hitstream"

# --- ingest queue: two lanes (shared.lanes), each a stream with its own leases -----------
# A Redis stream of envelopes per lane. Each entry has ENVELOPE_FIELD, the envelope as JSON
# (shared.envelope), and TOKEN_FIELD, the id of the token that queued it (entries queued
# before lanes existed have none, nor have requeued dead letters, which may have
# RESTORE_FIELD). The API appends; workers read each stream through GROUP.
# The live stream keeps its pre-lanes name, so entries queued before an upgrade still drain.
STREAM = f"{PREFIX}:ingest"
BULK_STREAM = f"{PREFIX}:ingest:bulk"
ENVELOPE_FIELD = "e"
TOKEN_FIELD = "t"
# On an entry a dead-letter requeue appended for a store dead letter that named the tables
# of the rows the store refused (one envelope can be several rows: a crawler's pageview and
# its hit): those tables, comma-separated, whose rows are stored again; the others were
# stored the first time. Without it, every row of the envelope is stored.
RESTORE_FIELD = "r"
GROUP = "workers"
# Sorted set per lane: batch id -> lease deadline (ms since epoch). A batch id is also the
# stream consumer name that holds the batch's entries, so a batch is recovered as a whole.
BATCH_LEASES = f"{PREFIX}:batches"
BULK_BATCH_LEASES = f"{PREFIX}:batches:bulk"
# Hash per lane: token id -> its entries in that lane's stream (incremented with the XADD,
# decremented by the entries an acknowledgement actually deletes): the per-token share.
QUEUED_BY_TOKEN = f"{PREFIX}:queued:{{lane}}"
# Hash: stream entry id -> dead-letter JSON (envelope without the IP, step, error). Keyed by
# entry id so a retried batch rewrites its dead letters instead of adding copies.
DEAD_LETTERS = f"{PREFIX}:dead-letters"
# String, SET NX PX: at most one worker's dispatcher enqueues batch jobs per tick.
DISPATCH_LOCK = f"{PREFIX}:dispatch-lock"
# Hash: processed (the stream's processed-entry count at the last rewrite of Redis's files
# that workers asked for) and at_ms (Redis time of that rewrite). See workers.host.redis_rewrite.
REWRITE_STATE = f"{PREFIX}:rewrite"
# String, SET NX PX: at most one worker at a time decides whether Redis's files are rewritten.
REWRITE_LOCK = f"{PREFIX}:rewrite-lock"
# Counter, INCR before a worker's WAIT (replicated durability mode, workers.batch.queue): a write
# that always reaches the replicas, so WAIT counts acknowledgements of everything before it.
REPLICATION_MARK = f"{PREFIX}:replication-mark"

# --- enriched batches, from enricher processes to the store writer, the one process that
# writes an embedded store (workers.batch.delivery, workers.batch.store_writer): a stream of
# pickled workers.batch.enrichment.WriterBatch (field ENRICHED_FIELD; no envelopes, so no
# visitor IP), read through ENRICHED_GROUP by the writer's one consumer ENRICHED_CONSUMER, so
# a restarted writer re-reads what it held.
ENRICHED_STREAM = f"{PREFIX}:enriched"
ENRICHED_FIELD = "p"
ENRICHED_GROUP = "writer"
ENRICHED_CONSUMER = "writer"

# --- RQ queues (RQ's own keys: rq:queue:<name>, ...) -------------------------------------
# run_batch_loop jobs; the process that owns an embedded store (a chdb path can be opened by
# one process only) registers on STORE_QUEUE too, which names it (hitstream up, tests).
BATCH_QUEUE = "hitstream"
STORE_QUEUE = "hitstream-store"

# --- stats queries for the owner of an embedded store (workers.runtime.stats_answers) -----
# List of JSON requests (id, site, dates, limit, all_traffic, deadline), expiring when nobody
# reads them; each answer is pushed to its own list STATS_ANSWER (request id), which expires too.
STATS_REQUESTS = f"{PREFIX}:stats:requests"
STATS_ANSWER = f"{PREFIX}:stats:answer:{{request_id}}"

# --- idempotent client retries (string keys, EX HITSTREAM_IDEMPOTENCY_WINDOW) -------------
# "1": an item the client identified was already queued (ingest_api.intake.seen_key): kind
# "pageview", item <page_id>; kind "ai_fetch", item <fetch_id>; kind "event-id", item
# <event_id>; kind "event", item <page_id>:<SHA-256 hex of the event name> (the pageview and
# each named event on a page are distinct items; keys hold no client text beyond UUIDs).
SEEN = f"{PREFIX}:seen:{{kind}}:{{site_id}}:{{item}}"
# A batch's JSON answer under its Idempotency-Key (SHA-256 hex: keys hold no client text),
# after the SHA-256 hex of the request it answered (ingest_api.idempotency_key).
BATCH_ANSWER = f"{PREFIX}:idem:{{token_id}}:{{key_hash}}"

# --- control plane ------------------------------------------------------------------------
SITE = f"{PREFIX}:site:{{site_id}}"  # hash: id, domain, created_at
SITE_BY_DOMAIN = f"{PREFIX}:sites"  # hash: normalised domain -> site id
TOKEN = f"{PREFIX}:token:{{token_hash}}"  # hash keyed by SHA-256 hex of the secret
TOKEN_HASH_BY_ID = f"{PREFIX}:tokens"  # hash: token id -> SHA-256 hex
GRANTS = f"{PREFIX}:grants:{{token_id}}"  # hash: site id -> role
EXCLUSIONS = f"{PREFIX}:exclusions"  # hash: rule id -> rule JSON
CONTROL_VERSION = f"{PREFIX}:control-version"  # INCR on every control-plane change

# --- rate limiting ------------------------------------------------------------------------
RATE_BUCKET = f"{PREFIX}:rl:{{subject}}"  # hash: tokens, updated_ms
