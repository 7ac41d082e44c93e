"""The footprint of one test: the data type, below both footprints.py (recording,
attribution, selection) and history.py (its storage), so neither imports the other's
module for it."""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field


@dataclass
class Footprint:
    """One test's: {(file, qualname): (first line, [where])}, the files it touched, and
    the processes of its time that nothing could record."""
    funcs: dict[tuple[str, str], tuple[int, list[str]]] = field(default_factory=dict)
    blind: list[str] = field(default_factory=list)

    @property
    def files(self) -> set[str]:
        return {f for f, _ in self.funcs}

    def add(self, file: str, qual: str, line: int, where: str) -> None:
        key = (file, qual)
        got = self.funcs.get(key)
        if got is None:
            self.funcs[key] = (line, [where])
        elif where not in got[1] and len(got[1]) < 3:
            got[1].append(where)

    def to_blob(self) -> bytes:
        doc = {"funcs": [[f, q, ln, w] for (f, q), (ln, w) in sorted(self.funcs.items())],
               "blind": self.blind}
        return zlib.compress(json.dumps(doc).encode())

    @classmethod
    def from_blob(cls, blob: bytes) -> Footprint:
        doc = json.loads(zlib.decompress(blob))
        fp = cls(blind=list(doc.get("blind", [])))
        for f, q, ln, w in doc.get("funcs", []):
            fp.funcs[(f, q)] = (ln, list(w))
        return fp

    def executed(self, file: str, qual: str) -> tuple[str, list[str]] | None:
        """The recorded code object that is `qual` or runs inside it (a nested function,
        a comprehension), with where it ran."""
        got = self.funcs.get((file, qual))
        if got is not None:
            return qual, got[1]
        by_file = self.__dict__.get("_by_file")
        if by_file is None or len(self.funcs) != self.__dict__.get("_indexed"):
            by_file = {}
            for f, q in sorted(self.funcs):
                by_file.setdefault(f, []).append(q)
            self.__dict__["_by_file"], self.__dict__["_indexed"] = by_file, len(self.funcs)
        for q in by_file.get(file, ()):
            if q.startswith(qual + "."):
                return q, self.funcs[(file, q)][1]
        return None
