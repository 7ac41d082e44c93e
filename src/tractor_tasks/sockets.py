"""Sockets: TCP and UDS listeners, socket files, and the target's UDS bindspace.

Nothing here unlinks or signals anything (see sweep.py). A socket file is
*stale* when nothing listens on it and the pid in its name
(`<actor>@<pid>.sock`) is not alive; presence alone is not staleness.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from . import rundirs
from .fsutil import atomic_write
from .processes import Proc, pid_exists
from .target import Target

_UNIX_LISTENING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix
BINDSPACE_CACHE = rundirs.BINDSPACE_CACHE  # kept in the venv, next to uv's files


# -- tcp ----------------------------------------------------------------------

def _tcp_listening_inodes(port: int, proc_net: str = "/proc/net") -> set[int] | None:
    """Inodes of sockets listening on `port`; None where /proc/net is absent."""
    inodes, seen_any = set(), False
    for name in ("tcp", "tcp6"):
        try:
            with open(f"{proc_net}/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        seen_any = True
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(int(parts[9]))
    return inodes if seen_any else None


@dataclass
class Listener:
    address: str
    pid: int | None
    proc: Proc | None

    def describe(self) -> str:
        who = self.proc.describe() if self.proc else (
            f"pid {self.pid}" if self.pid else "a process this user cannot see")
        return f"{self.address} held by {who}"


def tcp_listeners(port: int, procs: dict[int, Proc]) -> list[Listener]:
    """Who listens on TCP `port` (any local address), with the holder when visible."""
    if _tcp_listening_inodes(port) == set():
        return []  # fast path: nothing listens
    found = set()
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            found.add((f"tcp {c.laddr.ip}:{port}", c.pid))
    return [Listener(addr, pid, procs.get(pid) if pid else None)
            for addr, pid in sorted(found, key=lambda x: (x[0], x[1] or 0))]


# -- uds ----------------------------------------------------------------------

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
    return sorted({c.pid for c in psutil.net_connections(kind="unix")
                   if c.laddr == str(path) and c.pid})


# -- socket files and the bindspace ------------------------------------------

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


def binder_pid(name: str) -> int | None:
    """The pid in `<actor>@<pid>.sock`; the registry sentinel names a port, not a pid."""
    stem = name.removesuffix(".sock")
    if stem.startswith("registry@"):
        return None
    _, _, tail = stem.rpartition("@")
    return int(tail) if tail.isascii() and tail.isdigit() else None


def _platformdirs_runtime(app: str) -> Path:
    import warnings

    import platformdirs
    with warnings.catch_warnings():  # no usable XDG_RUNTIME_DIR: it falls back, and says so
        warnings.simplefilter("ignore")
        return Path(platformdirs.user_runtime_dir(app))


_ASK = ("import warnings; warnings.simplefilter('ignore'); import platformdirs, sys; "
        "print(platformdirs.user_runtime_dir(sys.argv[1]))")


def target_bindspace(target: Target, venv: Path | None) -> Path | None:
    """The bindspace the target's own interpreter computes (its platformdirs may differ
    from ours); asked once per venv and XDG_RUNTIME_DIR, the answer kept in the venv."""
    python = venv / "bin" / "python" if venv else None
    if python is None or not python.exists():
        return None
    key = f"{target.bindspace}|{os.environ.get('XDG_RUNTIME_DIR', '')}|{python.stat().st_mtime_ns}"
    cache = venv / BINDSPACE_CACHE
    try:
        known = json.loads(cache.read_text())
        if isinstance(known, dict) and isinstance(known.get(key), str):
            return Path(known[key])
    except (OSError, ValueError):
        known = {}
    try:
        out = subprocess.run([str(python), "-c", _ASK, target.bindspace], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None  # the target does not use platformdirs: the other candidates stand
    path = out.stdout.strip().splitlines()[-1]
    try:
        atomic_write(cache, json.dumps({key: path}), replace_link=True)
    except OSError:
        pass
    return Path(path)


def bindspace_dirs(target: Target, venv: Path | None = None,
                   runtime_dir: Path | None = None) -> list[Path]:
    """Every place the target's UDS sockets may be, the target's own answer first.

    `runtime_dir` stands in for $XDG_RUNTIME_DIR (a run's private one): then it is the
    only place. Otherwise: what the target's interpreter computes, what ours computes,
    $XDG_RUNTIME_DIR/<app>, /run/user/<uid>/<app> and /tmp/runtime-<uid>/<app>
    (platformdirs versions disagree on which of these they pick).
    """
    app = target.bindspace
    if runtime_dir is not None:
        return [Path(runtime_dir) / app]
    candidates = [target_bindspace(target, venv), _platformdirs_runtime(app),
                  *(d / app for d in _runtime_dir_candidates())]
    out: list[Path] = []
    for c in candidates:
        if c is not None and c not in out:
            out.append(c)
    return out


def _runtime_dir_candidates() -> list[Path]:
    """Runtime dirs some platformdirs version picks from this environment: older ones
    take $XDG_RUNTIME_DIR as it is and use /run/user/<uid> when it is unset; newer
    ones want a 0700 dir and otherwise fall back to /tmp/runtime-<uid>."""
    uid = os.getuid()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    out = []
    if xdg:
        out.append(Path(xdg))
    else:
        out.append(Path(f"/run/user/{uid}"))
    try:
        private = xdg and (os.stat(xdg).st_mode & 0o777) == 0o700
    except OSError:
        private = False
    if not private:
        out.append(Path(f"/tmp/runtime-{uid}"))
    return out


def legacy_socket_dir() -> Path:
    """Where older tractor (and the spec's text) put registry sockets: /tmp ($TMPDIR)."""
    return Path(os.environ.get("TMPDIR") or tempfile.gettempdir())


def registry_socket_paths(target: Target, dirs: list[Path]) -> list[Path]:
    """The target's own registry sentinel, and only that port's, in each place."""
    name = f"registry@{target.registry_port}.sock"
    return [d / name for d in [*dirs, legacy_socket_dir()]]


def socket_files(target: Target, dirs: list[Path]) -> list[SockFile]:
    """Socket files in the bindspace dirs, and this target's registry sentinel in the
    legacy temp dir (another app's `registry@<other port>.sock` is not ours)."""
    paths: list[Path] = []
    for d in dirs:
        try:
            paths += sorted(d.glob("*.sock")) if d.is_dir() else []
        except OSError:
            continue
    legacy = legacy_socket_dir() / f"registry@{target.registry_port}.sock"
    if legacy not in paths:
        paths.append(legacy)
    listening = unix_listening()
    out = []
    for path in paths:
        try:
            if not path.is_socket():
                continue
        except OSError:
            continue
        pid = binder_pid(path.name)
        out.append(SockFile(path, uds_has_listener(path, listening), pid,
                            bool(pid) and pid_exists(pid)))
    return out
