"""
Encode and decode actor messages.

Every message is a JSON object with a ``"type"`` key; on the wire it is
``<4-byte big-endian length><utf-8 JSON body>``. The message types and
their required fields are listed in `MSG_FIELDS`:

- ``hello``: the first message each side of a new connection sends.
- ``call``: run ``ns.func(**kwargs)`` in the receiving actor; ``path``
  (optional) is the file of module ``ns``, so the callee can load it.
- ``return`` / ``error``: the outcome of the call with the same ``cid``.
- ``cancel``: ask the receiving actor to shut down.

"""
import json
import struct
from typing import Any

_HEADER = struct.Struct('!I')
MAX_FRAME = 16 * 1024 * 1024

MSG_FIELDS: dict[str, frozenset[str]] = {
    'hello': frozenset({'name', 'pid', 'child'}),
    'call': frozenset({'cid', 'ns', 'func', 'kwargs'}),
    'return': frozenset({'cid', 'value'}),
    'error': frozenset({'cid', 'etype', 'text', 'tb', 'src'}),
    'cancel': frozenset(),
}


class MsgError(ValueError):
    '''A frame that is not a valid message.'''


def encode(msg: dict[str, Any]) -> bytes:
    '''
    Frame one message. Raises `TypeError`/`ValueError` (before anything
    could be sent) when it holds something JSON can't represent.

    '''
    body = json.dumps(msg, separators=(',', ':')).encode()
    if len(body) > MAX_FRAME:
        raise ValueError(f'message of {len(body)} bytes exceeds {MAX_FRAME}')
    return _HEADER.pack(len(body)) + body


def _validate(msg: Any) -> dict[str, Any]:
    if not isinstance(msg, dict) or msg.get('type') not in MSG_FIELDS:
        raise MsgError(f'not a known message: {msg!r:.200}')
    missing = MSG_FIELDS[msg['type']] - msg.keys()
    if missing:
        raise MsgError(f'{msg["type"]!r} message lacks {sorted(missing)}')
    return msg


class FrameDecoder:
    '''
    Incremental decoder: `feed()` it bytes as they arrive from a stream,
    then drain whole messages with `next_msg()`.

    '''
    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_msg(self) -> dict[str, Any] | None:
        '''The next complete message, or None if more bytes are needed.'''
        if len(self._buf) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buf)
        if size > MAX_FRAME:
            raise MsgError(f'frame of {size} bytes exceeds {MAX_FRAME}')
        end = _HEADER.size + size
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[_HEADER.size:end])
        del self._buf[:end]
        try:
            return _validate(json.loads(body))
        except json.JSONDecodeError as err:
            raise MsgError(f'undecodable frame: {err}') from None
