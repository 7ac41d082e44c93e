"""
The registry table: which actor name listens at which address.

The root actor owns one `Registrar`; other actors reach its public
methods as RPC calls in the ``"registry"`` namespace.

"""


class Registrar:
    '''Maps actor names to their listening addresses (multiaddr strings).'''

    def __init__(self) -> None:
        self._table: dict[str, str] = {}

    def register(self, name: str, maddr: str) -> None:
        self._table[name] = maddr

    def unregister(self, name: str, maddr: str | None = None) -> bool:
        '''Forget `name` (only if it still points at `maddr`, when given).'''
        if name in self._table and maddr in (None, self._table[name]):
            del self._table[name]
            return True
        return False

    def find(self, name: str) -> str | None:
        return self._table.get(name)

    def names(self) -> dict[str, str]:
        return dict(self._table)
