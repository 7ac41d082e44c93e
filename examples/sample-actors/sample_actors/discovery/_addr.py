"""
Transport addresses and their "multiaddr"-style string form.

A `TCPAddress` prints as ``/ip4/127.0.0.1/tcp/1616`` (or ``/ip6/...``),
a `UDSAddress` as ``/unix/<absolute socket path>``; that string is what
travels in messages and on child command lines.

UDS sockets live in the *bindspace*, ``$XDG_RUNTIME_DIR/sample-actors/``
on Linux: the registry binds ``registry@<port>.sock`` there and every
other actor ``<name>@<pid>.sock``.

"""
from dataclasses import dataclass
import os
from typing import ClassVar

import platformdirs

TPT_PROTOS = ('tcp', 'uds')
# tractor's fixed port is 1616; the sample keeps ten ports away from it so that
# running the sample never fights a real tractor registry on the same host
_DEFAULT_PORT = 1626


@dataclass(frozen=True)
class TCPAddress:
    host: str
    port: int
    proto_key: ClassVar[str] = 'tcp'

    def maddr(self) -> str:
        family = 'ip6' if ':' in self.host else 'ip4'
        return f'/{family}/{self.host}/tcp/{self.port}'


@dataclass(frozen=True)
class UDSAddress:
    path: str
    proto_key: ClassVar[str] = 'uds'

    def maddr(self) -> str:
        return f'/unix{self.path}'


Address = TCPAddress | UDSAddress


def parse_maddr(maddr: str) -> Address:
    '''The inverse of `Address.maddr()`.'''
    if maddr.startswith('/unix/'):
        return UDSAddress(maddr.removeprefix('/unix'))
    match maddr.split('/'):
        case ['', 'ip4' | 'ip6', host, 'tcp', port] if port.isdigit():
            return TCPAddress(host, int(port))
    raise ValueError(f'unsupported address {maddr!r}')


def check_proto(tpt_proto: str) -> str:
    if tpt_proto not in TPT_PROTOS:
        raise ValueError(
            f'unknown transport {tpt_proto!r}, choose one of {TPT_PROTOS}'
        )
    return tpt_proto


def bindspace() -> str:
    '''The private directory UDS sockets are bound in (created 0o700).'''
    path = platformdirs.user_runtime_dir('sample-actors')
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def registry_port() -> int:
    '''$SAMPLE_ACTORS_REGISTRY_PORT, else 1626 (the sample's fixed port).'''
    return int(os.environ.get('SAMPLE_ACTORS_REGISTRY_PORT', _DEFAULT_PORT))


def default_registry_addr(tpt_proto: str = 'tcp') -> Address:
    '''Where the registry listens unless told otherwise.'''
    port = registry_port()
    if check_proto(tpt_proto) == 'tcp':
        return TCPAddress('127.0.0.1', port)
    return UDSAddress(os.path.join(bindspace(), f'registry@{port}.sock'))


def actor_bind_addr(tpt_proto: str, name: str) -> Address:
    '''Where a (non-registry) actor named `name` listens.'''
    if check_proto(tpt_proto) == 'tcp':
        return TCPAddress('127.0.0.1', 0)  # any free port
    return UDSAddress(os.path.join(bindspace(), f'{name}@{os.getpid()}.sock'))
