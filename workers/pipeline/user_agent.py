"""The user-agent step: browser, OS, device type and ua-parser's bot flag, parsed once per
distinct user-agent string.

``user-agents`` 2.2 classifies devices well but parses through ua-parser's legacy pure-Python
path (about 1.5k parses/s, with a 200-entry cache that empties when full). Here its
classification is fed from ua-parser 1.x's resolver, which uses the native ``ua-parser-rs``
accelerator, and whole results are kept in an LRU cache sized for the long tail of real
traffic. ``user-agents`` only knows crawlers that ua-parser calls "Spider", which misses
curl, wget, python-requests, axios, okhttp, Go-http-client and HeadlessChrome: the crawler
step, which runs after this one, flags every crawler the crawler table knows
(shared.crawlers.identity: its own entries, crawler-user-agents' patterns but for those that
also match people's phones and apps, and the names crawlers follow by convention). Bots are
flagged, never dropped here (an exclusion rule can drop them).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import dataclass

import ua_parser
from ua_parser import Domain, load_lazy_builtins

from workers.pipeline.visit import Visit


def _load_on_first_use(name: str) -> None:
    """Register module ``name`` so that it runs only when one of its attributes is read (a
    module already imported stays as it is)."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None, name
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    # Bound on its package too, so that ``from package import module`` finds it there: the
    # import system's own look-up would read the module's __spec__, and so load it.
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent], child, module)


# user-agents imports ua-parser's legacy parser, which compiles its ~1,000 regexes as it is
# imported (0.23-0.37 CPU-s, in each worker process); nothing here calls it (_ClassifiedAgent).
_load_on_first_use("ua_parser.user_agent_parser")
from user_agents.parsers import UserAgent, parse_browser, parse_device, parse_operating_system  # noqa: E402

# Distinct user agents follow a long-tailed distribution; 16k entries cover the head and much
# of the tail of a busy site for a few MB per worker process.
CACHE_SIZE = 16_384


@dataclass(frozen=True, slots=True)
class AgentDetails:
    browser: str
    browser_version: str  # major version
    os: str
    os_version: str
    device_type: str  # desktop, mobile, tablet, bot, other
    is_bot: bool


class _ClassifiedAgent(UserAgent):
    """user-agents' classification over a ua-parser 1.x result (its own __init__ would call
    the legacy parser, so it is deliberately not called)."""

    def __init__(self, string: str, parsed: ua_parser.DefaultedResult) -> None:
        browser, os, device = parsed.user_agent, parsed.os, parsed.device
        self.ua_string = string
        self.browser = parse_browser(browser.family, browser.major, browser.minor, browser.patch)
        self.os = parse_operating_system(os.family, os.major, os.minor, os.patch)
        self.device = parse_device(device.family, device.brand, device.model)


def _device_type(agent: UserAgent) -> str:
    if agent.is_bot:
        return "bot"
    if agent.is_tablet:
        return "tablet"
    if agent.is_mobile:
        return "mobile"
    if agent.is_pc:
        return "desktop"
    return "other"


class UserAgentParser:
    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._resolver = ua_parser.BestAvailableResolver(load_lazy_builtins())
        self.parse = functools.lru_cache(maxsize=cache_size)(self._parse)

    def _parse(self, string: str) -> AgentDetails:
        parsed = self._resolver(string, Domain.ALL).complete().with_defaults()
        agent = _ClassifiedAgent(string, parsed)
        return AgentDetails(
            browser=agent.browser.family,
            browser_version=parsed.user_agent.major or "",
            os=agent.os.family,
            os_version=agent.os.version_string,
            device_type=_device_type(agent),
            is_bot=agent.is_bot,
        )

    def enrich(self, visit: Visit) -> None:
        details, row = self.parse(visit.envelope.user_agent), visit.row
        row.user_agent = visit.envelope.user_agent
        row.browser = details.browser
        row.browser_version = details.browser_version
        row.os = details.os
        row.os_version = details.os_version
        row.device_type = details.device_type
        row.is_bot = details.is_bot
