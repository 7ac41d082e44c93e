"""
`Channel`: a message-level wrapper around one trio socket stream.

"""
from typing import Any

import trio

from .._exceptions import TransportClosed
from ..msg import FrameDecoder, encode


class Channel:
    '''Send and receive whole messages; safe for many concurrent senders.'''

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._decoder = FrameDecoder()
        self._send_lock = trio.StrictFIFOLock()

    async def send(self, msg: dict[str, Any]) -> None:
        data = encode(msg)  # raises before any byte is sent
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
                raise TransportClosed(f'cannot send: {err!r}') from err

    async def recv(self) -> dict[str, Any] | None:
        '''The next message; None once the peer hung up (or we closed).'''
        while (msg := self._decoder.next_msg()) is None:
            try:
                data = await self._stream.receive_some(64 * 1024)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            self._decoder.feed(data)
        return msg

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> 'Channel':
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
