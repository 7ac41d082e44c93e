"""The footprint recorder: which code of the target's package each process executes.

tractor-tasks puts this file's dir first on PYTHONPATH for pytest, so every Python
process of the run that honours the environment (pytest, its subactors, the
forkserver and its forks, a daemon it starts) loads it at start-up. It imports
nothing of tractor-tasks and reads its settings from the environment:

  TRACTOR_TASKS_FP_DIR    where to write: one append-only file per process
  TRACTOR_TASKS_FP_ROOTS  the dirs whose code is recorded (os.pathsep-separated;
                          each "ROOT=DIR": record files under DIR, named relative to ROOT)
  TRACTOR_TASKS_FP_TOOL   the sys.monitoring tool id (default 4)

Each file is lines, written with one O_APPEND write each as they happen (a process
killed with SIGKILL loses nothing it reported):
  P <json>                   the process: pid, start tick, argv, the test in its
                             environment, how it records ("monitoring", "settrace", or
                             "blind" with why)
  C <time> <file> <line> <qualname> <phase>
                             a code object run for the first time since the last arm
  T <time> <nodeid>          (pytest only, from the probe) a test begins: re-arm
  H <time> <phase>           (pytest only) the test's phase changes
  X <time>                   a clean exit (atexit; often never written)

Python 3.12+: sys.monitoring, a PY_START callback that returns DISABLE (each code
object reported once per arm). Below 3.12: sys.settrace and threading.settrace, 'call'
events against a first-seen set (no local tracer). Then it chains to the next
`sitecustomize` on the path, as if this one were not there.
"""
import os
import sys


def _setup():
    out_dir = os.environ.get("TRACTOR_TASKS_FP_DIR")
    roots_env = os.environ.get("TRACTOR_TASKS_FP_ROOTS")
    if not out_dir or not roots_env or not os.path.isdir(out_dir):
        return None
    roots = []
    for item in roots_env.split(os.pathsep):
        root, _, sub = item.partition("=")
        if root and sub:
            roots.append((sub.rstrip("/") + "/", root.rstrip("/") + "/"))
    if not roots:
        return None
    return _Recorder(out_dir, tuple(roots))


def _start_tick():
    try:
        with open("/proc/self/stat") as f:
            return int(f.read().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


class _Recorder:
    def __init__(self, out_dir, roots):
        self.out_dir = out_dir
        self.roots = roots
        self.fd = -1
        self.phase = "-"
        self.how = None
        self.seen = set()
        self.want = {}
        self.tool = None
        self.blind = None
        self._open(forked=False)

    # -- output ------------------------------------------------------------------
    def _open(self, forked):
        import json
        import time
        pid = os.getpid()
        tick = _start_tick()
        path = os.path.join(self.out_dir, f"{tick}-{pid}.fp")
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                              0o644)
        except OSError:
            self.fd = -1
            return
        head = {"pid": pid, "ppid": os.getppid(), "tick": tick, "start": time.time(),
                "argv": list(getattr(sys, "orig_argv", sys.argv)),
                "test": os.environ.get("PYTEST_CURRENT_TEST", ""), "forked": forked,
                "py": "%d.%d" % sys.version_info[:2]}
        self.head = head
        self._emit("P\t" + json.dumps(head) + "\n")

    def _emit(self, line):
        if self.fd >= 0:
            try:
                os.write(self.fd, line.encode("utf-8", "replace"))
            except OSError:
                pass

    def note(self, how, why=""):
        import json
        self.how = how
        self._emit("N\t" + json.dumps({"how": how, "why": why}) + "\n")

    def _code(self, code):
        want = self.want.get(code.co_filename)
        if want is None:
            want = False
            name = code.co_filename
            for sub, root in self.roots:
                if name.startswith(sub):
                    want = name[len(root):]
                    break
            self.want[name] = want
        if want:
            import time
            qual = getattr(code, "co_qualname", code.co_name)
            self._emit(f"C\t{time.time():.6f}\t{want}\t{code.co_firstlineno}\t{qual}"
                       f"\t{self.phase}\n")

    # -- the two ways of seeing code run ------------------------------------------
    def start(self):
        mon = getattr(sys, "monitoring", None)
        if mon is not None:
            tool = int(os.environ.get("TRACTOR_TASKS_FP_TOOL", "4") or 4)
            holder = mon.get_tool(tool)
            if holder is not None:
                self.blind = f"sys.monitoring tool id {tool} is taken by {holder!r}"
                self.note("blind", self.blind)
                return
            mon.use_tool_id(tool, "tractor-tasks-footprint")
            disable = mon.DISABLE
            code_seen = self._code

            def on_start(code, offset):
                code_seen(code)
                return disable

            mon.register_callback(tool, mon.events.PY_START, on_start)
            mon.set_events(tool, mon.events.PY_START)
            self.tool = tool
            self.note("monitoring")
        else:
            if sys.gettrace() is not None:
                self.blind = "another tracer (sys.settrace) is active"
                self.note("blind", self.blind)
                return
            seen = self.seen
            code_seen = self._code

            def tracer(frame, event, arg):
                if event == "call":
                    code = frame.f_code
                    if code not in seen:
                        seen.add(code)
                        code_seen(code)
                return None

            import threading
            sys.settrace(tracer)
            threading.settrace(tracer)
            self.note("settrace")
        os.register_at_fork(after_in_child=self._forked)
        import atexit
        atexit.register(self._exit)

    def rearm(self):
        """Report every code object again from now on (monitoring: restart_events
        re-arms the DISABLEd events of every tool; the others get them once more)."""
        if self.tool is not None:
            sys.monitoring.restart_events()
        else:
            self.seen.clear()

    def _forked(self):
        self.fd = -1
        self._open(forked=True)
        self.note(self.how or "blind", self.blind or "")
        self.phase = "-"
        self.rearm()

    def _exit(self):
        import time
        self._emit(f"X\t{time.time():.6f}\n")

    # -- the probe's calls (pytest's process) ---------------------------------------
    def begin(self, nodeid):
        import time
        self.phase = "setup"
        self._emit(f"T\t{time.time():.6f}\t{nodeid}\n")
        self.rearm()

    def set_phase(self, phase):
        import time
        self.phase = phase
        self._emit(f"H\t{time.time():.6f}\t{phase}\n")


def _chain():
    """Load the next `sitecustomize` on the path (the one this file hides)."""
    import importlib.machinery
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = mod
    spec.loader.exec_module(mod)


try:
    recorder = _setup()
    if recorder is not None:
        recorder.start()
        sys.modules["_tractor_tasks_footprint"] = sys.modules[__name__]
except Exception:  # never break the process under test
    recorder = None

_chain()
