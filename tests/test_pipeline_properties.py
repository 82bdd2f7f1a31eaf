"""Property tests: URL, UTM and referrer parsing hold their rules on arbitrary text, and the
pipeline answers a row, a drop or StepFailed, never another exception."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import Settings
from shared.networks import IPAddress, IPNetwork, NetworkSet
from tests.envelopes import envelope
from workers.pipeline import Pipeline, StepFailed, build_pipeline
from workers.pipeline.geo import is_public
from workers.pipeline.url import UTM_KEYS, campaign_values, normalise_path
from workers.records import Drop, PageviewRow

# Text with the characters URL parsing treats specially, so examples hit the edge cases.
url_text = st.text(alphabet=st.sampled_from("/?#&=%+.:@[]ab1 \t\u00e9\u2603") | st.characters(), max_size=60)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return build_pipeline(Settings())


@given(url_text)
def test_normalised_path_is_rooted_and_has_no_empty_or_dot_segments(path: str) -> None:
    normalised = normalise_path(path)
    assert normalised.startswith("/")
    inner = normalised.strip("/")
    assert inner == "" or all(segment not in ("", ".", "..") for segment in inner.split("/"))
    assert normalise_path(normalised) == normalised


@given(st.sampled_from(UTM_KEYS), st.text(max_size=40), st.text(max_size=40))
def test_utm_value_round_trips_trimmed_first_value_wins(key: str, first: str, second: str) -> None:
    query = urlencode([("other", "x"), (key, first), (key, second)])
    assert campaign_values(query)[key] == (first.strip() or None)


@given(url_text)
def test_campaign_values_are_trimmed_and_never_empty(query: str) -> None:
    for value in campaign_values(query).values():
        assert value is None or (value and value == value.strip())


@settings(max_examples=150, deadline=None)
@given(url=url_text.map(lambda tail: "https://mysite.example/" + tail) | url_text, referrer=url_text)
def test_pipeline_answers_row_drop_or_step_failed_on_arbitrary_urls(
    pipeline: Pipeline, url: str, referrer: str
) -> None:
    try:
        result = pipeline.process(envelope(url=url, referrer=referrer))
    except StepFailed as failure:
        assert failure.step == "url"
        return
    assert isinstance(result, tuple | Drop)
    if isinstance(result, tuple):
        (row,) = result  # a browser's pageview: no crawler hit
        assert isinstance(row, PageviewRow)
        assert row.path.startswith("/")
        assert row.referrer_host == row.referrer_host.strip().lower()


networks = st.one_of(
    st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False), st.ip_addresses(v=4), st.integers(8, 32)),
    st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False), st.ip_addresses(v=6), st.integers(16, 128)),
)


@given(st.lists(networks, max_size=30), st.lists(st.ip_addresses(), max_size=20))
def test_network_set_agrees_with_a_linear_scan(members: list[IPNetwork], addresses: list[IPAddress]) -> None:
    network_set = NetworkSet(members)
    probes = [*addresses, *(n.network_address for n in members), *(n.broadcast_address for n in members)]
    for address in probes:
        expected = any(address.version == n.version and address in n for n in members)
        assert (address in network_set) == expected


@given(st.ip_addresses())
def test_public_means_not_private_loopback_or_link_local(address: IPAddress) -> None:
    assert is_public(address) == (not (address.is_private or address.is_loopback or address.is_link_local))
