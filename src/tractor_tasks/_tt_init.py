"""pid 1 of a contained run (see contain.py): starts the command, reaps, forwards, holds.

Run by `unshare` as
`python -I -S _tt_init.py --ctl FD --status FD [--hold S] [--private-tmp DIR --keep PATHS]
 [--private-shm SIZE] -- ARGV...`,
so standard library only: it must not import tractor_tasks or psutil.

  status pipe (we write):  `started <ns pid>`, `exited <status>` (Popen-style: negative
                           signal number), or `error <message>` when nothing could start;
                           before `started`, `shm private` or `shm shared <why>`.
  control pipe (we read):  `go` or EOF ends us at once; the kernel then SIGKILLs whatever
                           is left in the namespace. EOF means the supervisor is gone.

After the command exits we HOLD (everything left alive stays alive, so the supervisor
can count leftovers) until `go`, EOF, SIGTERM/SIGHUP, or `--hold` seconds pass.

Signals: pid 1 ignores every signal it has no handler for, so ours are blocked and
taken with sigtimedwait. SIGINT, SIGTERM and SIGHUP that a process outside the
namespace sent (the supervisor) are forwarded to the command; the kernel's (the
terminal's Ctrl-C) are not, because the command shares our process group and got them
already; and a process of the run signalling pid 1 gets what any pid 1 gives: nothing.
"""
from __future__ import annotations

import _signal as signal   # C modules: `signal`, `socket` and `threading` import enum,
import _socket as socket   # which would triple our start-up (every launch waits for it)
import _thread
import fcntl
import os
import struct
import sys
import time

WAITED = {signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
# the command starts with these at default and an empty mask, whatever we inherited
RESET = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE,
         signal.SIGXFSZ, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGCHLD)
SI_USER, SI_QUEUE, SI_TKILL = 0, -1, -6   # si_code of a signal sent by a process
FROM_A_PROCESS = (SI_USER, SI_QUEUE, SI_TKILL)
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


class Init:
    def __init__(self, ctl: int, status: int, hold: float):
        self.ctl, self.status_fd, self.hold = ctl, status, hold
        self.command: int | None = None      # ns pid, until reaped
        self.status: int | None = None       # Popen-style exit status of the command
        self.exited_at: float | None = None

    # -- talking to the supervisor ------------------------------------------------------

    def report(self, line: str) -> None:
        try:
            os.write(self.status_fd, (line + "\n").encode())
        except OSError:          # the supervisor is gone: so is the run
            self.leave()

    def leave(self) -> None:
        """Exit now; as pid 1 that ends the namespace and everything in it."""
        st = self.status if self.status is not None else -signal.SIGKILL
        os._exit(st if st >= 0 else 128 - st)

    def watch_control(self) -> None:
        """Thread: `go` or EOF on the control pipe ends us at once."""
        while True:
            try:
                chunk = os.read(self.ctl, 256)
            except OSError:
                chunk = b""
            if not chunk or b"go" in chunk.split():
                self.leave()

    # -- the command -------------------------------------------------------------------

    def start(self, argv: list[str]) -> None:
        try:
            self.command = os.posix_spawnp(argv[0], argv, os.environ, setsigmask=(),
                                           setsigdef=RESET)
        except OSError as err:
            self.report(f"error cannot start {argv[0]}: {err.strerror}")
            self.status = 127 if isinstance(err, FileNotFoundError) else 126
            self.leave()
        self.report(f"started {self.command}")

    def reap(self) -> None:
        """Reap every child: orphans of the namespace all come to us."""
        while True:
            try:
                pid, raw = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.command:
                self.command = None
                self.status = os.waitstatus_to_exitcode(raw)
                self.exited_at = time.monotonic()
                self.report(f"exited {self.status}")

    def on_signal(self, info) -> None:
        if info.si_signo == signal.SIGCHLD or not from_outside(info):
            return
        if self.command is None:          # holding: a polite end request ends the hold
            if info.si_signo in (signal.SIGTERM, signal.SIGHUP):
                self.leave()
            return
        try:
            os.kill(self.command, info.si_signo)
        except ProcessLookupError:
            pass

    def run(self) -> None:
        while True:
            self.reap()
            timeout = 1.0
            if self.exited_at is not None:
                timeout = self.exited_at + self.hold - time.monotonic()
                if timeout <= 0:
                    self.leave()
            info = signal.sigtimedwait(WAITED, min(timeout, 1.0))
            if info is not None:
                self.on_signal(info)


