"""The visitor IP taken out of a text (an error message) in every spelling it may have there,
before the text reaches a dead letter or a log line."""

from __future__ import annotations

import ipaddress

IP_PLACEHOLDER = "<visitor_ip>"


def without_ip(text: str, ip: object) -> str:
    """``text`` with each spelling of ``ip`` (as sent, compressed, and IPv6's exploded form)
    replaced by IP_PLACEHOLDER. ``ip`` is whatever an envelope held: not a non-empty string,
    nothing to take out."""
    if not isinstance(ip, str) or not ip:
        return text
    spellings = {ip}
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        pass  # a malformed IP (a poison envelope) is taken out as sent
    else:
        spellings.update((address.compressed, address.exploded))
    for spelling in sorted(spellings, key=len, reverse=True):  # a longer spelling first
        text = text.replace(spelling, IP_PLACEHOLDER)
    return text
