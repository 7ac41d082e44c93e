"""
The actor runtime: one `Actor` per process, linked to others by `Peer`s.

Every actor listens on an address of its own, and every connection -
accepted or dialled - is symmetric: after a ``hello`` exchange either
side may call functions in the other (`Peer.call()`), while `Peer.serve()`
answers what the other side asks. A `Portal` is the user's handle on a
connection.

The root actor (`open_root_actor()`) listens on the registry address and
keeps the `Registrar`; child actors run `child_main()`, register
themselves there, say hello to their parent and live until the parent
sends ``cancel`` or hangs up.

"""
from collections import defaultdict
from contextlib import asynccontextmanager, suppress
import importlib
import importlib.util
import inspect
import itertools
import logging
import os
import sys
import traceback
from types import ModuleType
from typing import Any, AsyncIterator, Callable

import trio

from . import ipc
from ._exceptions import NoRuntime, RemoteActorError, TransportClosed
from ._spawn import check_start_method
from ._stackdump import install_stack_dumper
from .discovery._addr import (
    Address,
    actor_bind_addr,
    check_proto,
    default_registry_addr,
    parse_maddr,
)
from .discovery._registry import Registrar
from .msg import MsgError

log = logging.getLogger('sample_actors')

HANDSHAKE_TIMEOUT = 5.0
# functions defined in a script (module `__main__`) are loaded into a
# child under this name, so the script's `if __name__ == '__main__'`
# block doesn't run again there (the trick multiprocessing also uses)
_MAIN_ALIAS = '__sample_main__'

_current: 'Actor | None' = None


def current_actor() -> 'Actor':
    if _current is None:
        raise NoRuntime('no actor runtime here: enter `open_root_actor()` first')
    return _current


def enable_logging(level: str, actor_name: str) -> None:
    '''Set the runtime's log level, adding a stderr handler unless logging
    is already set up (as it is under pytest).'''
    logger = logging.getLogger('sample_actors')
    logger.setLevel(level.upper())
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            f'%(asctime)s [{actor_name}@{os.getpid()}] %(levelname)s: %(message)s'
        ))
        logger.addHandler(handler)


@asynccontextmanager
async def open_collapsing_nursery() -> AsyncIterator[trio.Nursery]:
    '''A trio nursery whose lone error escapes bare, not inside an
    ExceptionGroup (so a test fails with e.g. a plain `TooSlowError`).'''
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            exc = group.exceptions[0]
            raise exc from exc.__cause__
        raise


def _load_module(ns: str, path: str | None) -> ModuleType:
    '''Import module `ns`, from the file the caller found it in if given.'''
    name = _MAIN_ALIAS if ns == '__main__' else ns
    if name in sys.modules:
        return sys.modules[name]
    if path is None:
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f'cannot load module {ns!r} from {path}')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class Peer:
    '''One live connection to another actor (named `name`, pid `pid`).'''

    def __init__(self, actor: 'Actor', chan: ipc.Channel, hello: dict) -> None:
        self.actor = actor
        self.chan = chan
        self.name: str = hello['name']
        self.pid: int = hello['pid']
        self.is_child: bool = hello['child']  # the other side is our child
        self.closed = trio.Event()
        self._cids = itertools.count()
        self._waiting: dict[int, trio.MemorySendChannel] = {}  # cid -> reply slot

    async def call(
        self, ns: str, func: str, kwargs: dict[str, Any], path: str | None = None,
    ) -> Any:
        '''Run `ns.func(**kwargs)` over there and return its result.'''
        if self.closed.is_set():
            raise TransportClosed(f'connection to {self.name!r} is closed')
        cid = next(self._cids)
        slot, replies = trio.open_memory_channel(1)
        self._waiting[cid] = slot
        try:
            await self.chan.send({
                'type': 'call', 'cid': cid, 'ns': ns, 'func': func,
                'kwargs': kwargs, 'path': path,
            })
            reply = await replies.receive()
        except trio.EndOfChannel:
            raise TransportClosed(
                f'{self.name!r} hung up before {ns}.{func}() returned'
            ) from None
        finally:
            del self._waiting[cid]
        if reply['type'] == 'error':
            raise RemoteActorError(
                reply['etype'], reply['text'], reply['tb'], reply['src'],
            )
        return reply['value']

    async def serve(self) -> None:
        '''Handle incoming messages until the connection closes.'''
        try:
            async with trio.open_nursery() as calls:
                while (msg := await self._recv()) is not None:
                    match msg['type']:
                        case 'call':
                            calls.start_soon(self._answer, msg)
                        case 'cancel':
                            log.info(f'{self.actor.name}: cancelled by {self.name!r}')
                            self.actor.cancel()
                        case 'return' | 'error':
                            if (slot := self._waiting.get(msg['cid'])) is not None:
                                slot.send_nowait(msg)
                        case _:
                            log.warning(f'unexpected {msg["type"]!r} from {self.name!r}')
                calls.cancel_scope.cancel()  # the caller is gone: drop its calls
        finally:
            self.closed.set()
            for slot in self._waiting.values():
                slot.close()  # wakes pending `call()`s with TransportClosed

    async def aclose(self) -> None:
        await self.chan.aclose()

    async def _recv(self) -> dict | None:
        try:
            return await self.chan.recv()
        except MsgError as err:
            log.error(f'garbage from {self.name!r}, hanging up: {err}')
            return None

    async def _answer(self, msg: dict) -> None:
        cid = msg['cid']
        try:
            fn = self.actor.resolve(msg['ns'], msg['func'], msg.get('path'))
            value = fn(**msg['kwargs'])
            if inspect.isawaitable(value):
                value = await value
            reply = {'type': 'return', 'cid': cid, 'value': value}
        except Exception as err:
            reply = self._error_reply(cid, err)
        try:
            try:
                await self.chan.send(reply)
            except (TypeError, ValueError) as err:  # the result isn't JSON-able
                await self.chan.send(self._error_reply(cid, err))
        except TransportClosed:
            log.debug(f'{self.name!r} left before call {cid} finished')

    def _error_reply(self, cid: int, err: Exception) -> dict:
        return {
            'type': 'error', 'cid': cid, 'etype': type(err).__qualname__,
            'text': str(err), 'tb': ''.join(traceback.format_exception(err)),
            'src': self.actor.name,
        }


