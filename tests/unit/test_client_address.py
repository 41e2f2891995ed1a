"""The client's address of a request (``services/api/http/client_address.py``): the peer's,
or from a trusted proxy the right-most untrusted ``X-Forwarded-For`` entry; the settings that
name the trusted proxies (the HAProxy front: tests/integration/api/test_trusted_proxies.py)."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from services.api.http.client_address import IPNetwork, client_address, parse_address
from services.api.settings import ApiSettings


def nets(*cidrs: str) -> list[IPNetwork]:
    return [ipaddress.ip_network(cidr) for cidr in cidrs]


FRONT = nets("127.0.0.1/32")


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("127.0.0.1", ["198.18.0.9"], []) == "127.0.0.1"
    assert client_address("127.0.0.1", [], []) == "127.0.0.1"
    assert client_address(None, ["198.18.0.9"], FRONT) is None


def test_a_spoofed_header_from_an_untrusted_peer_is_ignored() -> None:
    assert client_address("127.0.0.5", ["198.18.0.9"], FRONT) == "127.0.0.5"
    assert client_address("127.0.0.5", ["127.0.0.1, 198.18.0.9"], FRONT) == "127.0.0.5"


def test_from_a_trusted_proxy_the_right_most_untrusted_entry_is_the_client() -> None:
    assert client_address("127.0.0.1", ["198.18.0.9"], FRONT) == "198.18.0.9"
    # A client's forged entries are to the left of what the proxy appended.
    assert client_address("127.0.0.1", ["1.2.3.4, 198.18.0.9"], FRONT) == "198.18.0.9"
    # Each header line counts, in order (HAProxy adds a line of its own).
    assert client_address("127.0.0.1", ["1.2.3.4", "198.18.0.9"], FRONT) == "198.18.0.9"


def test_a_chain_of_trusted_proxies_is_walked_through() -> None:
    proxies = nets("127.0.0.1/32", "198.18.1.0/24")
    chain = ["203.0.113.7, 198.18.0.9, 198.18.1.4", "198.18.1.5"]
    assert client_address("127.0.0.1", chain, proxies) == "198.18.0.9"
    # Every entry trusted: the left-most, the farthest proxy's client side.
    assert client_address("127.0.0.1", ["198.18.1.4, 198.18.1.5"], proxies) == "198.18.1.4"
    # No header from a trusted proxy: the proxy itself.
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", [" , "], proxies) == "127.0.0.1"


def test_an_entry_that_is_no_address_stops_at_the_trusted_hop_after_it() -> None:
    proxies = nets("127.0.0.1/32", "198.18.1.0/24")
    assert client_address("127.0.0.1", ["unknown, 198.18.1.4"], proxies) == "198.18.1.4"
    assert client_address("127.0.0.1", ["198.18.0.9, 198.18.0.9:80"], proxies) == "127.0.0.1"


def test_ipv6_peers_entries_and_mapped_ipv4() -> None:
    proxies = nets("::1/128", "2001:db8:f::/48", "127.0.0.1/32")
    assert client_address("::1", ["2001:db8::7"], proxies) == "2001:db8::7"
    assert client_address("::1", ["[2001:db8::7], 2001:db8:f::2"], proxies) == "2001:db8::7"
    assert client_address("2001:db8::5", ["2001:db8::7"], proxies) == "2001:db8::5"
    # An IPv4 client of a dual-stack listener, and a mapped entry, are their IPv4 addresses.
    assert client_address("::ffff:127.0.0.1", ["198.18.0.9"], proxies) == "198.18.0.9"
    assert client_address("::1", ["::ffff:198.18.0.9"], proxies) == "198.18.0.9"
    # Written in any form, an address is counted in one.
    assert client_address("::1", ["2001:DB8:0::7"], proxies) == "2001:db8::7"
    assert parse_address("[::1]") == ipaddress.ip_address("::1")
    assert parse_address("::1]") is None


def test_the_setting_takes_a_json_list_of_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ApiSettings().trusted_proxies == []
    monkeypatch.setenv("FULCRUM_API_TRUSTED_PROXIES", '["127.0.0.1/32", "2001:db8::/32"]')
    assert ApiSettings().trusted_proxies == nets("127.0.0.1/32", "2001:db8::/32")


@pytest.mark.parametrize("value", ['["127.0.0.1/33"]', '["front"]', '["127.0.0.1/8"]', "x"])
def test_a_bad_trusted_proxy_setting_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FULCRUM_API_TRUSTED_PROXIES", value)
    with pytest.raises((ValidationError, ValueError)):
        ApiSettings()
