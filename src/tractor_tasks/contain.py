"""Contained runs, in one place: what a run may touch, and how all of it is ended
(through processes.end_ladder, the one ending ladder).

Three modes, best first:
  namespaces  the command runs in its own user, pid, network and mount namespaces with a
              private /proc (and its own /tmp overlay and /dev/shm tmpfs when asked),
              under `_tt_init.py` as pid 1. Runs can share fixed ports,
              cannot see (or kill) anyone else's processes, and cannot outlive us: when
              the init exits, the kernel SIGKILLs everything left in the namespace.
  subreaper   we become a child subreaper, so the run's orphans come back to us instead
              of init, and are ended with the run.
  off         a plain child (--no-contain); only its own live tree is ours to end.

Every mode starts the command with SIGINT/SIGTERM/... at default and an empty signal
mask, whatever our own dispositions are: tractor's signal tests hang otherwise.

If we die, even by SIGKILL, a contained run dies with us three ways over: the init
exits on its control pipe's EOF (only we hold the write end), unshare has
PR_SET_PDEATHSIG(SIGKILL), and unshare's --kill-child takes the init along.
"""
from __future__ import annotations

import ctypes
import functools
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from .errors import TaskError, usage
from .processes import end_ladder, live, nested_pid, send

MODES = ("namespaces", "subreaper", "off")
ENV_CONTAIN = "TRACTOR_TASKS_CONTAIN"   # auto|namespaces|subreaper|off
ENV_LAUNCH = "TRACTOR_TASKS_LAUNCH"     # each launch's key, in its processes' environment

INIT = Path(__file__).with_name("_tt_init.py")
# --map-current-user (not -r): the command keeps our uid inside. --keep-caps lets the
# init raise `lo` when that uid is not 0; it drops those caps before starting the command.
UNSHARE_FLAGS = ("--user", "--map-current-user", "--keep-caps", "--pid", "--fork",
                 "--kill-child=SIGKILL", "--net", "--mount-proc")
HOLD = 30.0            # seconds the init keeps a finished run's namespace for us to inspect
START_TIMEOUT = 30.0   # for the init to report `started` (a loaded machine is slow)

RESET = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE,
         signal.SIGXFSZ, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGCHLD)
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 1, 36, 37

_CONTAINED = "contained: own user, pid, network and mount namespaces"
_SUBREAPER = ("a child subreaper: the run's orphans come back to tractor-tasks and are "
              "ended at the end")
_OFF = ("not contained: the run shares this machine's pids and ports, and only the "
        "command's live process tree is ended at the end")


@dataclass(frozen=True)
class Containment:
    mode: str   # one of MODES
    note: str   # one line for the user: what the run gets, or what it falls back to and why


# -- what this machine allows ---------------------------------------------------------

@functools.cache
def _libc():
    lib = ctypes.CDLL(None, use_errno=True)
    lib.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    return lib


def _prctl(option: int, arg: int = 0) -> None:
    if _libc().prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


@functools.cache
def namespaces_refusal() -> str | None:
    """Why namespaces are not allowed here (one short reason), or None: checked once."""
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform})"
    unshare = shutil.which("unshare")
    if unshare is None:
        return "no unshare binary on PATH (util-linux)"
    try:
        probe = subprocess.run([unshare, *UNSHARE_FLAGS, "true"], capture_output=True,
                               text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unshare: {err}"
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines()
        return lines[-1] if lines else f"unshare exited {probe.returncode}"
    return None


@functools.cache
def _subreaper_refusal() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"no child subreaper on {sys.platform}"
    try:
        flag = ctypes.c_int(0)
        _prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(flag))
    except (OSError, AttributeError) as err:
        return f"no child subreaper ({err})"
    return None


def detect(requested: str = "auto", env=None) -> Containment:
    """The best containment this machine allows, or the one asked for ("off" = --no-contain).

    With "auto", env[ENV_CONTAIN] (when set) decides instead. A mode asked for that
    this machine cannot give is an error, not a silent downgrade.
    """
    env = os.environ if env is None else env
    allowed = ("auto", *MODES)
    if requested not in allowed:
        raise usage(f"containment {requested!r}: expected one of {', '.join(allowed)}")
    source = None   # the caller's argument (--no-contain for "off")
    if requested == "auto" and env.get(ENV_CONTAIN, "").strip():
        requested = env[ENV_CONTAIN].strip()
        source = f"{ENV_CONTAIN}={requested}"
        if requested not in allowed:
            raise usage(f"{source}: expected one of {', '.join(allowed)}")
    if requested == "auto":
        return _best()
    return _forced(requested, source)


