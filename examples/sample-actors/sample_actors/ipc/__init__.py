"""
Inter-actor connections over TCP or Unix-domain sockets.

"""
from ._chan import Channel as Channel
from ._transport import (
    Listener as Listener,
    clear_stale_socket as clear_stale_socket,
    connect as connect,
    open_listener as open_listener,
)
