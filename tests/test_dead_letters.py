"""Dead letters: recorded without the visitor IP, listed, requeued and purged via the CLI."""

from __future__ import annotations

import orjson
import redis
from click.testing import CliRunner

from hitstream.main import cli
from shared import keys
from shared.envelope import Envelope
from workers.batch import dead_letters

IP = "203.0.113.77"


def envelope(**overrides: object) -> Envelope:
    values = dict(
        site_id="5b4f0a4e-0f43-4b8e-9d6c-1b2f3a4c5d6e",
        site_domain="example.com",
        page_id="0c7d7a46-6a55-4c1e-8c4e-3a8f0b9b1d2e",
        session_id="9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d",
        timestamp_ms=1_760_000_000_000,
        received_ms=1_760_000_000_100,
        url="https://example.com/a",
        visitor_ip=IP,
        user_agent="Mozilla/5.0",
    )
    values.update(overrides)
    return Envelope(**values)


def store(client: redis.Redis, *letters: dead_letters.DeadLetter) -> None:
    with client.pipeline(transaction=True) as pipe:
        dead_letters.record(pipe, list(letters))
        pipe.execute()


def test_failed_step_record_holds_no_ip_even_in_the_error(real_redis: redis.Redis) -> None:
    letter = dead_letters.for_failed_step("1-0", "b:x", envelope(), "geo", f"lookup of {IP} failed")
    store(real_redis, letter)

    raw = real_redis.hget(keys.DEAD_LETTERS, "1-0")
    assert IP.encode() not in raw
    stored = dead_letters.list_dead_letters(real_redis)[0]
    assert stored.step == "geo" and stored.error == "lookup of <visitor_ip> failed"
    assert stored.envelope["visitor_ip"] is None and stored.envelope["url"] == "https://example.com/a"


def test_undecodable_entry_keeps_its_fields_but_not_the_ip() -> None:
    data = orjson.dumps({"site_id": "s1", "visitor_ip": IP, "surprise": 1})

    letter = dead_letters.for_undecodable("2-0", "b:y", data, f"bad envelope from {IP}")

    assert IP not in letter.to_json().decode()
    assert letter.site_id == "s1" and letter.step == "decode"
    assert dead_letters.for_undecodable("3-0", "b:y", b"\xff not json", "x").envelope is None


def test_recording_the_same_entry_twice_keeps_one_dead_letter(real_redis: redis.Redis) -> None:
    letter = dead_letters.for_failed_step("1-0", "b:x", envelope(), "url", "boom")
    store(real_redis, letter)
    store(real_redis, letter)

    assert dead_letters.count(real_redis) == 1


def test_a_live_and_a_bulk_entry_with_the_same_id_keep_a_dead_letter_each(real_redis: redis.Redis) -> None:
    live = dead_letters.for_failed_step("7-0", "b:x", envelope(url="https://example.com/live"), "url", "boom")
    bulk = dead_letters.for_failed_step("7-0", "bulk:y", envelope(url="https://example.com/bulk"), "url", "boom")
    store(real_redis, live)
    store(real_redis, bulk)

    listed = dead_letters.list_dead_letters(real_redis)
    assert sorted(letter.envelope["url"] for letter in listed) == [
        "https://example.com/bulk",
        "https://example.com/live",
    ]
    assert dead_letters.requeue(real_redis, None) and real_redis.xlen(keys.STREAM) == 1
    assert real_redis.xlen(keys.BULK_STREAM) == 1


def test_cli_lists_requeues_and_purges(real_redis: redis.Redis, hitstream_env: dict[str, str]) -> None:
    store(
        real_redis,
        dead_letters.for_failed_step("5-0", "b:x", envelope(), "url", "bad url"),
        dead_letters.for_failed_step("6-0", "b:x", envelope(url="https://example.com/b"), "ua", "bad ua"),
        dead_letters.for_failed_step("7-0", "b:x", envelope(), "geo", "bad geo"),
    )
    runner = CliRunner()

    listed = runner.invoke(cli, ["dead-letters", "list"])
    assert listed.exit_code == 0, listed.output
    lines = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [line[0] for line in lines] == ["5-0", "6-0", "7-0"]
    assert lines[1][2:] == ["ua", "5b4f0a4e-0f43-4b8e-9d6c-1b2f3a4c5d6e", "bad ua"]

    requeued = runner.invoke(cli, ["dead-letters", "requeue", "6-0", "404-0"])
    assert requeued.exit_code == 0 and "requeued 1 " in requeued.output
    ((_, fields),) = real_redis.xrange(keys.STREAM)
    back = Envelope.from_json(fields[keys.ENVELOPE_FIELD.encode()])
    assert back.url == "https://example.com/b" and back.visitor_ip is None

    purged = runner.invoke(cli, ["dead-letters", "purge", "--all"])
    assert purged.exit_code == 0 and "purged 2 " in purged.output
    assert dead_letters.count(real_redis) == 0


def test_cli_requires_ids_or_all(hitstream_env: dict[str, str]) -> None:
    result = CliRunner().invoke(cli, ["dead-letters", "purge"])

    assert result.exit_code == 2 and "--all" in result.output
