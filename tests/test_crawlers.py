"""The crawler knowledge library (shared/crawlers): which crawler a user agent names, whether
its address is one its operator publishes, and which ranges document a process uses (read
again when replaced).

The addresses are taken from the vendored snapshot of 2026-09-02 (shared/crawlers/data):
132.196.86.0/24 is in OpenAI's GPTBot list, 192.178.4.0/27 and 2001:4860:4801:10::/64 in
Google's Googlebot list; 203.0.113.0/24 and 2001:db8::/32 are documentation ranges no
operator publishes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import crawleruseragents
import pytest

from shared.config import load_settings
from shared.crawlers.identity import (
    IDENTITIES_FILE,
    Crawler,
    IdentityTable,
    Purpose,
    UnusableIdentities,
    identify,
    load_identities,
)
from shared.crawlers.ranges import VENDORED_RANGES, UnusableRanges, load_ranges, parse_ranges
from shared.crawlers.snapshot import Crawlers
from shared.crawlers.verification import RangeTable, Verdict, WatchedRanges, verify

# HitKeep's 22 AI crawlers, each with a user agent it sends (or, for the robots.txt-only
# tokens Google-Extended and Applebot-Extended, one that claims it).
HITKEEP_AI = {
    "GPTBot": "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
    "ChatGPT-User": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot"
    ),
    "ClaudeBot": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)"
    ),
    "Claude-Web": "Mozilla/5.0 (compatible; Claude-Web/1.0; +https://www.anthropic.com)",
    "PerplexityBot": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
        "PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)"
    ),
    "Google-Extended": "Mozilla/5.0 (compatible; Google-Extended)",
    "GoogleOther": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GoogleOther) "
        "Chrome/126.0.6478.126 Safari/537.36"
    ),
    "Google-Safety": "Google-Safety",
    "Applebot-Extended": "Mozilla/5.0 (compatible; Applebot-Extended/0.1; +http://www.apple.com/go/applebot)",
    "Bytespider": (
        "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
        "Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)"
    ),
    "CCBot": "CCBot/2.0 (https://commoncrawl.org/faq/)",
    "Meta-ExternalAgent": "meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)",
    "Meta-ExternalFetcher": (
        "meta-externalfetcher/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)"
    ),
    "Amazonbot": (
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Amazonbot/0.1; "
        "+https://developer.amazon.com/support/amazonbot) Chrome/119.0.6045.214 "
        "Safari/537.36"
    ),
    "cohere-ai": "cohere-ai/1.0 (+https://cohere.com)",
    "YouBot": "Mozilla/5.0 (compatible; YouBot (+http://www.you.com))",
    "AI2Bot": "Mozilla/5.0 (compatible) AI2Bot (+https://www.allenai.org/crawler)",
    "Diffbot": (
        "Mozilla/5.0 (X11; U; Linux i686; en-US; rv:1.9.1.2) Gecko/20090729 "
        "Firefox/3.5.2 (.NET CLR 3.5.30729; Diffbot/0.1; +http://www.diffbot.com)"
    ),
    "Timpibot": "Timpibot/0.8 (+http://www.timpi.io)",
    "ImagesiftBot": "Mozilla/5.0 (compatible; ImagesiftBot; +imagesift.com)",
    "DeepSeekBot": "Mozilla/5.0 (compatible; DeepSeekBot/1.0; +https://www.deepseek.com)",
    "PetalBot": (
        "Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
        "Safari/537.36 (compatible; "
        "PetalBot;+https://webmaster.petalsearch.com/site/petalbot)"
    ),
}

GPTBOT = HITKEEP_AI["GPTBot"]
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

HUMANS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
    ),
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.6778.81 Mobile Safari/537.36"
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
        "Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like "
        "Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36"
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 "
        "[FBAN/FBIOS;FBAV/480.0.0.45.108;FBBV/640000000;FBDV/iPhone15,3;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]"
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 Instagram 340.0.5.22.109 (iPhone15,3; iOS "
        "17_5; en_US; en; scale=3.00; 1290x2796; 620000000)"
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/17.5 Safari/605.1.15"
    ),
]


@pytest.mark.parametrize("name", list(HITKEEP_AI))
def test_each_of_hitkeeps_ai_crawlers_is_identified_under_hitkeeps_name_as_an_ai_crawler(name: str) -> None:
    crawler = identify(HITKEEP_AI[name])
    assert crawler is not None
    assert (crawler.name, crawler.ai) == (name, True)


@pytest.mark.parametrize(
    ("user_agent", "name", "operator", "purpose", "ai"),
    [
        (GOOGLEBOT, "Googlebot", "Google", Purpose.SEARCH, False),
        ("Googlebot-Image/1.0", "Googlebot-Image", "Google", Purpose.SEARCH, False),
        (
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "bingbot",
            "Microsoft",
            Purpose.SEARCH,
            False,
        ),
        (
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, "
                "like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; "
                "+http://www.apple.com/go/applebot)"
            ),
            "Applebot",
            "Apple",
            Purpose.SEARCH,
            False,
        ),
        (
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
            "AhrefsBot",
            "Ahrefs",
            Purpose.SEO,
            False,
        ),
        (
            "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
            "SemrushBot",
            "Semrush",
            Purpose.SEO,
            False,
        ),
        (
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "facebookexternalhit",
            "Meta",
            Purpose.LINK_PREVIEW,
            False,
        ),
        (
            "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            "Slackbot-LinkExpanding",
            "Slack",
            Purpose.LINK_PREVIEW,
            False,
        ),
        ("Twitterbot/1.0", "Twitterbot", "X", Purpose.LINK_PREVIEW, False),
        (
            "Mozilla/5.0 (compatible; OAI-SearchBot/1.0; +https://openai.com/searchbot)",
            "OAI-SearchBot",
            "OpenAI",
            Purpose.AI_SEARCH,
            True,
        ),
        (
            "Mozilla/5.0 (compatible; archive.org_bot +http://archive.org/details/archive.org_bot)",
            "archive.org_bot",
            "Internet Archive",
            Purpose.ARCHIVE,
            False,
        ),
        ("curl/8.5.0", "curl", "", Purpose.TOOL, False),
        # Only crawler-user-agents knows these: the purpose comes from its tags.
        ("Mozilla/5.0 (compatible; heritrix/1.12.1 +http://www.webarchiv.cz)", "heritrix", "", Purpose.ARCHIVE, False),
        ("Facebot/1.0", "Facebot", "", Purpose.LINK_PREVIEW, False),
        (
            "GingerCrawler/1.0 (Language Assistant for Dyslexics; www.gingersoftware.com)",
            "GingerCrawler",
            "",
            Purpose.SEO,
            False,
        ),
        ("python-requests/2.32.3", "python-requests", "", Purpose.TOOL, False),
    ],
)
def test_search_seo_preview_and_tool_crawlers_are_named_with_operator_and_purpose(
    user_agent: str, name: str, operator: str, purpose: Purpose, ai: bool
) -> None:
    crawler = identify(user_agent)
    assert crawler is not None
    assert (crawler.name, crawler.operator, crawler.purpose, crawler.ai) == (name, operator, purpose, ai)


@pytest.mark.parametrize("user_agent", HUMANS)
def test_a_browser_is_no_crawler(user_agent: str) -> None:
    assert identify(user_agent) is None


def test_every_example_of_crawler_user_agents_is_identified_but_those_of_people_it_lists() -> None:
    examples = [
        (entry["pattern"], ua)
        for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA
        for ua in entry.get("instances", [])
    ]
    assert len(examples) > 2000
    # Its two examples that are people's browsers: an Instagram in-app browser listed under an
    # Android build id, and the Fluid site-specific browser.
    assert [pattern for pattern, ua in examples if identify(ua) is None] == [r"AP3A\.240617\.008", "Fluid"]


def test_each_ignored_crawler_user_agents_pattern_is_still_in_the_installed_list() -> None:
    # A pattern renamed upstream would come back unnoticed: an upgrade of the package fails here.
    ignored = [item["pattern"] for item in json.loads(IDENTITIES_FILE.read_text())["ignored_patterns"]]
    assert len(ignored) == 12
    assert set(ignored) <= {entry["pattern"] for entry in crawleruseragents.CRAWLER_USER_AGENTS_DATA}


@pytest.mark.parametrize(
    ("user_agent", "name"),
    [
        ("Mozilla/5.0 (Linux; Android 4.4.2; ViewSonic V500 Build/KVT49L) AppleWebKit/537.36 Chrome/18.0 Mobile", None),
        ("Mozilla/5.0 (compatible; Sonic/1.0; http://www.yama.info.waseda.ac.jp/~crawler/info.html)", "Sonic"),
        ("Mozilla/5.0 (Linux; Android 4.2.2; HTC Butterfly Build/JDQ39) AppleWebKit/537.36 Chrome/31.0 Mobile", None),
        ("Mozilla/5.0 (compatible; Butterfly/1.0; +http://labs.topsy.com/butterfly/) Gecko/2009032608", "Butterfly"),
        ("WhatsApp/2.17.427 Android/7.0 Device/motorola-Moto_C_Plus", None),
        ("WhatsApp/2.23.20.0 A", "WhatsApp"),
        ("WhatsApp/2.12.15/i", "WhatsApp"),
        ("Sogou web spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm#07)", "Sogou"),
    ],
)
def test_phones_and_apps_named_like_crawlers_stay_human(user_agent: str, name: str | None) -> None:
    assert getattr(identify(user_agent), "name", None) == name


@pytest.mark.parametrize(
    ("user_agent", "name"),
    [
        ("Mozilla/5.0 (compatible; AcoonBot/4.11.1; +http://www.acoon.de/robot.asp)", "AcoonBot"),
        ("AppSignalBot/1.0 (+https://appsignal.com)", "AppSignalBot"),
        ("Mozilla/5.0 (compatible; Dataprovider/6.92; +https://www.dataprovider.com/)", "Dataprovider"),
        ("ias-va/3.1 (+https://www.admantx.com/service-fetcher.html)", "ias-va"),
        ("Mozilla/5.0 (Linux; Android 13; Cubot X30) AppleWebKit/537.36 Chrome/122.0.0.0 Mobile Safari/537.36", None),
        ("Mozilla/5.0 (Linux; Android 13; Spider 8) AppleWebKit/537.36 Chrome/124.0.0.0 Safari/537.36", None),
    ],
)
def test_a_crawler_no_list_names_is_caught_by_the_conventions_crawlers_follow(
    user_agent: str, name: str | None
) -> None:
    crawler = identify(user_agent)
    expected = None if name is None else (name, Purpose.TOOL, False)
    assert (None if crawler is None else (crawler.name, crawler.purpose, crawler.ai)) == expected


def test_a_token_is_matched_as_a_word_in_any_case_and_the_longest_token_wins() -> None:
    table = IdentityTable(
        [
            {"name": "Googlebot", "operator": "Google", "purpose": "search", "ai": False, "tokens": ["Googlebot"]},
            {
                "name": "Googlebot-Image",
                "operator": "Google",
                "purpose": "search",
                "ai": False,
                "tokens": ["Googlebot-Image"],
            },
        ],
        fallback=[],
    )
    assert [
        getattr(table.identify(ua), "name", None)
        for ua in ("GOOGLEBOT/2.1", "Googlebot-Image/1.0", "MyGooglebotClone/1", "Googlebots")
    ] == [
        "Googlebot",
        "Googlebot-Image",
        None,
        None,
    ]


def test_a_malformed_identities_document_is_refused_naming_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "identities.json"
    path.write_text(
        json.dumps({"crawlers": [{"name": "X", "operator": "", "purpose": "spying", "ai": False, "tokens": ["X"]}]})
    )
    with pytest.raises(UnusableIdentities, match="crawler #0"):
        load_identities(path)


def test_an_identities_document_with_a_pattern_that_is_no_regex_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identities.json"
    crawler = {"name": "X", "operator": "", "purpose": "tool", "ai": False, "patterns": ["(unclosed"]}
    path.write_text(json.dumps({"crawlers": [crawler]}))
    with pytest.raises(UnusableIdentities, match="unclosed group"):
        load_identities(path)


@pytest.mark.parametrize(
    ("user_agent", "ip", "verdict"),
    [
        (GPTBOT, "132.196.86.1", Verdict.VERIFIED),
        (GPTBOT, "203.0.113.9", Verdict.SPOOFED),
        (GPTBOT, "::ffff:132.196.86.1", Verdict.VERIFIED),  # an IPv4-mapped IPv6 address is its IPv4 address
        (GOOGLEBOT, "192.178.4.1", Verdict.VERIFIED),
        (GOOGLEBOT, "2001:4860:4801:10::1", Verdict.VERIFIED),
        (GOOGLEBOT, "2001:db8::1", Verdict.SPOOFED),
        (GOOGLEBOT, "132.196.86.1", Verdict.SPOOFED),  # OpenAI's address is no Googlebot's
        (HITKEEP_AI["ChatGPT-User"], "132.196.86.1", Verdict.SPOOFED),  # GPTBot's list is not ChatGPT-User's
        (HITKEEP_AI["ClaudeBot"], "203.0.113.9", Verdict.UNVERIFIABLE),  # Anthropic publishes no list
        (HITKEEP_AI["Bytespider"], "2001:db8::1", Verdict.UNVERIFIABLE),
        ("curl/8.5.0", "203.0.113.9", Verdict.UNVERIFIABLE),
        (GPTBOT, "", Verdict.UNVERIFIABLE),  # no address given
        (GPTBOT, "not an address", Verdict.UNVERIFIABLE),
        (GPTBOT, "132.196.86.1\x00", Verdict.UNVERIFIABLE),
        (GPTBOT, "132.196.86.1/24", Verdict.UNVERIFIABLE),
    ],
)
def test_a_crawler_is_verified_inside_its_operators_list_spoofed_outside_it_unverifiable_without_one(
    user_agent: str, ip: str, verdict: Verdict
) -> None:
    crawler = identify(user_agent)
    assert crawler is not None
    assert verify(crawler, ip) == verdict


def test_a_robots_txt_only_token_is_verified_by_any_list_of_its_operator() -> None:
    crawler = identify(HITKEEP_AI["Google-Extended"])
    assert crawler is not None
    assert [verify(crawler, ip) for ip in ("192.178.4.1", "2001:4860:4801:2008::1", "203.0.113.9")] == [
        Verdict.VERIFIED,  # Googlebot's list
        Verdict.VERIFIED,  # the special-case crawlers' list
        Verdict.SPOOFED,
    ]


def test_a_crawler_whose_lists_are_absent_from_the_document_is_unverifiable() -> None:
    ranges = parse_ranges(json.dumps({"snapshot": "2026-12-01", "lists": {"other": _list(["10.0.0.0/8"])}}))
    crawler = Crawler("GPTBot", "OpenAI", Purpose.AI_TRAINING, ai=True, ranges=("openai-gptbot",))
    assert RangeTable(ranges).verify(crawler, "132.196.86.1") == Verdict.UNVERIFIABLE


def test_the_vendored_snapshot_holds_the_15_lists_of_3052_prefixes() -> None:
    ranges = load_ranges(VENDORED_RANGES)
    assert (len(ranges.lists), ranges.prefix_count, ranges.snapshot) == (15, 3052, "2026-09-02")


def _list(prefixes: list[str], fetched_at: str = "2026-12-01T00:00:00+00:00") -> dict[str, object]:
    return {
        "operator": "OpenAI",
        "label": "GPTBot",
        "url": "https://openai.com/gptbot.json",
        "fetched_at": fetched_at,
        "prefixes": prefixes,
    }


def write_ranges(path: Path, prefixes: list[str], snapshot: str = "2026-12-01") -> None:
    """Write a document with only GPTBot's list, renamed over ``path`` as the update does."""
    staged = path.with_suffix(".part")
    staged.write_text(json.dumps({"snapshot": snapshot, "lists": {"openai-gptbot": _list(prefixes)}}))
    os.replace(staged, path)