def _best() -> Containment:
    if not sys.platform.startswith("linux"):
        return Containment("off", f"no namespaces or child subreaper on {sys.platform}; {_OFF}")
    refused = namespaces_refusal()
    if refused is None:
        return Containment("namespaces", _CONTAINED)
    why = f"namespaces not allowed here ({refused})"
    if _subreaper_refusal() is None:
        return Containment("subreaper", f"{why}; falling back to {_SUBREAPER}")
    return Containment("off", f"{why}, and {_subreaper_refusal()}; {_OFF}")


def _forced(mode: str, source: str | None) -> Containment:
    asked = source or f"containment {mode!r}"
    if mode == "namespaces":
        refused = namespaces_refusal()
        if refused:
            raise TaskError(f"{asked}: namespaces are not allowed here ({refused})")
        return Containment(mode, _CONTAINED)
    if mode == "subreaper":
        refused = _subreaper_refusal()
        if refused:
            raise TaskError(f"{asked}: {refused}")
        return Containment(mode, f"{_SUBREAPER} ({source or 'as asked'})")
    return Containment(mode, f"{_OFF} ({source or '--no-contain'})")


# -- processes ------------------------------------------------------------------------

def _tree(p: psutil.Process) -> list[psutil.Process]:
    """p (when live) and its live descendants."""
    try:
        kids = p.children(recursive=True)
    except psutil.Error:
        kids = []
    return [q for q in [p, *kids] if live(q)]


def _child_pids(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        try:
            return [c.pid for c in psutil.Process(pid).children()]
        except psutil.Error:
            return []


def _child_setup(pdeathsig: bool):
    """preexec_fn: default signal dispositions, empty mask, optionally die with us.

    The kernel sends the death signal when the *thread* that forked exits, so it is
    only asked for from the main thread: a launch from a worker thread would otherwise
    die with that thread. (Contained, the control pipe's EOF covers that case.)
    """
    parent = os.getpid()
    pdeathsig = pdeathsig and threading.current_thread() is threading.main_thread()
    prctl = _libc().prctl if pdeathsig else None   # loaded before the fork

    def setup():
        for sig in RESET:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:   # the parent died before the prctl took
                os._exit(1)
    return setup


def _tcp_listeners_in(pid: int) -> list[tuple[str, int]]:
    """LISTEN sockets of the network namespace `pid` lives in, from /proc/<pid>/net."""
    found = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "0A":   # 0A = TCP_LISTEN
                continue
            addr, port = fields[1].split(":")
            raw = bytes.fromhex(addr)
            if sys.byteorder == "little":   # the kernel prints each 32-bit word as an int
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, raw), int(port, 16)))
    return sorted(set(found))


# -- a launched run -------------------------------------------------------------------

_OURS: set[int] = set()   # pids of every Popen child a Launched made here (never adopted)
_OURS_LOCK = threading.Lock()


