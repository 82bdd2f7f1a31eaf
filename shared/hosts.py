"""Host names as hitstream compares them: one normal form for site domains and referrers.

A pageview's site is found by exact match of its URL host against configured site domains
(no subdomain matching), so the operator's ``sites add`` input, the API's URL host and a
referrer host must all reach the same form: lowercase, no port, no trailing dot, one leading
``www.`` removed, non-ASCII labels IDNA-encoded (UTS-46), IP literals in compressed form.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import idna

_MAX_DOMAIN_LENGTH = 253
# ASCII labels: letters, digits, hyphens, and underscores (which browsers accept in hosts).
_ASCII_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def normalise_domain(host: str) -> str:
    """The normal form of a host, ``host:port``, ``[v6]:port`` or URL; ValueError if invalid.

    >>> normalise_domain("https://WWW.Example.com:8443/")
    'example.com'
    """
    text = host.strip()
    if not text:
        raise ValueError("domain is empty")
    try:
        name = _host_part(text)
        if not name:
            raise ValueError("no host name")
        try:
            return ipaddress.ip_address(name).compressed
        except ValueError:
            return _domain_name(name)
    except ValueError as error:
        raise ValueError(f"invalid domain {host!r}: {error}") from None


def referrer_host(referrer: str) -> str:
    """The normalised host of a referrer URL (as ``normalise_domain``); "" when it has none."""
    try:
        netloc = urlsplit(referrer.strip()).netloc
        return normalise_domain(netloc) if netloc else ""
    except ValueError:
        return ""


def _host_part(text: str) -> str:
    """The host inside a URL-ish string: no scheme, user info, path, query or port."""
    netloc = urlsplit(text).netloc if "://" in text else re.split(r"[/?#]", text, maxsplit=1)[0]
    netloc = netloc.rpartition("@")[2]
    if netloc.startswith("["):
        literal, bracket, port = netloc[1:].partition("]")
        if not bracket or not _is_port(port):
            raise ValueError("malformed [IPv6] literal")
        return literal
    if netloc.count(":") == 1:  # more than one colon: a bare IPv6 literal without a port
        name, _, port = netloc.partition(":")
        if not _is_port(":" + port):
            raise ValueError("port must be a number")
        return name
    return netloc


def _is_port(suffix: str) -> bool:
    return suffix == "" or (suffix.startswith(":") and suffix[1:].isdigit())


def _domain_name(name: str) -> str:
    # UTS-46 mapping lowercases and folds look-alikes (full-width dots, letters) first, so
    # the trailing-dot and www. rules see the same text the browser would.
    mapped = name.lower() if name.isascii() else idna.uts46_remap(name, std3_rules=False)
    mapped = mapped.removesuffix(".")
    mapped = mapped.removeprefix("www.")
    labels = [_ascii_label(label) for label in mapped.split(".")]
    domain = ".".join(labels)
    if len(domain) > _MAX_DOMAIN_LENGTH:
        raise ValueError(f"longer than {_MAX_DOMAIN_LENGTH} characters")
    return domain


def _ascii_label(label: str) -> str:
    if not label:
        raise ValueError("empty label")
    if not label.isascii():
        return idna.alabel(label).decode("ascii")
    if not _ASCII_LABEL.fullmatch(label):
        raise ValueError(f"label {label!r} must be 1-63 letters, digits, '-' or '_', not starting or ending with '-'")
    if label.startswith("xn--"):
        idna.ulabel(label)  # rejects malformed punycode with a clear IDNAError
    return label
