"""``hitstream crawlers update``: each operator's list fetched from its endpoint (a local HTTP
server, tests/file_server.py), checked, and the new ranges document swapped in atomically.

A list whose download fails in any way (an error status, truncated, larger than the limit,
slower than the deadline, not a prefix list) keeps its previous prefixes and date, named in
the failures; when every list fails the file in place stays byte for byte. No temporary file
is left behind either way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hitstream.crawlers_update import RANGES_NAME, current_ranges, read_operator_list, update_ranges
from hitstream.main import cli
from shared.crawlers.identity import identify
from shared.crawlers.ranges import UnusableRanges, load_ranges
from shared.crawlers.snapshot import Crawlers
from shared.crawlers.verification import Verdict
from tests.file_server import Cut, Served, Trickle, Unannounced, serving

OLD_FETCHED_AT = "2026-09-02T14:41:05+00:00"
# What each local endpoint serves when it works: GPTBot's in Google's JSON shape (OpenAI's
# too), CCBot's in another JSON shape, Ahrefs' as plain text with a comment.
GOOD: dict[str, bytes] = {
    "/gptbot.json": json.dumps(
        {
            "creationTime": "2026-12-01T00:00:00.000000",
            "prefixes": [{"ipv4Prefix": "198.51.100.0/24"}, {"ipv6Prefix": "2001:db8:1::/48"}],
        }
    ).encode(),
    "/ccbot.json": json.dumps({"ranges": {"v4": ["192.0.2.0/25", "192.0.2.128/25"]}, "updated": "2026-12-01"}).encode(),
    "/ahrefs.txt": b"# AhrefsBot\n203.0.113.0/26\n203.0.113.64/26\n",
}
LISTS = {"openai-gptbot": "/gptbot.json", "commoncrawl-ccbot": "/ccbot.json", "ahrefs-crawler": "/ahrefs.txt"}
GPTBOT = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)"


@pytest.fixture
def endpoints(tmp_path: Path) -> Iterator[tuple[dict[str, Served], Path]]:
    """The served answers (GOOD unless a test changes them) and a directory holding a ranges
    document whose lists point at them, GPTBot's list still at its 2026-09-02 prefix."""
    served: dict[str, Served] = dict(GOOD)
    with serving(served) as base:
        directory = tmp_path / "crawlers"
        directory.mkdir()
        lists = {
            key: {
                "operator": key.split("-")[0],
                "label": key,
                "url": base + path,
                "fetched_at": OLD_FETCHED_AT,
                "prefixes": ["132.196.86.0/24"],
            }
            for key, path in LISTS.items()
        }
        (directory / RANGES_NAME).write_text(json.dumps({"snapshot": "2026-09-02", "lists": lists}))
        yield served, directory


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if path.name != RANGES_NAME)


def test_every_list_is_fetched_from_its_endpoint_and_a_running_process_verifies_with_it(
    endpoints: tuple[dict[str, Served], Path],
) -> None:
    _, directory = endpoints
    target = directory / RANGES_NAME
    crawlers = Crawlers(target, check_seconds=0)
    gptbot = crawlers.identify(GPTBOT)
    assert gptbot is not None
    assert crawlers.verify(gptbot, "132.196.86.1") == Verdict.VERIFIED
    with open(target, "rb") as reader_of_the_old_file:
        old_inode = os.fstat(reader_of_the_old_file.fileno()).st_ino
        done = update_ranges(directory)
        # Renamed over, not rewritten in place: a reader that opened the old file reads it whole.
        assert json.loads(reader_of_the_old_file.read())["snapshot"] == "2026-09-02"
    assert os.stat(target).st_ino != old_inode
    assert (done.refreshed, done.failed) == (list(LISTS), {})
    ranges = load_ranges(target)
    assert {key: [str(n) for n in ranges.lists[key].networks] for key in LISTS} == {
        "openai-gptbot": ["198.51.100.0/24", "2001:db8:1::/48"],
        "commoncrawl-ccbot": ["192.0.2.0/25", "192.0.2.128/25"],
        "ahrefs-crawler": ["203.0.113.0/26", "203.0.113.64/26"],
    }
    assert all(ranges.lists[key].fetched_at > OLD_FETCHED_AT for key in LISTS)
    assert [crawlers.verify(gptbot, ip) for ip in ("132.196.86.1", "198.51.100.9", "2001:db8:1::9")] == [
        Verdict.SPOOFED,
        Verdict.VERIFIED,
        Verdict.VERIFIED,
    ]
    assert leftovers(directory) == []


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (None, "HTTP Error 404"),
        (Cut(GOOD["/gptbot.json"][:40], len(GOOD["/gptbot.json"])), "the connection closed after 40 bytes of"),
        (GOOD["/gptbot.json"][:40], "neither JSON nor a list of prefixes"),
        (b"x" * 5000, "larger than the download limit of 4,096 bytes: the server announced 5,000 bytes"),
        (Unannounced(b"x" * 5000), "larger than the download limit of 4,096 bytes: stopped after 5,000 bytes"),
        (b"<html><body>Please sign in</body></html>", "neither JSON nor a list of prefixes"),
        (json.dumps({"prefixes": [], "creationTime": "2026-12-01T00:00:00"}).encode(), "JSON without any IP prefix"),
        (b"198.51.100.0/24\n198.51.100.0/33\n", "neither JSON nor a list of prefixes"),
        (b"", "empty"),
        (Trickle(2000, interval=0.05), "not complete within its deadline of 0.3 s"),
    ],
    ids=[
        "not found",
        "connection closed early",
        "truncated JSON",
        "oversized, announced",
        "oversized, unannounced",
        "an HTML page",
        "JSON without prefixes",
        "a bad prefix",
        "empty",
        "trickling past the deadline",
    ],
)
def test_a_list_that_fails_keeps_its_previous_prefixes_and_the_failure_is_named(
    endpoints: tuple[dict[str, Served], Path], answer: Served | None, message: str
) -> None:
    served, directory = endpoints
    if answer is None:
        del served["/gptbot.json"]
    else:
        served["/gptbot.json"] = answer
    done = update_ranges(directory, deadline_seconds=0.3, max_bytes=4096)
    assert done.refreshed == ["commoncrawl-ccbot", "ahrefs-crawler"]
    assert list(done.failed) == ["openai-gptbot"]
    assert message in done.failed["openai-gptbot"]
    kept = load_ranges(directory / RANGES_NAME).lists["openai-gptbot"]
    assert ([str(n) for n in kept.networks], kept.fetched_at) == (["132.196.86.0/24"], OLD_FETCHED_AT)
    assert leftovers(directory) == []