def from_outside(info) -> bool:
    """Sent by a process outside the namespace (the supervisor, a user's `kill`)?

    Not the kernel: a terminal's Ctrl-C or hangup goes to the whole foreground process
    group, which the command is in, so it has that signal already. Not a process of the
    run: for them we are an ordinary pid 1, deaf to what we do not handle (their sender
    pid is visible to us; an outside sender's shows as 0).
    """
    return info.si_code in FROM_A_PROCESS and info.si_pid == 0


def loopback_up() -> None:
    """A new network namespace has `lo` down; bring it up (no `ip` binary needed)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        raw = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0))
        flags = struct.unpack("16sH22x", raw)[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    finally:
        s.close()


def drop_ambient_caps() -> None:
    """unshare --keep-caps gave us ambient caps (to raise `lo`); the command gets none.

    (Mapped to uid 0, the command gets every cap of the namespace at exec anyway.)
    """
    with open("/proc/self/status") as f:
        amb = next((line.split()[1] for line in f if line.startswith("CapAmb:")), "0")
    if int(amb, 16) and os.getuid() != 0:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_CLEAR_ALL) failed")


MS_BIND = 0x1000


def private_tmp(base: str, keep: list[str]) -> None:
    """The run's own /tmp: an overlay whose lower layer is the real /tmp (all of it stays
    readable) and whose upper layer is `base`/.tmp, so what the run writes there
    (tractor's stackscope logs, its tests' scratch files) lands in the run's private dir,
    readable from outside and removed with it. `keep` (the target, the private dir) are
    bound back, so writes there reach the real files. Best effort: a kernel that refuses
    an overlay in a user namespace leaves /tmp as it is."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    def mount(src, dst, fstype, flags, data):
        if libc.mount(src, dst, fstype, flags, data) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {dst.decode()}: {os.strerror(err)}")
    upper, work = os.path.join(base, ".tmp", "upper"), os.path.join(base, ".tmp", "work")
    for d in (upper, work):
        os.makedirs(d, mode=0o700, exist_ok=True)
    keep = [k for k in keep if k and os.path.realpath(k).startswith("/tmp/")]
    fds = [(os.open(k, os.O_PATH | os.O_DIRECTORY), k) for k in keep if os.path.isdir(k)]
    try:
        mount(b"overlay", b"/tmp", b"overlay", 0,
              f"lowerdir=/tmp,upperdir={upper},workdir={work}".encode())
    except OSError:
        for fd, _ in fds:
            os.close(fd)
        return
    for fd, path in fds:
        mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND, None)
        os.close(fd)


def private_shm(size: str) -> None:
    """The run's own /dev/shm: a fresh tmpfs of `size` (tmpfs syntax: "25%", "512m")
    mounted over the host's in our mount namespace. POSIX shared memory the run makes
    (shm_open, multiprocessing.shared_memory) lands there, never on the host, and goes
    with the namespace; the supervisor reads what is left through /proc/<our pid>/root."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    os.makedirs("/dev/shm", exist_ok=True)
    data = f"size={size},mode=1777".encode()
    if libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount /dev/shm: {os.strerror(err)}")


MS_NOSUID, MS_NODEV = 0x2, 0x4


def parse(argv: list[str]):
    opts, cmd = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    got = dict(zip(opts[::2], opts[1::2]))
    keep = [k for k in got.get("--keep", "").split(os.pathsep) if k]
    return (int(got["--ctl"]), int(got["--status"]), float(got.get("--hold", 30)),
            got.get("--private-tmp"), keep, got.get("--private-shm"), cmd)


def main(argv: list[str]) -> None:
    ctl, status, hold, tmp, keep, shm, cmd = parse(argv)
    for fd in (ctl, status):   # the command must not hold them: EOF means "supervisor gone"
        os.set_inheritable(fd, False)
    init = Init(ctl, status, hold)
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)   # before any thread exists
    for sig in WAITED:
        signal.signal(sig, signal.SIG_DFL)             # SIG_IGN would auto-reap / drop
    try:
        loopback_up()
        if tmp:
            private_tmp(tmp, [tmp, *keep])
        if shm:
            try:
                private_shm(shm)
                init.report("shm private")
            except OSError as err:   # the run still goes, on the host's /dev/shm
                init.report(f"shm shared {err.strerror or err}")
        drop_ambient_caps()
    except OSError as err:
        init.report(f"error cannot set up the namespace: {err}")
        init.status = 126
        init.leave()
    init.start(cmd)   # first, so the command is pid 2
    _thread.start_new_thread(init.watch_control, ())
    init.run()


if __name__ == "__main__":
    main(sys.argv[1:])
