"""What belongs to this target: its actor processes, registry listeners and socket files.

*In scope* means provably of this checkout. A process is in scope when its
cwd is the target root and it carries one of the target's process markers
(for tractor the `_subactor[...]` title, `tractor._child` or
`subint-forkserv` on its command line), or when a tractor-tasks run started
it (the TRACTOR_TASKS_RUN variable in its environment names the run).

An in-scope process is *leaked* when nothing alive owns it any more:
  - its actor tree hangs off init or a subreaper (the test runner that
    spawned it is gone), or
  - the tractor-tasks run that started it has ended, or
  - it descends from a parent pid the caller names (descendant mode).
A live test session of this checkout is never a leak: its actors hang off
a living pytest.

A socket file is stale when nothing listens on it and the pid in its name
(`<actor>@<pid>.sock`) is not alive.

Nothing here signals or unlinks anything; see sweep.py.
"""
from __future__ import annotations

import errno
import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .target import Target

ENV_RUN = "TRACTOR_TASKS_RUN"  # "<supervisor pid>:<create time>:<target root>"
# Parents that adopt orphans: pid 1 and the usual subreapers.
REAPER_NAMES = frozenset({"systemd", "init", "tini", "dumb-init", "docker-init",
                          "s6-svscan", "runit", "launchd"})
_ATTRS = ["pid", "ppid", "name", "cmdline", "cwd", "status", "create_time"]
_UNIX_LISTENING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix


@dataclass
class Proc:
    pid: int
    ppid: int
    name: str
    cmdline: str
    cwd: str | None
    status: str
    create_time: float
    why: str = ""  # why it is in scope / leaked

    def describe(self, width: int = 80) -> str:
        text = " ".join((self.cmdline or self.name).split())  # setproctitle pads with spaces
        return f"pid {self.pid} ({text if len(text) <= width else text[:width - 3] + '...'})"


def is_alive(pid: int, create_time: float | None = None) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        p = psutil.Process(pid)
        if create_time is not None and abs(p.create_time() - create_time) > 0.01:
            return False  # the pid was reused
        return p.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return False


def snapshot() -> dict[int, Proc]:
    procs = {}
    for p in psutil.process_iter(_ATTRS):
        info = p.info
        cwd = info.get("cwd")
        if cwd and cwd.endswith(" (deleted)"):
            cwd = cwd[: -len(" (deleted)")]
        procs[info["pid"]] = Proc(
            pid=info["pid"], ppid=info.get("ppid") or 0, name=info.get("name") or "",
            cmdline=" ".join(info.get("cmdline") or []), cwd=cwd,
            status=info.get("status") or "", create_time=info.get("create_time") or 0.0,
        )
    return procs


def own_lineage() -> set[int]:
    """This process and its ancestors: never in scope, whatever they look like."""
    pids = {os.getpid()}
    try:
        pids.update(p.pid for p in psutil.Process().parents())
    except psutil.Error:
        pass
    return pids


def _environ(pid: int) -> dict[str, str]:
    try:
        return psutil.Process(pid).environ()
    except (psutil.Error, OSError):
        return {}


def run_marker(environ: dict[str, str]) -> tuple[int, float, str] | None:
    raw = environ.get(ENV_RUN, "")
    try:
        pid, ctime, root = raw.split(":", 2)
        return int(pid), float(ctime), root
    except ValueError:
        return None


def make_run_marker(root: Path) -> str:
    me = psutil.Process()
    return f"{me.pid}:{me.create_time()}:{root}"


