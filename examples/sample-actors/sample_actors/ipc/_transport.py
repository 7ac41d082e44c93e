"""
Listening on and connecting to `Address`es.

UDS listeners unlink their socket file when closed; a leftover file
from a crashed process is replaced on bind, while a live one makes the
bind fail with EADDRINUSE just like a taken TCP port.

"""
from contextlib import suppress
import errno
import os
import socket

import trio

from ..discovery._addr import Address, TCPAddress, UDSAddress
from ._chan import Channel


def clear_stale_socket(path: str) -> None:
    '''Remove the socket file at `path` unless something listens on it.'''
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except FileNotFoundError:
            return
        except ConnectionRefusedError:
            os.unlink(path)  # nobody home: a leftover
            return
    raise OSError(errno.EADDRINUSE, f'{path} is in use')


class Listener:
    '''Accepts connections on `addr` (the bound address, real port).'''

    def __init__(self, sock: trio.socket.SocketType, addr: Address) -> None:
        self._listener = trio.SocketListener(sock)
        self.addr = addr
        # remember which inode we bound so we never unlink a successor's
        self._ino = os.stat(addr.path).st_ino if isinstance(addr, UDSAddress) else None

    async def accept(self) -> Channel:
        return Channel(await self._listener.accept())

    async def aclose(self) -> None:
        try:
            await self._listener.aclose()  # (its checkpoint may raise Cancelled)
        finally:
            if isinstance(self.addr, UDSAddress):
                with suppress(FileNotFoundError):
                    if os.stat(self.addr.path).st_ino == self._ino:
                        os.unlink(self.addr.path)

    async def __aenter__(self) -> 'Listener':
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def open_listener(addr: Address) -> Listener:
    if isinstance(addr, TCPAddress):
        family = socket.AF_INET6 if ':' in addr.host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        target: str | tuple[str, int] = (addr.host, addr.port)
    else:
        os.makedirs(os.path.dirname(addr.path), mode=0o700, exist_ok=True)
        clear_stale_socket(addr.path)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = addr.path
    try:
        await sock.bind(target)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    if isinstance(addr, TCPAddress):  # learn the real port when given 0
        addr = TCPAddress(addr.host, sock.getsockname()[1])
    return Listener(sock, addr)


async def connect(addr: Address) -> Channel:
    if isinstance(addr, TCPAddress):
        stream = await trio.open_tcp_stream(addr.host, addr.port)
    else:
        stream = await trio.open_unix_socket(addr.path)
    return Channel(stream)
