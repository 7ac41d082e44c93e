"""
The wire format: length-prefixed JSON frames.

"""
import json

import pytest

from sample_actors.msg import MAX_FRAME, FrameDecoder, MsgError, encode

CALL = {'type': 'call', 'cid': 3, 'ns': 'mod', 'func': 'f', 'kwargs': {'x': [1, 2]}}


def decode_all(data: bytes) -> list[dict]:
    decoder = FrameDecoder()
    decoder.feed(data)
    msgs = []
    while (msg := decoder.next_msg()) is not None:
        msgs.append(msg)
    return msgs


def test_roundtrip_several_frames():
    hello = {'type': 'hello', 'name': 'doggy', 'pid': 42, 'child': True}
    assert decode_all(encode(CALL) + encode(hello)) == [CALL, hello]


def test_frames_split_anywhere():
    decoder = FrameDecoder()
    data = encode(CALL)
    for i in range(len(data) - 1):
        decoder.feed(data[i:i + 1])
        assert decoder.next_msg() is None
    decoder.feed(data[-1:])
    assert decoder.next_msg() == CALL


def test_unencodable():
    with pytest.raises(TypeError):
        encode({'type': 'return', 'cid': 1, 'value': object()})


def test_invalid_messages():
    for bad in ({'no': 'type'}, {'type': 'shout'}, {'type': 'call', 'cid': 1}, [1]):
        body = json.dumps(bad).encode()
        with pytest.raises(MsgError):
            decode_all(len(body).to_bytes(4, 'big') + body)


def test_garbage_and_oversize_frames():
    with pytest.raises(MsgError, match='undecodable'):
        decode_all(b'\x00\x00\x00\x03{{{')
    with pytest.raises(MsgError, match='exceeds'):
        decode_all((MAX_FRAME + 1).to_bytes(4, 'big'))

