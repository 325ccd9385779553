"""meshnode-wg against Debian's wireguard-go and against itself, in network
namespaces, configured with the real wg: pings over IPv4 and IPv6 both ways."""

import pytest
from netns import netns_lab  # noqa: F401  (the fixture)
from wgpair import make_pair

PAIRS = [("meshnode", "wireguard-go"), ("wireguard-go", "meshnode"), ("meshnode", "meshnode")]


@pytest.mark.parametrize("psk", [False, True], ids=["no-psk", "psk"])
@pytest.mark.parametrize(("initiator", "responder"), PAIRS, ids=lambda x: x)
def test_ping_both_ways(netns_lab, initiator: str, responder: str, psk: bool) -> None:  # noqa: F811
    pair = make_pair(netns_lab, initiator, responder, psk=psk, only_left_knows_endpoint=True)
    pair.ping_all()
    # the responder learned the initiator's endpoint from its packets
    endpoints = pair.right.wg("show", pair.right.ifname, "endpoints")
    assert f"{pair.left.underlay4}:51820" in endpoints
