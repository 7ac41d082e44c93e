"""
Listeners and channels, on the session's transport (``--tpt-proto``).

"""
import errno
import os
import socket

import pytest
import trio

from sample_actors import ipc
from sample_actors.discovery._addr import actor_bind_addr


async def echo_once(listener: ipc.Listener) -> None:
    async with await listener.accept() as chan:
        while (msg := await chan.recv()) is not None:
            await chan.send(msg)


def test_roundtrip_and_eof(tpt_proto):
    async def main():
        async with await ipc.open_listener(actor_bind_addr(tpt_proto, 'echo')) as listener:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo_once, listener)
                chan = await ipc.connect(listener.addr)
                big = {'type': 'return', 'cid': 1, 'value': 'x' * 1_000_000}
                for msg in ({'type': 'cancel'}, big):
                    await chan.send(msg)
                    assert await chan.recv() == msg
                await chan.aclose()
                assert await chan.recv() is None  # closed locally reads as EOF

    trio.run(main)


def test_tcp_port_zero_is_resolved():
    async def main():
        async with await ipc.open_listener(actor_bind_addr('tcp', 'anyport')) as listener:
            assert listener.addr.port != 0

    trio.run(main)


def test_address_in_use(tpt_proto):
    async def main():
        async with await ipc.open_listener(actor_bind_addr(tpt_proto, 'first')) as listener:
            with pytest.raises(OSError) as err:
                await ipc.open_listener(listener.addr)
            assert err.value.errno == errno.EADDRINUSE

    trio.run(main)


def test_uds_socket_file_lifecycle():
    '''A UDS listener replaces a stale socket file, and removes its own.'''
    addr = actor_bind_addr('uds', 'stale')
    with socket.socket(socket.AF_UNIX) as crashed:  # bound, never cleaned up
        crashed.bind(addr.path)
    assert os.path.exists(addr.path)

    async def main():
        async with await ipc.open_listener(addr):
            assert os.path.exists(addr.path)
        assert not os.path.exists(addr.path)

    trio.run(main)
    assert oct(os.stat(os.path.dirname(addr.path)).st_mode & 0o777) == '0o700'