class Launched:
    """The handle of one launched run. End it with end(), then close() (or use `with`).

    Pids are host pids. Not thread-safe: one owner per run.
    """

    containment: Containment
    main_pid: int | None = None   # the command's, once started (None if it ran instantly)
    key: str = ""                 # ENV_LAUNCH in the run's environment

    def __init__(self, containment: Containment, popen: subprocess.Popen):
        self.containment = containment
        self._popen = popen
        self._main: psutil.Process | None = None
        self._closed = False
        with _OURS_LOCK:
            _OURS.add(popen.pid)

    def _set_main(self, pid: int | None) -> None:
        self.main_pid = pid
        try:
            self._main = psutil.Process(pid) if pid else None
        except psutil.Error:
            self._main = None

    def poll(self) -> int | None:
        """The command's exit status once it exited (-N: killed by signal N), else None."""
        raise NotImplementedError

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the command's exit; True when it exited."""
        raise NotImplementedError

    def fileno(self) -> int | None:
        """An fd that turns readable when the command's state changes (for select)."""
        raise NotImplementedError

    def members(self) -> list[psutil.Process]:
        """Every live process of the run, the command included while alive."""
        raise NotImplementedError

    def tcp_listeners(self) -> list[tuple[str, int]]:
        """(ip, port) of the run's listening TCP sockets."""
        found = set()
        for p in self.members():
            try:
                for c in p.net_connections(kind="tcp"):
                    if c.status == psutil.CONN_LISTEN and c.laddr:
                        found.add((c.laddr.ip, c.laddr.port))
            except psutil.Error:
                pass
        return sorted(found)

    def tmp_root(self) -> Path | None:
        """The run's own /tmp seen from here (contained with a private /tmp), else None."""
        return None

    def shm_root(self) -> Path | None:
        """The run's own /dev/shm seen from here (contained with a private one, while its
        namespace lives), else None: the run uses the host's /dev/shm."""
        return None

    def signal_command(self, sig: int) -> bool:
        """Signal the command by host pid; False when it is gone (never a reused pid)."""
        return self._main is not None and send(self._main, sig)

    def end(self, grace: float = 0.3) -> list[str]:
        """SIGINT every member, `grace`, SIGKILL; returns what was done. Afterwards
        nothing of the run is alive."""
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL everything of the run, now."""
        raise NotImplementedError

    def close(self) -> None:
        """Release fds (idempotent). Contained, a run still going dies with it."""
        raise NotImplementedError

    def _forget(self) -> None:
        with _OURS_LOCK:
            _OURS.discard(self._popen.pid)

    def __enter__(self) -> Launched:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.end()
        finally:
            self.close()


class _Contained(Launched):
    """unshare -> _tt_init.py (pid 1) -> the command, in fresh namespaces."""

    def __init__(self, containment, popen, status_fd: int, ctl_fd: int):
        super().__init__(containment, popen)
        self._status_fd: int | None = status_fd
        self._ctl_fd: int | None = ctl_fd
        self._buf = b""
        self._eof = False
        self._status: int | None = None
        self._error: str | None = None
        self._ns_main: int | None = None
        self._init: psutil.Process | None = None
        self.shm_private = False          # the init mounted the run's own /dev/shm
        self.shm_note = ""                # why not, when it was asked for and failed

    # the status pipe

    def _pump(self, timeout: float) -> None:
        """Read what the init reported, waiting up to `timeout` for the first bytes."""
        if self._eof or self._status_fd is None:
            return
        ready, _, _ = select.select([self._status_fd], [], [], max(timeout, 0))
        if not ready:
            return
        data = os.read(self._status_fd, 4096)
        if not data:
            self._eof = True
            if self._status is None and self._ns_main is not None:
                self._status = -signal.SIGKILL   # the init died: so did the command
            return
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            word, _, rest = line.decode(errors="replace").partition(" ")
            if word == "started":
                self._ns_main = int(rest)
            elif word == "exited":
                self._status = int(rest)
            elif word == "error":
                self._error = rest
            elif word == "shm":
                self.shm_private = rest == "private"
                self.shm_note = rest.removeprefix("shared").strip()

    def _started(self) -> None:
        """Wait for the init's first word; find its host pid and the command's."""
        deadline = time.monotonic() + START_TIMEOUT
        while self._ns_main is None and self._error is None and not self._eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._pump(left)
        if self._ns_main is None:
            why = self._error or "contained launch failed: " + (
                "timed out waiting for the namespace's init" if not self._eof else
                f"unshare exited {self._popen.wait(5)} before the command started")
            self.kill()
            self.close()
            raise TaskError(why)
        inits = _child_pids(self._popen.pid)
        try:
            self._init = psutil.Process(inits[0]) if inits else None
        except psutil.Error:
            self._init = None
        if self._init is not None:   # None when the command is already reaped: it ran
            host = [c for c in _child_pids(self._init.pid) if nested_pid(c) == self._ns_main]
            self._set_main(host[0] if host else None)

    def _release(self) -> None:
        """Close the control pipe: the init exits at once, and the namespace with it."""
        if self._ctl_fd is not None:
            try:
                os.write(self._ctl_fd, b"go\n")
            except OSError:
                pass
            os.close(self._ctl_fd)
            self._ctl_fd = None

    # the API

    def poll(self) -> int | None:
        self._pump(0)
        return self._status

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._status is None and not self._eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._pump(left)
        return self.poll() is not None

    def fileno(self) -> int | None:
        return self._status_fd

    def members(self) -> list[psutil.Process]:
        if self._init is None or not live(self._init):
            return []
        try:
            kids = self._init.children(recursive=True)
        except psutil.Error:
            return []
        me = os.getpid()
        return sorted((p for p in kids if p.pid != me and live(p)), key=lambda p: p.pid)

    def tcp_listeners(self) -> list[tuple[str, int]]:
        if self._init is None or not live(self._init):
            return []
        return _tcp_listeners_in(self._init.pid)

    def tmp_root(self) -> Path | None:
        tmp = getattr(self, "_tmp", None)
        return tmp if tmp is not None and tmp.is_dir() else None

    def shm_root(self) -> Path | None:
        if not self.shm_private or self._init is None or not live(self._init):
            return None
        return Path(f"/proc/{self._init.pid}/root/dev/shm")

    def end(self, grace: float = 0.3) -> list[str]:
        notes = end_ladder(self.members, grace).notes()
        self._release()
        try:
            self._popen.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            self._popen.kill()
            self._popen.wait()
            notes.append("the namespace's init did not exit when told: SIGKILL")
        while not self._eof and self._status_fd is not None:
            self._pump(1.0)   # unshare is gone, so this is EOF at once
        return notes

    def kill(self) -> None:
        if self._init is not None and send(self._init, signal.SIGKILL):
            return
        try:
            self._popen.kill()   # no init (yet): unshare's --kill-child takes it along
        except OSError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._release()
        try:
            self._popen.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
            self._popen.kill()
            self._popen.wait()
        self._pump(0)
        if self._status_fd is not None:
            os.close(self._status_fd)
            self._status_fd = None
        self._forget()


class _Plain(Launched):
    """The command as our own child; in "subreaper" mode, its orphans come back to us."""

    def __init__(self, containment, popen, before: set[int]):
        super().__init__(containment, popen)
        self._set_main(popen.pid)
        self._adopts = containment.mode == "subreaper"
        self._before = before
        self._since = self._main.create_time() if self._main else time.time()
        try:
            self._pidfd: int | None = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._popen.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._pidfd is not None:
                select.select([self._pidfd], [], [], left)
            else:
                time.sleep(min(0.02, left))
        return True

    def fileno(self) -> int | None:
        return self._pidfd

    def _adopted(self) -> list[psutil.Process]:
        """Our children that are orphans of this run; reaps the dead ones.

        An orphan of the run: a child of ours we did not spawn through a Launched, not
        there before the launch, created after the command was, and not carrying another
        launch's key (runs side by side in one supervisor, as shards are, stay apart).
        """
        if not self._adopts:
            return []
        with _OURS_LOCK:
            skip = self._before | _OURS
        found = []
        try:
            kids = psutil.Process().children()
        except psutil.Error:
            return []
        for p in kids:
            try:
                if p.pid in skip or p.create_time() < self._since:
                    continue
                zombie = p.status() == psutil.STATUS_ZOMBIE
            except psutil.Error:
                continue
            if zombie:
                _reap(p.pid)
            elif _launch_key(p) in (None, self.key):
                found.append(p)
        return found

    def members(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for root in ([self._main] if self._main else []) + self._adopted():
            found.update((p.pid, p) for p in _tree(root))
        found.pop(os.getpid(), None)
        return sorted(found.values(), key=lambda p: p.pid)

    def end(self, grace: float = 0.3) -> list[str]:
        notes = end_ladder(self.members, grace).notes()
        try:
            self._popen.wait(5)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()
        self._adopted()   # reap what we adopted and ended
        return notes

    def kill(self) -> None:
        for _ in range(3):
            procs = self.members()
            if not procs:
                break
            for p in procs:
                send(p, signal.SIGKILL)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._popen.poll()
        self._adopted()
        self._forget()


def _launch_key(p: psutil.Process) -> str | None:
    try:
        return p.environ().get(ENV_LAUNCH)
    except (psutil.Error, OSError):
        return None


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# -- launching ------------------------------------------------------------------------

_SUBREAPER_DONE = False


def _become_subreaper() -> None:
    """Once per process: orphans of our descendants are re-parented to us from now on."""
    global _SUBREAPER_DONE
    if not _SUBREAPER_DONE:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        _SUBREAPER_DONE = True


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send us `sig` when our parent dies (Linux; a no-op elsewhere)."""
    try:
        _prctl(PR_SET_PDEATHSIG, int(sig))
    except (OSError, AttributeError):
        pass