def test_a_replaced_ranges_file_is_read_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "crawler-ranges.json"
    write_ranges(path, ["198.51.100.0/24"])
    crawlers = Crawlers(path, check_seconds=0)
    gptbot = crawlers.identify(GPTBOT)
    assert gptbot is not None
    assert [crawlers.verify(gptbot, ip) for ip in ("198.51.100.7", "132.196.86.1")] == [
        Verdict.VERIFIED,
        Verdict.SPOOFED,
    ]
    write_ranges(path, ["132.196.86.0/24"], snapshot="2026-12-02")
    assert [crawlers.verify(gptbot, ip) for ip in ("198.51.100.7", "132.196.86.1")] == [
        Verdict.SPOOFED,
        Verdict.VERIFIED,
    ]
    assert crawlers.describe() == f"crawler ranges of 2026-12-02 (1 prefixes) from {path}"


def test_the_file_is_looked_at_again_only_once_its_check_interval_has_passed(tmp_path: Path) -> None:
    path = tmp_path / "crawler-ranges.json"
    write_ranges(path, ["198.51.100.0/24"])
    now = [1000.0]
    ranges = WatchedRanges(path, check_seconds=10, clock=lambda: now[0])
    gptbot = identify(GPTBOT)
    assert gptbot is not None
    write_ranges(path, ["132.196.86.0/24"])
    now[0] += 9.9
    assert ranges.verify(gptbot, "198.51.100.7") == Verdict.VERIFIED  # the old lists, not looked at yet
    now[0] += 0.2
    assert ranges.verify(gptbot, "198.51.100.7") == Verdict.SPOOFED


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        ('{"snapshot": "2026-12-02", "lists": {"openai-gptbot": ', "not JSON"),
        ('{"snapshot": "2026-12-02", "lists": {}}', "no 'lists' object"),
        (
            '{"snapshot": "2026-12-02", "lists": {"openai-gptbot": {"operator": "OpenAI"}}}',
            "has no label, url, fetched_at",
        ),
        (
            json.dumps({"snapshot": "2026-12-02", "lists": {"openai-gptbot": _list(["132.196.86.0/33"])}}),
            "'132.196.86.0/33' is not an IP prefix",
        ),
        (
            json.dumps({"snapshot": "2026-12-02", "lists": {"openai-gptbot": _list([])}}),
            "'prefixes' is not a non-empty list",
        ),
    ],
    ids=["truncated", "no lists", "fields missing", "bad prefix", "empty list"],
)
def test_a_replacement_that_cannot_be_read_leaves_the_lists_in_use_answering(
    tmp_path: Path, replacement: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "crawler-ranges.json"
    write_ranges(path, ["198.51.100.0/24"])
    crawlers = Crawlers(path, check_seconds=0)
    gptbot = crawlers.identify(GPTBOT)
    assert gptbot is not None
    path.write_text(replacement)
    assert crawlers.verify(gptbot, "198.51.100.7") == Verdict.VERIFIED
    assert message in caplog.text
    with pytest.raises(UnusableRanges, match=message.replace("(", r"\(")):
        load_ranges(path)


def test_without_a_ranges_file_the_vendored_snapshot_answers_until_one_appears(tmp_path: Path) -> None:
    path = tmp_path / "crawler-ranges.json"
    crawlers = Crawlers.from_settings(load_settings({"HITSTREAM_CRAWLER_RANGES": str(path)}))
    gptbot = crawlers.identify(GPTBOT)
    assert gptbot is not None
    assert crawlers.describe() == "crawler ranges of 2026-09-02 (3,052 prefixes) from the vendored snapshot"
    assert crawlers.verify(gptbot, "132.196.86.1") == Verdict.VERIFIED
    write_ranges(path, ["198.51.100.0/24"])
    assert Crawlers(path, check_seconds=0).verify(gptbot, "132.196.86.1") == Verdict.SPOOFED
