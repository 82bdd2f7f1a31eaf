"""Which crawler a user agent names: its name, operator, purpose and whether it is an AI crawler.

The table is the vendored snapshot ``data/identities.json`` (provenance: ``data/README.md``):
each known crawler has case-insensitive tokens, matched as whole words (``GPTBot`` matches
``compatible; GPTBot/1.2`` but not ``MyGPTBotClone``), tried longest first, so
``Googlebot-Image`` wins over ``Googlebot`` and ``Applebot-Extended`` over ``Applebot``. A
user agent no known crawler claims falls through to the ~1,500 patterns of the maintained
``crawler-user-agents`` list (curl, python-requests, HeadlessChrome, ...): a crawler named
after its pattern, purpose ``tool``. Anything else is a human: None.

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
_STOP = re.compile(r"[()\[\]{}|*+?\\]")


def pattern_name(pattern: str) -> str:
    """A readable name for a crawler-user-agents regex: ``Googlebot\\/`` -> Googlebot,
    ``[wW]get`` -> wget, ``^curl`` -> curl."""
    text = _CLASS.sub(r"\1", pattern.replace("(?i)", "").replace("^", "").replace("$", ""))
    text = re.sub(r"\\([^A-Za-z0-9])", r"\1", text)
    text = _STOP.split(text, maxsplit=1)[0].strip(" /-.;:_")
    return text or pattern


def _crawler(entry: Mapping[str, Any], where: str) -> tuple[Crawler, list[str]]:
    try:
        crawler = Crawler(
            name=str(entry["name"]),
            operator=str(entry.get("operator", "")),
            purpose=Purpose(entry["purpose"]),
            ai=bool(entry["ai"]),
            ranges=tuple(str(key) for key in entry.get("ranges", ())),
        )
        tokens = [str(token) for token in entry["tokens"]]
    except (KeyError, TypeError, ValueError) as error:
        raise UnusableIdentities(f"{where}: {error!r}") from None
    if not crawler.name or not tokens or not all(tokens):
        raise UnusableIdentities(f"{where}: a crawler needs a name and non-empty tokens")
    return crawler, tokens


class IdentityTable:
    """The crawlers of one identities document, plus crawler-user-agents' patterns."""

    def __init__(
        self,
        entries: Iterable[Mapping[str, Any]],
        fallback: Iterable[Mapping[str, Any]] = crawleruseragents.CRAWLER_USER_AGENTS_DATA,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        tokens: list[tuple[str, Crawler]] = []
        self.crawlers: dict[str, Crawler] = {}
        for index, entry in enumerate(entries):
            crawler, names = _crawler(entry, f"crawler #{index}")
            self.crawlers[crawler.name] = crawler
            tokens.extend((token, crawler) for token in names)
        tokens.sort(key=lambda item: -len(item[0]))  # stable: the document's order among equals
        self._answers: list[Crawler] = [crawler for _, crawler in tokens]
        patterns = [_token_pattern(token) for token, _ in tokens]
        for entry in fallback:
            self._answers.append(Crawler(pattern_name(entry["pattern"]), "", Purpose.TOOL, ai=False))
            patterns.append(entry["pattern"])  # case-sensitive, as crawler-user-agents' own is_crawler
        self._set = ua_parser_rs.UserAgentExtractor(
            (pattern, str(i), None, None, None, None) for i, pattern in enumerate(patterns)
        )
        self.identify = functools.lru_cache(maxsize=cache_size)(self._identify)

    def _identify(self, user_agent: str) -> Crawler | None:
        found = self._set.extract(user_agent)
        return None if found is None else self._answers[int(found.family)]


def load_identities(path: Path = IDENTITIES_FILE) -> IdentityTable:
    """The table of an identities document; UnusableIdentities when it is malformed."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entries = document["crawlers"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UnusableIdentities(f"{path}: {error!r}") from None
    if not isinstance(entries, list):
        raise UnusableIdentities(f"{path}: 'crawlers' is not a list")
    return IdentityTable(entries)


@functools.cache
def vendored_identities() -> IdentityTable:
    """The table of the snapshot shipped with hitstream, built once per process."""
    return load_identities()


def identify(user_agent: str) -> Crawler | None:
    """The crawler ``user_agent`` names, or None for a human (a browser no list knows)."""
    return vendored_identities().identify(user_agent)