def launch(argv: list[str], *, cwd, env: dict, containment: Containment,
           pass_fds=(), stdout: int | None = None, private_tmp: str | None = None,
           keep=(), private_shm: str | None = None) -> Launched:
    """Start `argv` in `cwd` with exactly `env` (plus its launch key), contained as
    `containment` says; `stdout` (an fd) takes the command's stdout and stderr.

    `private_tmp` (contained only; the run's private dir): the run gets its own /tmp, an
    overlay over the real one whose writes land in `private_tmp`/.tmp/upper (that is
    `tmp_root()`); the dirs in `keep` (and `private_tmp`) stay the real ones.
    `private_shm` (contained only; a tmpfs size such as "25%"): the run gets its own
    /dev/shm of that size (`shm_root()`), gone with its namespace.
    """
    if not argv:
        raise usage("nothing to launch: empty command")
    if containment.mode not in MODES:
        raise usage(f"containment {containment.mode!r}: expected one of {', '.join(MODES)}")
    key = uuid.uuid4().hex
    env = {**env, ENV_LAUNCH: key}
    if containment.mode == "namespaces":
        run = _launch_contained(list(argv), cwd, env, tuple(pass_fds), containment, stdout,
                                private_tmp, keep, private_shm)
    else:
        run = _launch_plain(list(argv), cwd, env, tuple(pass_fds), containment, stdout)
    run.key = key
    return run


