"""POSIX shared memory (/dev/shm) a run leaves behind, and which of it is ours to remove.

tractor turns multiprocessing's resource tracker off, so an actor that dies hard
leaves its `/dev/shm/<key>` segments behind. A contained run has its own /dev/shm (a
tmpfs in its mount namespace, see _tt_init.py): what is left there when pytest exits
is counted as a leak and goes with the namespace. A run on the host's /dev/shm
(the subreaper fallback, --no-contain) is compared before and after instead:

  before   `shm-before.json` in the pass dir when pytest starts: the time, and every
           segment there was (name -> inode).
  during   every look the supervisor takes (0.5 s), which segments the run's own
           processes hold (an fd or a mapping), by name and inode: `shm-seen.json`,
           rewritten when it grows (a supervisor killed before its census keeps it).
  after    `shm.json` in the pass dir when pytest exited: the segments of the run,
           each with the processes of the run that hold them.

Linux records no creator for a segment, and the time it appeared cannot tell who made
it (any process of the machine may make one meanwhile). So, without containment, a
segment is *the run's* only when it appeared during the pass (not in the before list
with that inode) and a process of the run was seen holding it (during the pass, or at
the census, and nobody outside the run holds it then). A segment an actor made and
dropped between two looks is not shown to be ours: it is reported, never removed. An
*orphan of this target* is a recorded segment (same name and inode) that no live
process holds open (an fd in /proc/*/fd or a mapping in /proc/*/maps). `invoke doctor`
reports those (and, as a warning, any other segment nobody holds, never removed);
`invoke clean --shm` removes only orphans of this target. The records live in the
pass dirs, so they go with the run dirs the state dir keeps (the newest 20 runs); for
a pass killed before its census, what `shm-seen.json` names is the run's.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .fsutil import atomic_write, read_bounded
from .rundirs import PassDir, State

HOST = Path("/dev/shm")
BEFORE, AFTER, SEEN = PassDir.SHM_BEFORE, PassDir.SHM_AFTER, PassDir.SHM_SEEN


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


def _held(pid: str, root: Path, proc: Path) -> dict[str, int]:
    """name -> inode of what right under `root` one process holds (an fd, a mapping)."""
    prefix = str(root).rstrip("/") + "/"
    found: dict[str, int] = {}
    fd_dir = proc / pid / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        fds = []
    for fd in fds:
        try:
            link = os.readlink(fd_dir / fd).removesuffix(" (deleted)")
            if link.startswith(prefix) and "/" not in link[len(prefix):]:
                found[link[len(prefix):]] = os.stat(fd_dir / fd).st_ino
        except OSError:
            continue
    try:
        with open(proc / pid / "maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith(prefix):
                    path = parts[5].rstrip("\n").removesuffix(" (deleted)")
                    if "/" not in path[len(prefix):]:
                        found.setdefault(path[len(prefix):], int(parts[4]))
    except (OSError, ValueError):
        pass
    return found


def holders(names, root: Path = HOST, proc: Path = Path("/proc")) -> dict[str, list[int]]:
    """name -> pids of the live processes that hold /dev/shm/<name> open (an fd, or a
    mapping: a segment mapped and closed is still in use). Processes in another mount
    namespace (a contained run's) name their own /dev/shm the same way: a match there
    counts as held, which only ever keeps a segment."""
    wanted = set(names)
    out: dict[str, list[int]] = {}
    if not wanted:
        return out
    try:
        pids = [d for d in os.listdir(proc) if d.isdigit()]
    except OSError:
        return out
    for pid in pids:
        for name in wanted & _held(pid, root, proc).keys():
            out.setdefault(name, []).append(int(pid))
    return out


def note_seen(pass_dir: Path, seen: dict[str, int], pids: Iterable[int],
              root: Path = HOST) -> None:
    """One look during the pass: add what the run's processes hold to `seen`, and keep it
    in `shm-seen.json` when it grew."""
    now = held_by(pids, root)
    if any(seen.get(n) != ino for n, ino in now.items()):
        seen.update(now)
        _write(pass_dir / SEEN, seen)


def held_by(pids: Iterable[int], root: Path = HOST, proc: Path = Path("/proc")
            ) -> dict[str, int]:
    """name -> inode of the segments these processes (the run's) hold now."""
    out: dict[str, int] = {}
    for pid in pids:
        out.update(_held(str(pid), root, proc))
    return out


# -- the records of runs on the host's /dev/shm ------------------------------------

def record_before(pass_dir: Path, root: Path = HOST) -> None:
    """When pytest starts on the host's /dev/shm: what is there, and since when."""
    _write(pass_dir / BEFORE, {"start": time.time(),
                               "segments": {n: s.ino for n, s in segments(root).items()}})


def appeared(pass_dir: Path, root: Path = HOST, *, own: set[int] = frozenset(),
             seen: dict[str, int] | None = None) -> list[tuple[Segment, list[int]]]:
    """After pytest exited: segments not there at `record_before`, with the pids that
    hold them. The run's, written to `shm.json`: those held now only by processes of
    the run (`own`), and those nobody holds now that a process of the run was seen
    holding during the pass (`seen`: name -> inode, from held_by()). One held by anyone
    else, or never seen held by the run, is left out: not shown to be ours."""
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
    seen = seen or {}
    mine = [(s, pids) for s, pids in out
            if (pids and set(pids) <= own) or (not pids and seen.get(s.name) == s.ino)]
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
        """Recorded by its census as the run's (same name and inode). The time window
        alone proves nothing: another process may have made a segment meanwhile."""
        return self.recorded.get(s.name) == s.ino


def windows(state_dir: Path) -> list[Window]:
    """Every recorded pass of this target that ran on the host's /dev/shm."""
    out = []
    for path in sorted(state_dir.glob(f"{State.RUNS}/**/{BEFORE}")):
        before = _read(path)
        if not isinstance(before, dict):
            continue
        after = _read(path.with_name(AFTER))
        if isinstance(after, dict):
            end = float(after.get("end") or 0)
            recorded = {a["name"]: a["ino"] for a in after.get("appeared") or []
                        if isinstance(a, dict) and "name" in a and "ino" in a}
        else:   # killed before its census: what it was seen holding meanwhile
            end = max((f.stat().st_mtime for f in path.parent.iterdir() if f.is_file()),
                      default=0.0)
            seen = _read(path.with_name(SEEN))
            recorded = {n: i for n, i in seen.items() if isinstance(i, int)} \
                if isinstance(seen, dict) else {}
        out.append(Window(path.parent, float(before.get("start") or 0), end,
                          dict(before.get("segments") or {}), recorded))
    return out


@dataclass
class Census:
    ours: list[Segment]      # orphans of this target: removable
    others: list[Segment]    # nobody holds them either, but not shown to be ours: kept


def orphans(state_dir: Path, root: Path = HOST) -> Census:
    """The segments under `root` that no live process holds, split into this target's
    (recorded by one of its runs' census as held by the run, owned by us) and everyone
    else's."""
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
                         "held by a run of this checkout, held by no process now")
            continue
        now = segments(root).get(s.name)
        if now is None or now.ino != s.ino or holders([s.name], root):
            lines.append(f"kept shared memory {root / s.name}: it changed or is in use now")
            continue
        try:
            os.unlink(root / s.name)
            lines.append(f"removed shared memory {root / s.name} ({_size(s.size)}): held by "
                         "a run of this checkout, held by no process now")
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
    """A record in a pass dir, which a test can reach: no link followed, no FIFO
    blocked on, at most 16 MiB (fsutil.read_bounded)."""
    try:
        return json.loads(read_bounded(path))
    except (OSError, ValueError, RecursionError):
        return None