def test_when_every_list_fails_the_file_in_place_stays_byte_for_byte(
    endpoints: tuple[dict[str, Served], Path],
) -> None:
    served, directory = endpoints
    served.clear()
    before = (directory / RANGES_NAME).read_bytes()
    with pytest.raises(UnusableRanges, match="openai-gptbot: http://127.0.0.1:[0-9]+/gptbot.json: HTTP Error 404"):
        update_ranges(directory)
    assert (directory / RANGES_NAME).read_bytes() == before
    assert leftovers(directory) == []


@pytest.mark.parametrize("in_place", [None, b"{not json"], ids=["no document", "an unreadable document"])
def test_without_a_readable_document_in_place_the_vendored_snapshots_endpoints_are_the_lists_fetched(
    tmp_path: Path, in_place: bytes | None
) -> None:
    target = tmp_path / RANGES_NAME
    if in_place is not None:
        target.write_bytes(in_place)
    urls = {key: ranges.url for key, ranges in current_ranges(target).lists.items()}
    assert len(urls) == 15
    assert urls["openai-gptbot"] == "https://openai.com/gptbot.json"
    assert urls["google-googlebot"] == "https://developers.google.com/static/search/apis/ipranges/googlebot.json"


def test_the_command_reports_what_it_installed(endpoints: tuple[dict[str, Served], Path]) -> None:
    _, directory = endpoints
    result = CliRunner().invoke(cli, ["crawlers", "update", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    assert f"installed {directory / RANGES_NAME}: 3 of 3 lists fetched, 6 prefixes, oldest list of 20" in result.output


def test_the_command_names_each_list_kept_and_exits_1(endpoints: tuple[dict[str, Served], Path]) -> None:
    served, directory = endpoints
    served["/ccbot.json"] = b"<html>maintenance</html>"
    result = CliRunner().invoke(cli, ["crawlers", "update", "--dir", str(directory)])
    assert result.exit_code == 1
    assert "2 of 3 lists fetched" in result.output
    assert "kept the previous prefixes of commoncrawl-ccbot: http://127.0.0.1:" in result.output
    gptbot = identify(GPTBOT)
    assert gptbot is not None
    assert Crawlers(directory / RANGES_NAME).verify(gptbot, "198.51.100.9") == Verdict.VERIFIED


def test_the_command_refuses_in_one_line_when_no_list_could_be_fetched(
    endpoints: tuple[dict[str, Served], Path],
) -> None:
    served, directory = endpoints
    served.clear()
    before = (directory / RANGES_NAME).read_bytes()
    result = CliRunner().invoke(cli, ["crawlers", "update", "--dir", str(directory)])
    assert result.exit_code == 1
    assert "no crawler range list could be fetched; nothing was replaced: openai-gptbot: " in result.output
    assert (directory / RANGES_NAME).read_bytes() == before


@pytest.mark.parametrize(
    ("body", "prefixes"),
    [
        (b'{"prefixes": [{"ipv4Prefix": "66.249.64.0/27"}, {"ipv6Prefix": "2001:4860:4801:10::/64"}]}', 2),
        (b'[{"ip": "104.43.54.127"}, {"ip": "104.43.55.116"}]', 2),  # addresses count as /32s
        (b"# comment\n\n157.55.39.0/24\n", 1),
    ],
    ids=["Google's shape", "a list of addresses", "plain text"],
)
def test_an_operators_list_is_read_whatever_its_shape(body: bytes, prefixes: int) -> None:
    assert len(read_operator_list(body)) == prefixes