def _launch_contained(argv, cwd, env, pass_fds, containment, stdout=None,
                      private_tmp=None, keep=(), private_shm=None) -> Launched:
    status_r, status_w = os.pipe()   # both ends close-on-exec: only what we pass is passed
    ctl_r, ctl_w = os.pipe()
    tmp = (["--private-tmp", str(private_tmp), "--keep", os.pathsep.join(map(str, keep))]
           if private_tmp is not None else [])
    if private_shm:
        tmp += ["--private-shm", str(private_shm)]
    wrapped = [shutil.which("unshare") or "unshare", *UNSHARE_FLAGS, sys.executable, "-I",
               "-S", str(INIT), "--ctl", str(ctl_r), "--status", str(status_w),
               "--hold", str(HOLD), *tmp, "--", *argv]
    try:
        popen = subprocess.Popen(wrapped, cwd=cwd, env=env, stdout=stdout,
                                 stderr=subprocess.STDOUT if stdout is not None else None,
                                 pass_fds=(ctl_r, status_w, *pass_fds),
                                 # no parent-death signal here: killed with us, pytest
                                 # would orphan its children with nothing pointing back
                                 # to the run; alive, the next sweep ends its whole tree
                                 preexec_fn=_child_setup(pdeathsig=False))
    except OSError as err:
        for fd in (status_r, ctl_w):
            os.close(fd)
        raise TaskError(f"contained launch failed: {err}") from None
    finally:
        os.close(ctl_r)
        os.close(status_w)
    run = _Contained(containment, popen, status_r, ctl_w)
    run._tmp = Path(private_tmp, ".tmp", "upper") if private_tmp is not None else None
    run._started()
    return run


def _launch_plain(argv, cwd, env, pass_fds, containment, stdout=None) -> Launched:
    before: set[int] = set()
    subreaper = containment.mode == "subreaper"
    if subreaper:
        _become_subreaper()
        before = {c.pid for c in psutil.Process().children()}
    try:
        popen = subprocess.Popen(argv, cwd=cwd, env=env, pass_fds=pass_fds, stdout=stdout,
                                 stderr=subprocess.STDOUT if stdout is not None else None,
                                 # no parent-death signal here: killed with us, pytest
                                 # would orphan its children with nothing pointing back
                                 # to the run; alive, the next sweep ends its whole tree
                                 preexec_fn=_child_setup(pdeathsig=False))
    except OSError as err:
        raise TaskError(f"cannot start {argv[0]}: {err.strerror or err}") from None
    return _Plain(containment, popen, before)