class Portal:
    '''A handle for calling functions in, and cancelling, another actor.'''

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    @property
    def name(self) -> str:
        return self.peer.name

    @property
    def pid(self) -> int:
        return self.peer.pid

    async def run(self, fn: Callable, **kwargs: Any) -> Any:
        '''
        Call module-level function `fn(**kwargs)` (sync or async) in the
        other actor and return its result. Arguments and result travel
        as JSON; an exception comes back as `RemoteActorError`.

        '''
        module = sys.modules.get(fn.__module__)
        if getattr(module, fn.__qualname__, None) is not fn:
            raise TypeError(f'{fn!r} is not a module-level function')
        path = getattr(module, '__file__', None)
        return await self.peer.call(fn.__module__, fn.__qualname__, kwargs, path)

    async def run_from_ns(self, ns: str, func: str, **kwargs: Any) -> Any:
        '''Call `func` by name in namespace `ns` (e.g. ``"registry"``).'''
        return await self.peer.call(ns, func, kwargs)

    async def cancel_actor(self, timeout: float = 3.0) -> bool:
        '''Tell the actor to exit; True once it hung up within `timeout`.'''
        if not self.peer.closed.is_set():
            with suppress(TransportClosed):
                await self.peer.chan.send({'type': 'cancel'})
        with trio.move_on_after(timeout):
            await self.peer.closed.wait()
        return self.peer.closed.is_set()

    async def aclose(self) -> None:
        '''Hang up; a child whose parent hangs up exits.'''
        await self.peer.aclose()


