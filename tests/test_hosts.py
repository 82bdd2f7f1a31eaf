"""Host normalisation: the operator's domain, the pageview URL host and referrers meet here."""

from __future__ import annotations

import pytest

from shared.hosts import normalise_domain, referrer_host
from shared.urls import redacted


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("www.example.com", "example.com"),
        ("www.www.example.com", "www.example.com"),  # only one www. goes
        ("shop.example.com", "shop.example.com"),  # no other subdomain is touched
        ("example.com:8443", "example.com"),
        ("example.com.", "example.com"),
        ("WWW.Example.com.:80", "example.com"),
        ("https://WWW.Example.com/", "example.com"),
        ("http://user:secret@example.com:8080/path?q=1#f", "example.com"),
        ("example.com/some/path", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("www.BÜCHER.de.", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("ｅｘａｍｐｌｅ。com", "example.com"),  # UTS-46 folds full-width letters and dots
        ("[2001:DB8::1]:8080", "2001:db8::1"),
        ("2001:db8:0:0::1", "2001:db8::1"),
        ("http://[::1]/", "::1"),
        ("192.0.2.7:80", "192.0.2.7"),
        ("localhost", "localhost"),
        ("_dmarc.example.com", "_dmarc.example.com"),
    ],
)
def test_normalise_domain(given: str, expected: str) -> None:
    assert normalise_domain(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "domain is empty"),
        ("   ", "domain is empty"),
        ("https://", "no host name"),
        ("example..com", "empty label"),
        ("-example.com", "'-example'"),
        ("exa mple.com", "'exa mple'"),
        ("example.com:http", "port must be a number"),
        ("[2001:db8::1", "IPv6"),
        ("xn--zz.com", "xn--zz"),
        ("a" * 64 + ".com", "1-63"),
        (".".join(["abcdefghi"] * 26), "253"),
    ],
)
def test_normalise_domain_rejects_invalid_hosts(given: str, message: str) -> None:
    with pytest.raises(ValueError, match="domain") as raised:
        normalise_domain(given)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        ("https://www.Google.com/search?q=x", "google.com"),
        ("http://news.example.org:8080/a", "news.example.org"),
        ("https://bücher.de/", "xn--bcher-kva.de"),
        ("android-app://com.google.android.gm/", "com.google.android.gm"),
        ("not a url", ""),
        ("", ""),
        ("http://[::1", ""),
        ("/relative/path", ""),
    ],
)
def test_referrer_host(referrer: str, expected: str) -> None:
    assert referrer_host(referrer) == expected


def test_redacted_urls_hide_the_password_and_keep_the_rest() -> None:
    assert redacted("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redacted("http://user:s3cret@[::1]:8123/db") == "http://user:***@[::1]:8123/db"
    assert redacted("chdb:///var/chdb") == "chdb:///var/chdb"
