"""
Errors the runtime raises to its users.

"""


class NoRuntime(RuntimeError):
    '''An actor API was used outside `open_root_actor()` (or a child).'''


class TransportClosed(ConnectionError):
    '''The connection to another actor went away.'''


class ActorStartError(RuntimeError):
    '''A child process died before it connected back to its parent.'''


class RemoteActorError(Exception):
    '''
    An exception raised by a function another actor ran for us; the
    original type name and traceback text travel along.

    '''
    def __init__(self, etype: str, text: str, tb: str, src: str) -> None:
        self.etype = etype
        self.text = text
        self.tb = tb
        self.src = src
        super().__init__(
            f'{etype}: {text}\n'
            f'(raised in actor {src!r}; remote traceback follows)\n{tb}'
        )
