"""A realistic user-agent mix for benchmarks: a few thousand distinct strings, Zipf-skewed.

Real traffic is dominated by a handful of current desktop and mobile browsers, followed by a
long tail of older versions, device models, in-app browsers, crawlers and HTTP libraries.
``distinct_user_agents`` lists the strings from most to least common; ``user_agent_stream``
draws from that list with Zipf weights (rank ** -skew), so caches see a realistic hit rate.
"""

from __future__ import annotations

import itertools
import random

_CHROME = range(124, 96, -1)
_FIREFOX = range(126, 100, -1)
_SAFARI = ["17.4", "17.3", "17.2", "17.1", "16.6", "16.5", "16.3", "15.6", "15.4", "14.1"]
_IOS = ["17_4", "17_3_1", "17_2", "16_7", "16_6", "16_5", "15_8", "15_7", "14_8"]
_FIREFOX_PLATFORMS = [
    "Windows NT 10.0; Win64; x64",
    "X11; Linux x86_64",
    "Macintosh; Intel Mac OS X 10.15",
    "X11; Ubuntu; Linux x86_64",
]
_WINDOWS = ["Windows NT 10.0; Win64; x64", "Windows NT 10.0; WOW64", "Windows NT 6.1; Win64; x64"]
_MACOS = ["10_15_7", "13_6", "14_4", "12_7", "11_7_10"]
_ANDROID_PHONES = [
    "Pixel 8",
    "Pixel 7a",
    "Pixel 6",
    "SM-S918B",
    "SM-A546B",
    "SM-G991B",
    "SM-A137F",
    "M2101K6G",
    "22101316G",
    "CPH2451",
    "moto g(30)",
    "RMX3085",
    "V2130",
    "Infinix X6816",
    "K",
]
_ANDROID_TABLETS = ["SM-X710", "SM-T870", "Lenovo TB-X606F", "SM-X200"]
_ANDROID_VERSIONS = ["14", "13", "12", "11", "10"]
_BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.118 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; DuckDuckBot-Https/1.1; https://duckduckgo.com/duckduckbot)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Twitterbot/1.0",
    "Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
]
_TOOLS = [
    *(f"curl/{v}" for v in ["8.7.1", "8.5.0", "8.4.0", "7.88.1", "7.81.0", "7.68.0"]),
    *(f"python-requests/{v}" for v in ["2.31.0", "2.28.2", "2.25.1", "2.22.0"]),
    *(f"Wget/{v}" for v in ["1.21.4", "1.21.2", "1.20.3"]),
    *(f"Go-http-client/{v}" for v in ["1.1", "2.0"]),
    *(f"okhttp/{v}" for v in ["4.12.0", "4.9.3", "3.14.9"]),
    *(f"axios/{v}" for v in ["1.6.8", "1.6.7", "0.27.2"]),
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36",
]


def browser_user_agents() -> list[str]:
    """Browser strings, newest versions first within each family."""
    chrome_desktop = [
        f"Mozilla/5.0 ({platform}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"
        for v in _CHROME
        for platform in [*_WINDOWS, *(f"Macintosh; Intel Mac OS X {m}" for m in _MACOS), "X11; Linux x86_64"]
    ]
    edge = [
        f"Mozilla/5.0 ({platform}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0"
        for v in _CHROME
        for platform in _WINDOWS
    ]
    chrome_android = [
        f"Mozilla/5.0 (Linux; Android {a}; {model}) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{v}.0.0.0 Mobile Safari/537.36"
        for v in _CHROME
        for a, model in itertools.product(_ANDROID_VERSIONS, _ANDROID_PHONES)
    ]
    samsung = [
        f"Mozilla/5.0 (Linux; Android {a}; {model}) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"SamsungBrowser/{s}.0 Chrome/{v}.0.0.0 Mobile Safari/537.36"
        for s, v in [("24", 117), ("23", 115), ("22", 111), ("21", 110)]
        for a, model in itertools.product(_ANDROID_VERSIONS, _ANDROID_PHONES[3:8])
    ]
    tablets = [
        f"Mozilla/5.0 (Linux; Android {a}; {model}) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/{v}.0.0.0 Safari/537.36"
        for v in _CHROME[:10]
        for a, model in itertools.product(_ANDROID_VERSIONS[:3], _ANDROID_TABLETS)
    ]
    safari_ios = [
        f"Mozilla/5.0 ({device}; CPU {os_name} {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        f"Version/{safari} Mobile/15E148 Safari/604.1"
        for ios, safari in zip(_IOS, _SAFARI, strict=False)
        for device, os_name in [("iPhone", "iPhone OS"), ("iPad", "OS")]
    ]
    in_app = [
        f"Mozilla/5.0 (iPhone; CPU iPhone OS {ios} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        f"Mobile/15E148 {app}"
        for ios in _IOS
        for app in ["Instagram 330.0.0.31.79", "[FBAN/FBIOS;FBAV/460.0.0.36.113]", "LinkedInApp/9.29.3"]
    ]
    safari_mac = [
        f"Mozilla/5.0 (Macintosh; Intel Mac OS X {m}) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        f"Version/{safari} Safari/605.1.15"
        for safari in _SAFARI
        for m in _MACOS[:2]
    ]
    firefox = [
        f"Mozilla/5.0 ({platform}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"
        for v in _FIREFOX
        for platform in _FIREFOX_PLATFORMS
    ]
    # Interleave families so the most common strings of each come first, as in real traffic.
    families = [chrome_desktop, chrome_android, safari_ios, edge, safari_mac, firefox, samsung, tablets, in_app]
    return [ua for group in itertools.zip_longest(*families) for ua in group if ua is not None]


def distinct_user_agents() -> list[str]:
    """Every distinct string, most common first; bots and tools are spread through the ranks."""
    browsers = browser_user_agents()
    automated = [*_BOTS, *_TOOLS]
    ranked: list[str] = []
    step = max(1, len(browsers) // len(automated))
    for index, browser in enumerate(browsers):
        if index % step == 3 and automated:
            ranked.append(automated.pop(0))
        ranked.append(browser)
    ranked.extend(automated)
    return list(dict.fromkeys(ranked))


def user_agent_stream(count: int, *, skew: float = 1.1, seed: int = 7) -> list[str]:
    """``count`` user agents drawn with Zipf weights from ``distinct_user_agents()``."""
    population = distinct_user_agents()
    weights = list(itertools.accumulate(rank**-skew for rank in range(1, len(population) + 1)))
    return random.Random(seed).choices(population, cum_weights=weights, k=count)
