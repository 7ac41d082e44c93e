"""
Addresses and their multiaddr strings.

"""
import os

import pytest

from sample_actors import TCPAddress, UDSAddress, default_registry_addr, parse_maddr
from sample_actors.discovery._addr import actor_bind_addr, bindspace


@pytest.mark.parametrize('addr, maddr', [
    (TCPAddress('127.0.0.1', 1616), '/ip4/127.0.0.1/tcp/1616'),
    (TCPAddress('::1', 80), '/ip6/::1/tcp/80'),
    (UDSAddress('/run/user/1000/sample-actors/doggy@42.sock'),
     '/unix/run/user/1000/sample-actors/doggy@42.sock'),
], ids=['tcp4', 'tcp6', 'uds'])
def test_maddr_roundtrip(addr, maddr):
    assert addr.maddr() == maddr
    assert parse_maddr(maddr) == addr


def test_unsupported_maddrs():
    for maddr in ('/ip4/127.0.0.1/udp/53', '/dns/host/tcp/1', 'tcp://x:1'):
        with pytest.raises(ValueError, match='unsupported'):
            parse_maddr(maddr)


def test_default_registry_addr_follows_env(monkeypatch):
    monkeypatch.setenv('SAMPLE_ACTORS_REGISTRY_PORT', '4242')
    assert default_registry_addr('tcp') == TCPAddress('127.0.0.1', 4242)
    assert default_registry_addr('uds') == UDSAddress(
        os.path.join(bindspace(), 'registry@4242.sock')
    )
    with pytest.raises(ValueError, match='unknown transport'):
        default_registry_addr('quic')


def test_actor_bind_addrs():
    assert actor_bind_addr('tcp', 'doggy') == TCPAddress('127.0.0.1', 0)
    uds = actor_bind_addr('uds', 'doggy')
    assert os.path.basename(uds.path) == f'doggy@{os.getpid()}.sock'