class Actor:
    '''The runtime state of this process's actor.'''

    def __init__(
        self, name: str, *, registry_addr: Address, start_method: str,
        loglevel: str | None, registrar: Registrar | None = None,
    ) -> None:
        self.name = name
        self.pid = os.getpid()
        self.registry_addr = registry_addr
        self.start_method = start_method
        self.loglevel = loglevel
        self.registrar = registrar  # set in the root only
        self.registry_peer: Peer | None = None  # set in children only
        self.parent_peer: Peer | None = None  # set in children only
        self.addr: Address | None = None  # where we listen, once we do
        self._nursery: trio.Nursery | None = None
        self._scope = trio.CancelScope()  # cancelled by `cancel()`
        self._arrival: defaultdict[int, trio.Event] = defaultdict(trio.Event)
        self._arrived: dict[int, Peer] = {}  # child pid -> its connection

    def cancel(self) -> None:
        '''Shut this actor down (its main task unwinds and exits).'''
        self._scope.cancel()

    def resolve(self, ns: str, func: str, path: str | None) -> Callable:
        '''The function a ``call`` message names.'''
        if ns == 'registry':
            if self.registrar is None or func.startswith('_'):
                raise LookupError(f'{self.name!r} has no registry function {func!r}')
            return getattr(self.registrar, func)
        return getattr(_load_module(ns, path), func)

    async def ask_registry(self, func: str, **kwargs: Any) -> Any:
        if self.registrar is not None:
            return getattr(self.registrar, func)(**kwargs)
        assert self.registry_peer is not None
        return await self.registry_peer.call('registry', func, kwargs)

    async def connect(self, addr: Address, *, as_child: bool = False) -> Peer:
        '''Dial another actor; `as_child` marks the link to our parent,
        whose loss makes us exit.'''
        chan = await ipc.connect(addr)
        try:
            peer = await self._handshake(chan, as_child)
        except BaseException:
            await chan.aclose()
            raise
        assert self._nursery is not None
        self._nursery.start_soon(self._serve_peer, peer, as_child)
        return peer

    async def wait_for_child(self, pid: int) -> Peer:
        '''The connection of our child process `pid`, once it said hello.'''
        try:
            await self._arrival[pid].wait()
        finally:
            self._arrival.pop(pid, None)
        return self._arrived.pop(pid)

    async def _start(self, nursery: trio.Nursery, bind_addr: Address) -> None:
        listener = await ipc.open_listener(bind_addr)
        self.addr = listener.addr
        self._nursery = nursery
        nursery.start_soon(self._listen, listener)

    async def _listen(self, listener: ipc.Listener) -> None:
        async with listener, trio.open_nursery() as conns:
            while True:
                conns.start_soon(self._handle, await listener.accept())

    async def _handle(self, chan: ipc.Channel) -> None:
        async with chan:
            try:
                peer = await self._handshake(chan, as_child=False)
            except (TransportClosed, MsgError, trio.TooSlowError) as err:
                log.warning(f'{self.name}: dropped a connection without hello: {err!r}')
                return
            if peer.is_child:
                self._arrived[peer.pid] = peer
                self._arrival[peer.pid].set()
            await peer.serve()

    async def _handshake(self, chan: ipc.Channel, as_child: bool) -> Peer:
        await chan.send({
            'type': 'hello', 'name': self.name, 'pid': self.pid, 'child': as_child,
        })
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            hello = await chan.recv()
        if hello is None or hello['type'] != 'hello':
            raise TransportClosed(f'expected hello, got {hello!r:.100}')
        return Peer(self, chan, hello)

    async def _serve_peer(self, peer: Peer, is_parent: bool) -> None:
        try:
            async with peer.chan:
                await peer.serve()
        finally:
            if is_parent and not self._scope.cancel_called:
                log.info(f'{self.name}: parent {peer.name!r} hung up, exiting')
                self.cancel()


@asynccontextmanager
async def open_root_actor(
    *,
    registry_addr: Address | str | None = None,
    tpt_proto: str | None = None,
    start_method: str = 'trio',
    loglevel: str | None = None,
    name: str = 'root',
) -> AsyncIterator[Actor]:
    '''
    Run the root actor in this trio program: it binds the registry
    address (`default_registry_addr(tpt_proto)` unless given) and serves
    the registry there; children spawn with `start_method`.

    '''
    global _current
    if _current is not None:
        raise RuntimeError(f'actor {_current.name!r} already runs in this process')
    if isinstance(registry_addr, str):
        registry_addr = parse_maddr(registry_addr)
    if registry_addr is None:
        registry_addr = default_registry_addr(check_proto(tpt_proto or 'tcp'))
    elif tpt_proto not in (None, registry_addr.proto_key):
        raise ValueError(f'{tpt_proto=} but the registry address is {registry_addr}')
    check_start_method(start_method)
    install_stack_dumper()
    if loglevel:
        enable_logging(loglevel, name)

    actor = Actor(
        name, registry_addr=registry_addr, start_method=start_method,
        loglevel=loglevel, registrar=Registrar(),
    )
    async with open_collapsing_nursery() as nursery:
        await actor._start(nursery, registry_addr)
        actor.registrar.register(name, actor.addr.maddr())
        log.info(f'root actor {name!r} serving the registry at {actor.addr.maddr()}')
        _current = actor
        try:
            with actor._scope:
                yield actor
        finally:
            _current = None
            nursery.cancel_scope.cancel()


async def child_main(
    name: str,
    parent_addr: Address,
    registry_addr: Address,
    start_method: str,
    loglevel: str | None,
) -> None:
    '''The life of a child actor, from registration to cancellation.'''
    global _current
    actor = Actor(
        name, registry_addr=registry_addr, start_method=start_method,
        loglevel=loglevel,
    )
    async with open_collapsing_nursery() as nursery:
        await actor._start(nursery, actor_bind_addr(parent_addr.proto_key, name))
        actor.registry_peer = await actor.connect(registry_addr)
        await actor.ask_registry('register', name=name, maddr=actor.addr.maddr())
        _current = actor
        try:
            with actor._scope:
                actor.parent_peer = await actor.connect(parent_addr, as_child=True)
                await trio.sleep_forever()
        finally:
            _current = None
            with trio.move_on_after(1, shield=True), suppress(TransportClosed):
                await actor.ask_registry(
                    'unregister', name=name, maddr=actor.addr.maddr(),
                )
            nursery.cancel_scope.cancel()
