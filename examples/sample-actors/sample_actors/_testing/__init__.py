"""
Helpers for testing with sample_actors (see `.pytest` for the plugin).

"""
from functools import wraps
import inspect
import os
import socket
from typing import Any, Callable

import trio

from .._runtime import open_root_actor
from ..discovery._addr import Address, TCPAddress, UDSAddress, bindspace, registry_port

# fixtures every `@sample_test` receives, requested or not
_RUNTIME_FIXTURES = ('reg_addr', 'tpt_proto', 'start_method', 'loglevel')


def free_port() -> int:
    '''A currently free TCP port on 127.0.0.1, never the default registry's.'''
    while True:
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        if port != registry_port():
            return port


def rando_addr(tpt_proto: str) -> Address:
    '''A fresh registry address, clear of the default one and of other
    runs: a free port, or ``registry@<free port>.sock`` in the bindspace.'''
    if tpt_proto == 'tcp':
        return TCPAddress('127.0.0.1', free_port())
    return UDSAddress(os.path.join(bindspace(), f'registry@{free_port()}.sock'))


def sample_test(
    fn: Callable | None = None, *, timeout: float = 30,
) -> Callable:
    '''
    Turn an async test into a sync one which runs it under `trio.run()`
    inside `open_root_actor()`, configured from the session's fixtures
    (``reg_addr``, ``tpt_proto``, ``start_method``, ``loglevel``). The
    test may declare those fixtures, and any others, as parameters.
    Usable bare or as ``@sample_test(timeout=...)``.

    '''
    if fn is None:
        return lambda fn: sample_test(fn, timeout=timeout)
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f'{fn.__name__} must be an async function')
    sig = inspect.signature(fn)
    declared = set(sig.parameters)

    @wraps(fn)
    def wrapper(**fixtures: Any) -> None:
        async def main() -> None:
            with trio.fail_after(timeout):
                async with open_root_actor(
                    registry_addr=fixtures['reg_addr'],
                    tpt_proto=fixtures['tpt_proto'],
                    start_method=fixtures['start_method'],
                    loglevel=fixtures['loglevel'],
                ):
                    await fn(**{k: v for k, v in fixtures.items() if k in declared})
        trio.run(main)

    # tell pytest to inject the runtime fixtures too
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY)
        for name in _RUNTIME_FIXTURES if name not in declared
    ]
    wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[*sig.parameters.values(), *extra],
    )
    return wrapper
