"""What a run left behind (processes, listeners, socket files, shared memory) and the
processes that ran away: counted by the supervisor, reported with the results."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Leaks:
    """What a run left when pytest exited, counted before teardown; and the processes
    that ran away (kept a core busy after the test that started them ended)."""
    processes: list[tuple[int, str]] = field(default_factory=list)   # (host pid, title)
    listeners: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    shm: list[tuple[str, int]] = field(default_factory=list)         # (segment, bytes)
    runaway: list[dict] = field(default_factory=list)   # pid, title, test, cpu, seconds

    def __bool__(self) -> bool:
        return bool(self.processes or self.listeners or self.sockets or self.shm
                    or self.runaway)

    def merge(self, other: Leaks) -> None:
        self.processes += other.processes
        self.listeners += other.listeners
        self.sockets += other.sockets
        self.shm += other.shm
        self.runaway += other.runaway

    def line(self, first: int = 3) -> str:
        parts = []
        if self.runaway:
            parts.append(f"{len(self.runaway)} RUNAWAY: " + ", ".join(
                runaway_text(r) for r in self.runaway[:first])
                + (f", ... (+{len(self.runaway) - first})" if len(self.runaway) > first
                   else ""))
        if self.processes:
            titles = [t for _, t in self.processes]
            more = f", ... (+{len(titles) - first})" if len(titles) > first else ""
            parts.append(f"{len(titles)} process(es): {', '.join(titles[:first])}{more}")
        if self.listeners:
            parts.append(f"{len(self.listeners)} listener(s): {', '.join(self.listeners[:first])}")
        if self.sockets:
            parts.append(f"{len(self.sockets)} socket file(s): "
                         f"{', '.join(Path(s).name for s in self.sockets[:first])}")
        if self.shm:
            more = f", ... (+{len(self.shm) - first})" if len(self.shm) > first else ""
            parts.append(f"{len(self.shm)} shared memory segment(s): " + ", ".join(
                f"{name} ({size} B)" for name, size in self.shm[:first]) + more)
        return "; ".join(parts)

    def count(self) -> int:
        return (len(self.processes) + len(self.listeners) + len(self.sockets)
                + len(self.shm) + len(self.runaway))

    def as_dict(self) -> dict:
        return {"processes": [{"pid": p, "title": t} for p, t in self.processes],
                "listeners": self.listeners, "sockets": self.sockets,
                "shm": [{"name": n, "size": size} for n, size in self.shm],
                "runaway": self.runaway}


def runaway_text(r: dict) -> str:
    """One runaway process as the summary names it."""
    return (f"pid {r['pid']} ({r['title']}) kept {r['cpu']:.0%} of a core busy for "
            f"{r['seconds']:g}s after {r['test']} ended")
