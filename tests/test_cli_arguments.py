"""The ``hitstream`` CLI's rough edges: malformed or out-of-range arguments print one line and
exit 2 (never a traceback, never click's usage block), ``stats`` prints control characters in
stored text escaped."""

from __future__ import annotations

import orjson
import pytest
import redis
from click.testing import CliRunner, Result

from hitstream.main import SUB_COMMANDS, cli
from shared.control.sites import add_site
from tests.stores import event, pageview, utc
from workers.store.store import open_store

# (arguments, what the one line must name)
MALFORMED = [
    (["stats", "--site", "x' OR 1=1 --"], "--site"),
    (["stats", "--site", "exa mple.com"], "--site"),
    (["stats", "--site", "example.com", "--from", "2026-13-01"], "--from"),
    (["stats", "--site", "example.com", "--from", "1969-12-31"], "--from"),
    (["stats", "--site", "example.com", "--to", "2150-01-01"], "--to"),
    (["stats", "--site", "example.com", "--from", "2024-03-02", "--to", "2024-03-01"], "--to"),
    (["stats", "--site", "example.com", "--limit", "0"], "--limit"),
    (["stats", "--site", "example.com", "--wait", "0"], "--wait"),
    (["stats", "--site", "example.com", "--wait", "soon"], "--wait"),
    (["stats", "--site", "example.com", "--limit", "99999999999999999999"], "--limit"),
    (["tokens", "create", "--site", "example.com", "--role", "owner", "--expires-in", "99999999999"], "--expires-in"),
    (["tokens", "create", "--site", "example.com", "--role", "owner", "--expires-in", "36501"], "--expires-in"),
    (["tokens", "create", "--site", "example.com", "--role", "owner", "--expires-in", "0"], "--expires-in"),
    (["tokens", "create", "--site", "example.com", "--role", "owner", "--expires-in", "ten"], "--expires-in"),
    (["tokens", "create", "--site", "example.com", "--role", "superuser"], "--role"),
    (["tokens", "create", "--site", "x' OR 1=1 --", "--role", "owner"], "--site"),
    (["sites", "add", "x' OR 1=1 --"], "DOMAIN"),
    (["sites", "add", ""], "DOMAIN"),
    (["sites", "add", "a" * 300 + ".com"], "DOMAIN"),
    (["sites", "remove", "\x1b[2J.com"], "DOMAIN"),
    (["exclusions", "add", "--instance", "--cidr", "10.0.0.0/33"], "cidr"),
    (["exclusions", "add", "--instance", "--country", "ZZZ"], "country"),
    (["exclusions", "add", "--instance", "--path", "no-slash"], "path"),
    (["exclusions", "add", "--site", "x' OR 1=1 --", "--path", "/a"], "--site"),
    (["exclusions", "add", "--instance", "--site", "example.com", "--path", "/a"], "--instance"),
    (["exclusions", "add", "--instance"], "--cidr"),
    (["dead-letters", "requeue"], "--all"),
    (["dead-letters", "purge", "some-id", "--all"], "--all"),
    (["api", "--port", "70000"], "--port"),
    (["worker", "-n", "0"], "--processes"),
    (["queue", "--bogus"], "--bogus"),
    (["migrate", "--cluster", "bad name; DROP"], "--cluster"),
    (["geoip", "update", "--deadline", "0"], "--deadline"),
    (["geoip", "update", "--deadline", "soon"], "--deadline"),
    (["no-such-command"], "no-such-command"),
]


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False)


@pytest.mark.parametrize(("arguments", "named"), MALFORMED, ids=[" ".join(args)[:60] for args, _ in MALFORMED])
def test_a_malformed_or_out_of_range_argument_prints_one_line_and_exits_2(
    hitstream_env: dict[str, str], real_redis: redis.Redis, arguments: list[str], named: str
) -> None:
    add_site(real_redis, "example.com")
    result = invoke(*arguments)

    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and named in lines[0]
    assert "\x1b" not in lines[0], "the argument is echoed escaped"
    assert result.stdout == ""
    assert real_redis.hlen("hitstream:tokens") == 0, "nothing was created"


# Text a client may send that would drive a terminal: escape sequences (colour, clear screen,
# window title ended by BEL), an 8-bit CSI, a right-to-left override, a newline.
HOSTILE = {
    "event": "signup\x1b]0;owned\x07",
    "utm_source": "news\x1b[2J\x1b[H",
    "path": "/pay\u202egnp.exe",
    "city": "Ber\x9b31mlin",
    "browser": "Fire\nfox",
}


def hostile_store(client: redis.Redis, dsn: str) -> None:
    site = add_site(client, "shop.example.com")
    store = open_store(dsn)
    try:
        store.migrate()
        row = pageview(
            site.id,
            utc(2024, 3, 1, 9),
            path=HOSTILE["path"],
            utm_source=HOSTILE["utm_source"],
            city=HOSTILE["city"],
            browser=HOSTILE["browser"],
        )
        store.write_batch("b:hostile", [row, event(site.id, utc(2024, 3, 1, 9, 1), HOSTILE["event"], {})], [])
    finally:
        store.close()


def test_stats_prints_control_characters_in_stored_text_escaped(
    hitstream_env: dict[str, str], real_redis: redis.Redis
) -> None:
    hostile_store(real_redis, hitstream_env["HITSTREAM_CLICKHOUSE_URL"])

    text = invoke("stats", "--site", "shop.example.com")
    as_json = invoke("stats", "--site", "shop.example.com", "--json")

    assert text.exit_code == 0 and as_json.exit_code == 0
    for output in (text.stdout, as_json.stdout):
        assert not any(character in output for character in "\x1b\x07\x9b\u202e"), output
    lines = text.stdout.splitlines()
    for escaped in (
        "signup\\x1b]0;owned\\x07",
        "news\\x1b[2J\\x1b[H",
        "/pay\\u202egnp.exe",
        "Ber\\x9b31mlin",
        "Fire\\nfox",
    ):
        assert any(line.startswith(escaped) for line in lines), escaped
    report = orjson.loads(as_json.stdout)  # still JSON, with the values as stored
    assert report["events"][0]["value"] == HOSTILE["event"]
    assert report["utm_sources"][0]["value"] == HOSTILE["utm_source"]
    assert report["pages"][0]["value"] == HOSTILE["path"]
    assert report["cities"][0]["value"] == HOSTILE["city"]


@pytest.mark.parametrize("name", sorted(SUB_COMMANDS))
def test_every_sub_command_loaded_on_demand_answers_its_help_under_its_own_name(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"], prog_name="hitstream")

    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: hitstream {name} ")


def test_an_unknown_sub_command_prints_one_line_naming_it_and_exits_2() -> None:
    result = CliRunner().invoke(cli, ["wroker"], prog_name="hitstream")

    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["Error: hitstream: No such command 'wroker'."]
