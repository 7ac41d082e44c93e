"""
sample_actors: a tiny multi-process actor runtime built on trio.

::

    async with open_root_actor(registry_addr=...) as root:
        async with open_nursery() as an:
            portal = await an.start_actor('doggy')
            assert await portal.run(some_module_level_fn, x=1) == ...
            await portal.cancel_actor()

"""
from ._exceptions import (
    ActorStartError as ActorStartError,
    NoRuntime as NoRuntime,
    RemoteActorError as RemoteActorError,
    TransportClosed as TransportClosed,
)
from ._runtime import (
    Actor as Actor,
    Portal as Portal,
    current_actor as current_actor,
    open_root_actor as open_root_actor,
)
from ._spawn import SPAWN_METHODS as SPAWN_METHODS
from ._stackdump import install_stack_dumper as install_stack_dumper
from ._supervise import (
    ActorNursery as ActorNursery,
    open_nursery as open_nursery,
)
from .discovery._addr import (
    TCPAddress as TCPAddress,
    UDSAddress as UDSAddress,
    default_registry_addr as default_registry_addr,
    parse_maddr as parse_maddr,
)
from .discovery._api import (
    find_actor as find_actor,
    list_actors as list_actors,
    query_actor as query_actor,
    register_actor as register_actor,
    unregister_actor as unregister_actor,
)