@dataclass
class ScopeView:
    """One look at the machine, from the point of view of one target.

    `private_dirs` are directories a run made for itself (its runtime/temp dir):
    a process whose cwd is in one of them is that run's, marker or not.
    """
    target: Target
    procs: dict[int, Proc] = field(default_factory=snapshot)
    private_dirs: tuple[str, ...] = ()

    def __post_init__(self):
        self.root = str(self.target.root)
        self.private_dirs = tuple(str(d).rstrip(os.sep) for d in self.private_dirs)
        self.own = own_lineage()
        self._why: dict[int, str | None] = {}

    def in_scope(self, p: Proc) -> str | None:
        """Why this process belongs to the target, or None."""
        if p.pid in self._why:
            return self._why[p.pid]
        why = None
        if p.pid not in self.own and p.status != psutil.STATUS_ZOMBIE:
            if p.cwd and any(p.cwd == d or p.cwd.startswith(d + os.sep)
                             for d in self.private_dirs):
                why = "cwd is in this run's private temp dir"
            elif p.cwd == self.root:
                for marker in self.target.process_markers:
                    if marker in p.cmdline or marker in p.name:
                        why = f"cwd is the target, marker {marker!r}"
                        break
            if why is None and (p.cwd == self.root or self._maybe_ours(p)):
                marker = run_marker(_environ(p.pid))
                if marker and marker[2] == self.root:
                    why = f"started by tractor-tasks run {marker[0]}"
        self._why[p.pid] = why
        return why

    def _maybe_ours(self, p: Proc) -> bool:
        """Cheap pre-filter before reading another process's environment."""
        return p.cwd is not None and p.cwd.startswith(self.root + os.sep)

    def ancestors(self, p: Proc):
        seen = set()
        while p.ppid and p.ppid in self.procs and p.ppid not in seen:
            seen.add(p.ppid)
            p = self.procs[p.ppid]
            yield p

    def leak_reason(self, p: Proc, parent: int | None = None,
                    run: tuple | None = None) -> str | None:
        """Why this process is a leftover, or None. `run` is a finished run's marker."""
        why = self.in_scope(p)
        if why is None:
            return None
        if why.startswith("cwd is in this run's private"):
            return f"{why}; the run is over"
        if parent is not None:
            return (f"{why}; descends from pid {parent}"
                    if any(a.pid == parent for a in self.ancestors(p)) else None)
        marker = run_marker(_environ(p.pid))
        if marker and marker[2] == self.root:
            if run and marker[:2] == run[:2]:
                return f"{why}; that run is over"
            if not is_alive(marker[0], marker[1]):
                return f"{why}; the run's supervisor is gone"
            return None  # a live run's: its own supervisor sweeps it
        # climb through this tree's own actors; who is above the topmost one?
        owner = None
        for a in self.ancestors(p):
            if self.in_scope(a) is None:
                owner = a
                break
        if owner is None or owner.pid == 1 or owner.name in REAPER_NAMES:
            adopter = f"pid {owner.pid} {owner.name}" if owner else "nothing"
            return f"{why}; orphaned (its tree's parent is gone; adopted by {adopter})"
        return None

    def leaks(self, parent: int | None = None, run: tuple | None = None) -> list[Proc]:
        out = []
        for p in self.procs.values():
            why = self.leak_reason(p, parent, run)
            if why:
                p.why = why
                out.append(p)
        return out


# -- registry listeners -------------------------------------------------------

@dataclass
class Listener:
    address: str
    pid: int | None
    proc: Proc | None
    in_scope: str | None = None
    leaked: str | None = None

    def describe(self) -> str:
        who = self.proc.describe() if self.proc else (
            f"pid {self.pid}" if self.pid else "a process this user cannot see")
        return f"{self.address} held by {who}"


def _proc_net_tcp_listening(port: int) -> set[int] | None:
    """Inodes of sockets listening on `port` (Linux); None where /proc/net is absent."""
    inodes, seen_any = set(), False
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        seen_any = True
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(parts[9]))
    return inodes if seen_any else None


def tcp_listeners(port: int, view: ScopeView | None = None) -> list[Listener]:
    """Who listens on TCP `port` (any local address)."""
    inodes = _proc_net_tcp_listening(port)
    if inodes == set():
        return []  # fast path: nothing listens
    found = []
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            found.append((f"tcp {c.laddr.ip}:{port}", c.pid))
    out = []
    for address, pid in sorted(set(found), key=lambda x: (x[0], x[1] or 0)):
        proc = view.procs.get(pid) if (view and pid) else None
        out.append(Listener(address, pid, proc))
    return out


