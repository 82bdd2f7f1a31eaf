"""Which crawler a user agent names: its name, operator, purpose and whether it is an AI crawler.

The table is the vendored snapshot ``data/identities.json`` (provenance: ``data/README.md``):
each known crawler has case-insensitive tokens, matched as whole words (``GPTBot`` matches
``compatible; GPTBot/1.2`` but not ``MyGPTBotClone``), tried longest first, so
``Googlebot-Image`` wins over ``Googlebot`` and ``Applebot-Extended`` over ``Applebot``. A
user agent no known crawler claims falls through to the ~1,500 patterns of the maintained
``crawler-user-agents`` list (curl, python-requests, HeadlessChrome, ...; but for the few the
document ignores, which also match people's phones and apps): a crawler named after its
pattern, its purpose from the list's tags (``seo``, ``search-engine``, ...; ``tool`` when
none says). Last, a few generic patterns catch crawlers no list names by the
conventions crawlers follow (``SomethingBot/1.0``, ``compatible; Name; +https://...``), named
by what they capture. Anything else is a human: None.

Every pattern goes into one Rust regex set (``ua-parser-rs``, as the workers' user-agent
step), which answers with the first pattern in list order, and answers are kept per user
agent in an LRU cache: a repeated user agent costs a dictionary look-up.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crawleruseragents
import ua_parser_rs

DATA_DIR = Path(__file__).resolve().parent / "data"
IDENTITIES_FILE = DATA_DIR / "identities.json"
# Distinct user agents are long-tailed; crawlers are a small part of them.
CACHE_SIZE = 16_384


class Purpose(enum.StrEnum):
    SEARCH = "search"  # a search engine's index
    AI_TRAINING = "ai_training"  # collects text to train models
    AI_SEARCH = "ai_search"  # indexes for an AI search or answer engine
    USER_FETCH = "user_fetch"  # fetches a page because a user (or their assistant) asked for it
    DATASET = "dataset"  # builds data sets others use (Common Crawl, Diffbot)
    SEO = "seo"  # link and SEO analysis (Ahrefs, Semrush, Majestic)
    ARCHIVE = "archive"  # web archives
    LINK_PREVIEW = "link_preview"  # a chat or social app previewing a shared link
    TOOL = "tool"  # a tool, a library, or a crawler whose purpose is unknown


@dataclass(frozen=True)
class Crawler:
    name: str
    operator: str  # "" when unknown
    purpose: Purpose
    ai: bool  # an AI crawler: trains, answers or fetches for AI products
    # The operator's published range lists (keys of the ranges snapshot) that an address must
    # be in for a request under this name to be verified; () when the operator publishes none.
    ranges: tuple[str, ...] = ()


class UnusableIdentities(ValueError):
    """An identities document is malformed; the message says where."""


_WORD = re.compile(r"\w")


def _token_pattern(token: str) -> str:
    """A case-insensitive whole-word match of ``token`` (a word edge only where the token
    starts or ends with a word character)."""
    edge = r"(?-u:\b)"
    start = edge if _WORD.match(token[0]) else ""
    end = edge if _WORD.match(token[-1]) else ""
    return f"(?i){start}{re.escape(token)}{end}"


_CLASS = re.compile(r"\[(.)[^\]]*\]")
_START_GROUP = re.compile(r"\((?:\?:)?\^\|[^)]*\)")  # (^| ) or (?:^|\s): "at the start or after a space"
_STOP = re.compile(r"[()\[\]{}|*+?\\]")


def pattern_name(pattern: str) -> str:
    """A readable name for a crawler-user-agents regex: ``Googlebot\\/`` -> Googlebot,
    ``[wW]get`` -> wget, ``^curl`` -> curl, ``(^| )PTST\\/`` -> PTST."""
    text = _START_GROUP.sub("", pattern.replace("(?i)", ""))
    text = _CLASS.sub(r"\1", text.replace("^", "").replace("$", ""))
    text = re.sub(r"\\([^A-Za-z0-9])", r"\1", text)
    text = _STOP.split(text, maxsplit=1)[0].strip(" /-.;:_")
    return text or pattern


def _crawler(entry: Mapping[str, Any], where: str) -> tuple[Crawler, list[tuple[int, str]]]:
    """The crawler of one entry and its patterns, each with the length of what it matches
    (longer first): its tokens as whole words, and its whole regexes (``patterns``, for a
    crawler a token cannot tell from a person's app)."""
    try:
        crawler = Crawler(
            name=str(entry["name"]),
            operator=str(entry.get("operator", "")),
            purpose=Purpose(entry["purpose"]),
            ai=bool(entry["ai"]),
            ranges=tuple(str(key) for key in entry.get("ranges", ())),
        )
        tokens = [str(token) for token in entry.get("tokens", ())]
        patterns = [str(pattern) for pattern in entry.get("patterns", ())]
    except (KeyError, TypeError, ValueError) as error:
        raise UnusableIdentities(f"{where}: {error!r}") from None
    if not crawler.name or not (tokens or patterns) or not all(tokens):
        raise UnusableIdentities(f"{where}: a crawler needs a name and non-empty tokens or patterns")
    return crawler, [(len(token), _token_pattern(token)) for token in tokens] + [(len(p), p) for p in patterns]


_UNLISTED = "unlisted:"
# crawler-user-agents' tags that name a purpose, the first present wins; "ai-crawler" sets ai.
_TAG_PURPOSES = {
    "social-preview": Purpose.LINK_PREVIEW,
    "search-engine": Purpose.SEARCH,
    "seo": Purpose.SEO,
    "archiver": Purpose.ARCHIVE,
}


def _listed_elsewhere(name: str, tags: Iterable[str]) -> Crawler:
    """A crawler-user-agents crawler the table does not know: its purpose from its tags."""
    purpose = next((_TAG_PURPOSES[tag] for tag in _TAG_PURPOSES if tag in tags), Purpose.TOOL)
    return Crawler(name, "", purpose, ai="ai-crawler" in tags)


class IdentityTable:
    """The crawlers of one identities document, then crawler-user-agents' patterns (but for
    those the document ignores: they also match people's browsers and apps)."""

    def __init__(
        self,
        entries: Iterable[Mapping[str, Any]],
        fallback: Iterable[Mapping[str, Any]] = crawleruseragents.CRAWLER_USER_AGENTS_DATA,
        ignored: Iterable[str] = (),
        generic: Iterable[str] = (),
        cache_size: int = CACHE_SIZE,
    ) -> None:
        matched: list[tuple[int, str, Crawler]] = []
        self.crawlers: dict[str, Crawler] = {}
        for index, entry in enumerate(entries):
            crawler, patterns = _crawler(entry, f"crawler #{index}")
            self.crawlers[crawler.name] = crawler
            matched.extend((length, pattern, crawler) for length, pattern in patterns)
        matched.sort(key=lambda item: -item[0])  # the longest first; stable among equals
        self._answers: list[Crawler] = [crawler for _, _, crawler in matched]
        regexes = [pattern for _, pattern, _ in matched]
        by_name = {name.lower(): crawler for name, crawler in self.crawlers.items()}
        skipped = set(ignored)
        for entry in fallback:
            if entry["pattern"] in skipped:
                continue
            # A pattern for a crawler the table knows answers the table's crawler (the table's
            # tokens missed it, e.g. inside a longer word), so a name means one thing.
            name = pattern_name(entry["pattern"])
            self._answers.append(by_name.get(name.lower()) or _listed_elsewhere(name, entry.get("tags", ())))
            regexes.append(entry["pattern"])  # case-sensitive, as crawler-user-agents' own is_crawler
        # One set: a listed pattern answers its index; a generic one, last (so only when no list
        # knows the user agent), answers the crawler's name it captures, after _UNLISTED.
        rules = [(pattern, str(i)) for i, pattern in enumerate(regexes)]
        rules += [(pattern, _UNLISTED + "$1") for pattern in generic]
        try:
            self._set = ua_parser_rs.UserAgentExtractor(
                (pattern, answer, None, None, None, None) for pattern, answer in rules
            )
        except ValueError as error:  # a pattern that is no regex
            raise UnusableIdentities(str(error)) from None
        self.identify = functools.lru_cache(maxsize=cache_size)(self._identify)

    def _identify(self, user_agent: str) -> Crawler | None:
        found = self._set.extract(user_agent)
        if found is None:
            return None
        if found.family.startswith(_UNLISTED):
            return Crawler(found.family.removeprefix(_UNLISTED).strip(), "", Purpose.TOOL, ai=False)
        return self._answers[int(found.family)]


def load_identities(path: Path = IDENTITIES_FILE) -> IdentityTable:
    """The table of an identities document; UnusableIdentities when it is malformed."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entries = document["crawlers"]
        ignored = [str(item["pattern"]) for item in document.get("ignored_patterns", [])]
        generic = [str(pattern) for pattern in document.get("generic_patterns", [])]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UnusableIdentities(f"{path}: {error!r}") from None
    if not isinstance(entries, list):
        raise UnusableIdentities(f"{path}: 'crawlers' is not a list")
    return IdentityTable(entries, ignored=ignored, generic=generic)


@functools.cache
def vendored_identities() -> IdentityTable:
    """The table of the snapshot shipped with hitstream, built once per process."""
    return load_identities()


def identify(user_agent: str) -> Crawler | None:
    """The crawler ``user_agent`` names, or None for a human (a browser no list knows)."""
    return vendored_identities().identify(user_agent)
