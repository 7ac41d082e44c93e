"""A hung or timed-out pass's stacks: every process of the run dumped (py-spy, else
wchan and kernel stacks), then SIGUSR1 to those with a handler and what they print
read back; the stalls /proc shows first. Written to the pass's stacks.txt.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import stalls
from .fsutil import atomic_write
from .probelog import read_text
from .processes import Proc, nested_pid
from .rundirs import PassDir

SIGUSR1_BIT = 1 << (signal.SIGUSR1 - 1)


def _handles_sigusr1(pid: int) -> bool:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & SIGUSR1_BIT)
    except (OSError, ValueError):
        pass
    return False


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


def _captured_files(pid: int) -> dict[tuple[int, int], tuple[str, int]]:
    """Its stdout/stderr when they are regular files (pytest's capture files, which
    hold what a SIGUSR1 handler prints during a test): file id -> (path, size now)."""
    out = {}
    for fd in (1, 2):
        link = f"/proc/{pid}/fd/{fd}"
        try:
            st = os.stat(link)
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o100000:
            out[(st.st_dev, st.st_ino)] = (link, st.st_size)
    return out


def _grown(link: str, since: int) -> str:
    try:
        with open(link, "rb") as f:
            f.seek(since)
            return f.read(256 * 1024).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _files(root: Path | None) -> dict[Path, int]:
    """Files (not dirs) right under `root`, with their sizes now."""
    out = {}
    try:
        for f in root.iterdir() if root is not None else ():
            try:
                if f.is_file():
                    out[f] = f.stat().st_size
            except OSError:
                continue
    except OSError:
        pass
    return out


def dump_stacks(procs: list[Proc], pass_dir: Path, tmp: Path | None = None,
                main_pid: int | None = None) -> tuple[Path, str]:
    """Python stacks of every process of the run, into `stacks.txt` (and returned).

    py-spy by host pid when installed; else wchan and kernel stacks. Then SIGUSR1 to
    the processes whose signal mask shows a handler (the probe's faulthandler in
    pytest; the target's own, e.g. tractor's stackscope task trees): what they print
    is read back from the probe's file, pytest's capture files, and new files in the
    run's own /tmp (`tmp`: tractor writes its stackscope dumps to /tmp/tractor-stackscope-
    <pid>.log).

    The text starts with the stalls read off /proc before anything is signalled (a
    process blocked writing to a pipe nobody drains: see stalls.py), one `STALL:` line
    each; `main_pid` is pytest's.
    """
    report = PassDir(pass_dir).dump
    pyspy = shutil.which("py-spy")
    parts, asked = [], []
    found = stalls.diagnose([p.pid for p in procs], main_pid)
    if found:
        parts.append("\n".join(found))
    for p in procs:
        ns = nested_pid(p.pid)
        head = f"=== pid {p.pid}{f' (pid {ns} in the run)' if ns else ''} ppid {p.ppid}: {p.title}"
        if pyspy:
            try:
                got = subprocess.run([pyspy, "dump", "--pid", str(p.pid)], capture_output=True,
                                     text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                got = None
            if got is not None and got.returncode == 0:
                parts.append(f"{head} (py-spy)\n{got.stdout.rstrip()}")
                continue
        kernel = _read(f"/proc/{p.pid}/stack")
        parts.append(f"{head}\nwchan: {_read(f'/proc/{p.pid}/wchan')}"
                     + (f"\nkernel stack:\n{kernel}" if kernel not in ("?", "") else ""))
    before = _files(tmp)
    captured: dict[tuple[int, int], tuple[str, int, list[int]]] = {}
    for p in procs:
        if _handles_sigusr1(p.pid):
            files = _captured_files(p.pid)
            if p.signal(signal.SIGUSR1):
                asked.append(p)
                for key, (link, size) in files.items():
                    captured.setdefault(key, (link, size, []))[2].append(p.pid)
    if asked:
        time.sleep(1.0)  # let the handlers write (task-tree dumps take a moment)
        for link, size, pids in captured.values():
            text = _grown(link, size)
            if text:
                parts.append(f"=== SIGUSR1 output captured by pytest (pids "
                             f"{', '.join(map(str, pids))})\n{text}")
        for f, size in sorted(_files(tmp).items()):
            text = _grown(str(f), before.get(f, 0))
            if text:
                parts.append(f"=== SIGUSR1 output in the run's /tmp: {f.name}\n{text}")
        for dump in PassDir(pass_dir).probe_stacks():
            text = read_text(dump).strip()   # a test may have put a FIFO or a link there
            if text:
                parts.append(f"=== SIGUSR1 dump {dump.name}\n{text}")
    text = "\n\n".join(parts) + "\n"
    try:
        atomic_write(report, text, replace_link=True)
    except OSError:
        pass   # the text still goes with the result
    return report, text