def unix_listening() -> dict[str, int] | None:
    """Listening UDS paths -> inode, from /proc/net/unix; None where unavailable."""
    try:
        with open("/proc/net/unix") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    out = {}
    for line in lines:
        parts = line.split(None, 7)
        if len(parts) == 8 and int(parts[3], 16) & _UNIX_LISTENING:
            out[parts[7]] = int(parts[6])
    return out


def uds_has_listener(path: Path, listening: dict[str, int] | None = None) -> bool:
    if listening is not None and str(path) in listening:
        return True
    # Not in this network namespace's table (or no /proc): ask the socket itself.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
        return True
    except OSError as err:
        return err.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK)
    finally:
        s.close()


def uds_holders(path: Path) -> list[int]:
    pids = set()
    for c in psutil.net_connections(kind="unix"):
        if c.laddr == str(path) and c.pid:
            pids.add(c.pid)
    return sorted(pids)


# -- socket files -------------------------------------------------------------

def bindspace_dir(target: Target, runtime_dir: Path | None = None) -> Path:
    """The target's UDS bindspace: platformdirs' user runtime dir for its app name.

    `runtime_dir` stands in for $XDG_RUNTIME_DIR (a cell's private one).
    """
    if runtime_dir is not None:
        return Path(runtime_dir) / target.bindspace
    import warnings

    import platformdirs
    with warnings.catch_warnings():  # no XDG_RUNTIME_DIR: platformdirs falls back, and says so
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_dir(target.bindspace))


def legacy_socket_dir() -> Path:
    """Where older tractor (and the spec's text) put registry sockets: /tmp ($TMPDIR if set)."""
    return Path(os.environ.get("TMPDIR") or tempfile.gettempdir())


def registry_socket_paths(target: Target, runtime_dir: Path | None = None) -> list[Path]:
    name = f"registry@{target.registry_port}.sock"
    return [bindspace_dir(target, runtime_dir) / name, legacy_socket_dir() / name]


@dataclass
class SockFile:
    path: Path
    listening: bool
    binder_pid: int | None
    binder_alive: bool

    @property
    def stale(self) -> bool:
        return not self.listening and not self.binder_alive

    def describe(self) -> str:
        state = ("live listener" if self.listening else
                 f"binder pid {self.binder_pid} alive" if self.binder_alive else "stale")
        return f"{self.path} ({state})"


def _binder_pid(name: str) -> int | None:
    stem = name[:-5] if name.endswith(".sock") else name
    _, _, tail = stem.rpartition("@")
    if stem.startswith("registry@"):
        return None  # the registry sentinel names a port, not a pid
    return int(tail) if tail.isdigit() else None


def socket_files(target: Target, runtime_dir: Path | None = None) -> list[SockFile]:
    """Socket files in the bindspace, and registry sentinels in the legacy temp dir."""
    paths: list[Path] = []
    space = bindspace_dir(target, runtime_dir)
    if space.is_dir():
        paths += sorted(space.glob("*.sock"))
    legacy = legacy_socket_dir()
    if legacy != space:
        paths += sorted(legacy.glob("registry@*.sock"))
    listening = unix_listening()
    out = []
    for path in paths:
        try:
            if not path.is_socket():
                continue
        except OSError:
            continue
        pid = _binder_pid(path.name)
        out.append(SockFile(path, uds_has_listener(path, listening), pid,
                            bool(pid) and is_alive(pid)))
    return out


def registry_listeners(target: Target, view: ScopeView,
                       runtime_dir: Path | None = None) -> list[Listener]:
    """Everything holding the target's registry address, tcp and uds, with its scope."""
    out = tcp_listeners(target.registry_port, view)
    listening = unix_listening()
    for path in registry_socket_paths(target, runtime_dir):
        if path.exists() and uds_has_listener(path, listening):
            pids = uds_holders(path) or [None]
            for pid in pids:
                out.append(Listener(f"uds {path}", pid, view.procs.get(pid) if pid else None))
    for lst in out:
        if lst.proc:
            lst.in_scope = view.in_scope(lst.proc)
            lst.leaked = view.leak_reason(lst.proc)
    return out
