"""
The wire format: JSON messages framed by a 4-byte length prefix.

"""
from ._codec import (
    MAX_FRAME as MAX_FRAME,
    FrameDecoder as FrameDecoder,
    MsgError as MsgError,
    encode as encode,
)
