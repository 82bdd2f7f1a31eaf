"""A known crawler's pageview is two rows (the pageview and its crawler hit) from one stream
entry: when the store refuses both, the entry is dead-lettered once, without its address."""

from __future__ import annotations

import redis

from shared import keys
from tests.envelopes import envelope
from tests.test_pipeline_crawlers import GPTBOT, OPENAI_GPTBOT_IP
from workers.batch.delivery import refused_letters
from workers.batch.enrichment import EnrichedBatch
from workers.batch.queue import Batch, Entry
from workers.store.store import Refusals


def test_an_entry_whose_pageview_and_hit_are_both_refused_is_one_dead_letter(real_redis: redis.Redis) -> None:
    sent = envelope(user_agent=GPTBOT, visitor_ip=OPENAI_GPTBOT_IP)
    entry_id = real_redis.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: sent.to_json()}).decode()
    other_id = real_redis.xadd(keys.STREAM, {keys.ENVELOPE_FIELD: sent.to_json()}).decode()
    batch = Batch("b:refused-crawler", [Entry(entry_id, b""), Entry(other_id, b"")], reclaimed=False)
    refusals = Refusals(rows={0: "Code: 131. TOO_LARGE_STRING_SIZE", 1: "Code: 131. TOO_LARGE_STRING_SIZE"})
    enriched = EnrichedBatch(batch, [], [], [], [entry_id, entry_id, other_id, other_id], [])
    letters = refused_letters(real_redis, enriched, refusals)
    assert [(letter.step, letter.envelope["page_id"]) for letter in letters] == [("store", sent.page_id)]
    assert all(OPENAI_GPTBOT_IP not in letter.to_json().decode() for letter in letters)
