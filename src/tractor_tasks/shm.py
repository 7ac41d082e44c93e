"""POSIX shared memory (/dev/shm) a run leaves behind, and which of it is ours to remove.

tractor turns multiprocessing's resource tracker off, so an actor that dies hard
leaves its `/dev/shm/<key>` segments behind. A contained run has its own /dev/shm (a
tmpfs in its mount namespace, see _tt_init.py): what is left there when pytest exits
is counted as a leak and goes with the namespace. A run on the host's /dev/shm
(the subreaper fallback, --no-contain) is compared before and after instead:

  before   `shm-before.json` in the pass dir when pytest starts: the time, and every
           segment there was (name -> inode).
  after    `shm.json` in the pass dir when pytest exited: the segments of ours that
           appeared (not there before with that name and inode) that no process
           outside the run holds, and which processes of the run hold them.

A segment *appeared during a run* of this target when it is not in a pass's before
list and its change time lies between that pass's start and its end (`shm.json`'s
time; for a run killed before it wrote one, the last time anything of the pass wrote
to its dir, plus a little slack). It is an *orphan of this target* when, besides,
it is owned by us and no live process holds it open (an fd in /proc/*/fd or a
mapping in /proc/*/maps, as tractor-reap's shm phase decides it). `invoke doctor`
reports those (and, as a warning, any other segment nobody holds, never removed);
`invoke clean --shm` removes only orphans of this target. The records live in the
pass dirs, so they go with the run dirs the state dir keeps (the newest 20 runs).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .fsutil import atomic_write
from .rundirs import PassDir

HOST = Path("/dev/shm")
BEFORE, AFTER = PassDir.SHM_BEFORE, PassDir.SHM_AFTER
SLACK = 5.0   # seconds past a killed pass's last write that still count as "during it"


@dataclass(frozen=True)
class Segment:
    name: str
    ino: int
    size: int
    uid: int
    ctime: float

    def describe(self) -> str:
        return f"{self.name} ({_size(self.size)})"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def segments(root: Path = HOST) -> dict[str, Segment]:
    """Regular files right under `root` (a /dev/shm), by name; {} when unreadable."""
    out = {}
    try:
        entries = list(os.scandir(root))
    except OSError:
        return out
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o100000:
            out[e.name] = Segment(e.name, st.st_ino, st.st_size, st.st_uid, st.st_ctime)
    return out


def holders(names, root: Path = HOST, proc: Path = Path("/proc")) -> dict[str, list[int]]:
    """name -> pids of the live processes that hold /dev/shm/<name> open (an fd, or a
    mapping: a segment mapped and closed is still in use). Processes in another mount
    namespace (a contained run's) name their own /dev/shm the same way: a match there
    counts as held, which only ever keeps a segment."""
    wanted = {str(root / n): n for n in names}
    out: dict[str, list[int]] = {}
    if not wanted:
        return out
    try:
        pids = [d for d in os.listdir(proc) if d.isdigit()]
    except OSError:
        return out
    for pid in pids:
        found = set()
        try:
            for fd in os.listdir(proc / pid / "fd"):
                try:
                    link = os.readlink(proc / pid / "fd" / fd).removesuffix(" (deleted)")
                except OSError:
                    continue
                if link in wanted:
                    found.add(wanted[link])
        except OSError:
            pass
        try:
            with open(proc / pid / "maps") as f:
                for line in f:
                    parts = line.split(None, 5)
                    if len(parts) == 6:
                        path = parts[5].rstrip("\n").removesuffix(" (deleted)")
                        if path in wanted:
                            found.add(wanted[path])
        except OSError:
            pass
        for name in found:
            out.setdefault(name, []).append(int(pid))
    return out


# -- the records of runs on the host's /dev/shm ------------------------------------

def record_before(pass_dir: Path, root: Path = HOST) -> None:
    """When pytest starts on the host's /dev/shm: what is there, and since when."""
    _write(pass_dir / BEFORE, {"start": time.time(),
                               "segments": {n: s.ino for n, s in segments(root).items()}})


def appeared(pass_dir: Path, root: Path = HOST, *, own: set[int] = frozenset()
             ) -> list[tuple[Segment, list[int]]]:
    """After pytest exited: segments not there at `record_before`, with the pids that
    hold them. Those nobody holds, or only processes of the run (`own`), are written
    to `shm.json` as the run's; one held by anyone else is left out (not ours)."""
    before = _read(pass_dir / BEFORE)
    if not isinstance(before, dict):
        return []
    start = float(before.get("start") or 0)
    old = before.get("segments") or {}
    uid = os.geteuid()
    new = [s for n, s in segments(root).items()
           if old.get(n) != s.ino and s.ctime >= start - 1 and s.uid == uid]
    held = holders([s.name for s in new], root)
    out = [(s, held.get(s.name, [])) for s in sorted(new, key=lambda s: s.name)]
    mine = [(s, pids) for s, pids in out if set(pids) <= own]
    _write(pass_dir / AFTER, {"end": time.time(), "appeared": [
        {"name": s.name, "ino": s.ino, "size": s.size, "held_by": pids} for s, pids in mine]})
    return mine


@dataclass(frozen=True)
class Window:
    """One pass that ran on the host's /dev/shm: what was there, and when it ran."""
    pass_dir: Path
    start: float
    end: float
    before: dict[str, int]
    recorded: dict[str, int]   # what its census found appeared (name -> inode)

    def covers(self, s: Segment) -> bool:
        if self.recorded.get(s.name) == s.ino:
            return True
        return (self.before.get(s.name) != s.ino
                and self.start - 1 <= s.ctime <= self.end + SLACK)


def windows(state_dir: Path) -> list[Window]:
    """Every recorded pass of this target that ran on the host's /dev/shm."""
    out = []
    for path in sorted(state_dir.glob(f"runs/**/{BEFORE}")):
        before = _read(path)
        if not isinstance(before, dict):
            continue
        after = _read(path.with_name(AFTER))
        if isinstance(after, dict):
            end = float(after.get("end") or 0)
            recorded = {a["name"]: a["ino"] for a in after.get("appeared") or []
                        if isinstance(a, dict) and "name" in a and "ino" in a}
        else:   # killed before its census: it ran until its pass dir stopped changing
            end = max((f.stat().st_mtime for f in path.parent.iterdir() if f.is_file()),
                      default=0.0)
            recorded = {}
        out.append(Window(path.parent, float(before.get("start") or 0), end,
                          dict(before.get("segments") or {}), recorded))
    return out


@dataclass
class Census:
    ours: list[Segment]      # orphans of this target: removable
    others: list[Segment]    # nobody holds them either, but not shown to be ours: kept


def orphans(state_dir: Path, root: Path = HOST) -> Census:
    """The segments under `root` that no live process holds, split into this target's
    (appeared during one of its recorded runs, owned by us) and everyone else's."""
    found = segments(root)
    held = holders(found, root)
    free = [s for n, s in sorted(found.items()) if n not in held]
    spans = windows(state_dir) if free else []
    uid = os.geteuid()
    ours = [s for s in free if s.uid == uid and any(w.covers(s) for w in spans)]
    return Census(ours, [s for s in free if s not in ours])


def remove(state_dir: Path, *, dry_run: bool = False, root: Path = HOST) -> list[str]:
    """`invoke clean --shm`: remove this target's orphan segments (checked again just
    before each removal: same inode, still held by nobody); report the rest."""
    census = orphans(state_dir, root)
    lines = []
    for s in census.ours:
        if dry_run:
            lines.append(f"would remove shared memory {root / s.name} ({_size(s.size)}): "
                         "appeared during a run of this checkout, held by no process")
            continue
        now = segments(root).get(s.name)
        if now is None or now.ino != s.ino or holders([s.name], root):
            lines.append(f"kept shared memory {root / s.name}: it changed or is in use now")
            continue
        try:
            os.unlink(root / s.name)
            lines.append(f"removed shared memory {root / s.name} ({_size(s.size)}): appeared "
                         "during a run of this checkout, held by no process")
        except OSError as err:
            lines.append(f"could not remove shared memory {root / s.name}: "
                         f"{err.strerror or err}")
    if census.others:
        names = ", ".join(s.describe() for s in census.others[:5])
        more = f", ... (+{len(census.others) - 5})" if len(census.others) > 5 else ""
        lines.append(f"kept {len(census.others)} shared memory segment(s) nobody holds but "
                     f"no run of this checkout can be shown to own: {names}{more}")
    return lines


def _write(path: Path, data) -> None:
    try:
        atomic_write(path, json.dumps(data), replace_link=True)
    except OSError:
        pass


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
