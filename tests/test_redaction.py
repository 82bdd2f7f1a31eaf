"""``without_ip``, the one redactor of visitor IPs in error texts (pipeline failures and dead
letters): every spelling of the address goes, whatever else the text says stays."""

from __future__ import annotations

import pytest

from workers.redaction import IP_PLACEHOLDER, without_ip


@pytest.mark.parametrize(
    "ip, spelled",
    [
        ("81.2.69.160", "81.2.69.160"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:db8::1", "2001:0db8:0000:0000:0000:0000:0000:0001"),  # the exploded form
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),  # an exploded envelope, compressed text
        ("81.2.69.160.7", "81.2.69.160.7"),  # a malformed IP is taken out as sent
    ],
)
def test_every_spelling_of_the_ip_is_replaced_and_the_rest_kept(ip: str, spelled: str) -> None:
    text = f"ValueError: lookup of {spelled} failed, then {spelled} again"
    assert without_ip(text, ip) == f"ValueError: lookup of {IP_PLACEHOLDER} failed, then {IP_PLACEHOLDER} again"


@pytest.mark.parametrize("ip", [None, "", 42, ["81.2.69.160"]])
def test_without_an_ip_string_the_text_is_unchanged(ip: object) -> None:
    assert without_ip("lookup of 81.2.69.160 failed", ip) == "lookup of 81.2.69.160 failed"
