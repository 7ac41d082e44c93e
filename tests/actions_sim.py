"""Run a GitHub Actions workflow's jobs on this machine the way GitHub's runner would, for
tests: the origin is a bare repo, each job gets a fresh workspace checked out as
actions/checkout does it (`git init`, `git fetch --depth=N origin +SHA:REF`, checkout;
a pull request's merge ref `refs/pull/N/merge` detached), the GITHUB_* variables and
an event JSON file, `${{ }}` expressions (the subset the workflow uses), and artifacts
and the cache as directories. Steps run with `bash --noprofile --norc -eo pipefail`,
as GitHub runs them.

What is emulated and not run: astral-sh/setup-uv (uv is already on PATH here) and the
step whose id is `setup` (it installs Python and tractor-tasks from the network; here
this checkout's venv is put on PATH instead). Every other step runs as written.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SETUP_STEP = "setup"


def git(*args, cwd: Path, check: bool = True) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and out.returncode:
        raise RuntimeError(f"git {' '.join(args)} in {cwd}: {out.stderr.strip()}")
    return out.stdout.strip()


# -- expressions ---------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)"
                    r"|(?P<op>==|!=|&&|\|\||!|\(|\)|,)"
                    r"|(?P<name>[A-Za-z_][\w-]*(?:\.[\w-]+)*))")
_FUNCS = {"fromJSON": json.loads, "toJSON": json.dumps, "always": lambda: True,
          "success": None, "failure": None, "cancelled": lambda: False}


def evaluate(expr: str, ctx: dict, *, failed: bool = False):
    """A `${{ }}` expression: context paths, literals, == != && || !, fromJSON, the
    status functions. Anything else is refused (the workflow would need more here)."""
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot evaluate {expr!r} at {expr[pos:]!r}")
        pos = m.end()
        if m["str"]:
            out.append(repr(m["str"][1:-1].replace("''", "'")))
        elif m["num"]:
            out.append(m["num"])
        elif m["op"]:
            out.append({"&&": " and ", "||": " or ", "!": " not "}.get(m["op"], m["op"]))
        else:
            name = m["name"]
            if name in ("true", "false", "null"):
                out.append({"true": "True", "false": "False", "null": "None"}[name])
            elif name in _FUNCS:
                out.append(f"_f[{name!r}]")
            else:
                out.append(f"_get({name!r})")

    def _get(path: str):
        value = ctx
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value
    funcs = dict(_FUNCS, success=lambda: not failed, failure=lambda: failed)
    return eval("".join(out), {"__builtins__": {}}, {"_get": _get, "_f": funcs})  # noqa: S307


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def interpolate(value, ctx: dict, *, failed: bool = False):
    """`${{ }}` inside a string; a string that is one expression keeps its value's type."""
    if not isinstance(value, str):
        return value
    whole = re.fullmatch(r"\s*\$\{\{((?:(?!\}\}).)*)\}\}\s*", value, re.S)
    if whole:
        return evaluate(whole[1], ctx, failed=failed)
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: _text(evaluate(m[1], ctx, failed=failed)),
                  value, flags=re.S)


# -- the run --------------------------------------------------------------------------------

@dataclass
class Event:
    name: str                  # push, pull_request, ...
    payload: dict
    ref: str                   # refs/heads/main, refs/pull/1/merge
    sha: str                   # what is checked out
    head_ref: str = ""         # a pull request's head branch
    base_ref: str = ""         # a pull request's base branch


@dataclass
class JobRun:
    name: str
    code: int                          # 0 every step passed, else the first failure's
    outputs: dict = field(default_factory=dict)
    summary: str = ""                  # every step's $GITHUB_STEP_SUMMARY, in order
    log: str = ""
    workspace: Path | None = None


class Runner:
    """One workflow run: its event, its artifacts and the repository's cache."""

    def __init__(self, workflow: Path, origin: Path, work: Path, event: Event, *,
                 tool_bin: Path, cache: Path, run_id: int = 1, env: dict | None = None):
        self.wf = yaml.safe_load(Path(workflow).read_text())
        self.origin, self.work, self.event = Path(origin), Path(work), event
        self.tool_bin, self.cache, self.run_id = Path(tool_bin), Path(cache), run_id
        self.artifacts = self.work / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.base_env = dict(os.environ if env is None else env)
        for k in list(self.base_env):
            if k.startswith(("GITHUB_", "RUNNER_")):
                del self.base_env[k]
        self.event_path = self.work / "event.json"
        self.event_path.write_text(json.dumps(event.payload))
        self.needs: dict[str, dict] = {}
        self._jobs = 0

    def github(self, workspace: Path) -> dict:
        e = self.event
        return {"event_name": e.name, "event": e.payload, "ref": e.ref, "sha": e.sha,
                "ref_name": e.ref.split("/", 2)[-1], "head_ref": e.head_ref,
                "base_ref": e.base_ref, "run_id": str(self.run_id), "run_attempt": "1",
                "repository": e.payload.get("repository", {}).get("full_name", "o/r"),
                "workspace": str(workspace), "event_path": str(self.event_path)}

    def matrix(self, job: str) -> list[dict]:
        """The matrix rows of a job, from its `needs` outputs (fromJSON) as GitHub expands
        them (only `include` lists are used here)."""
        spec = self.wf["jobs"][job]["strategy"]["matrix"]
        value = interpolate(spec, {"needs": self.needs})
        return list(value["include"])

    def run_job(self, job: str, matrix: dict | None = None, index: int = 0) -> JobRun:
        spec = self.wf["jobs"][job]
        self._jobs += 1
        home = self.work / "jobs" / f"{self._jobs:02d}-{job}-{index}"
        workspace, temp = home / "ws", home / "temp"
        workspace.mkdir(parents=True)
        temp.mkdir()
        ctx = {"github": self.github(workspace), "matrix": matrix or {},
               "strategy": {"job-index": index}, "needs": self.needs,
               "runner": {"os": "Linux", "temp": str(temp)}, "steps": {}, "env": {}}
        env = dict(self.base_env)
        ctx["env"] = {}
        for k, v in (self.wf.get("env") or {}).items():
            ctx["env"][k] = _text(interpolate(v, ctx))
        for k, v in (spec.get("env") or {}).items():
            ctx["env"][k] = _text(interpolate(v, ctx))
        path_extra: list[str] = []
        run = JobRun(f"{job}[{index}]", 0, workspace=workspace)
        deadline = time.monotonic() + 60 * float(spec.get("timeout-minutes", 360))
        logs: list[str] = []
        for n, step in enumerate(spec["steps"]):
            failed = run.code != 0
            cond = step.get("if")
            go = evaluate(cond.replace("${{", "").replace("}}", ""), ctx, failed=failed) \
                if cond else not failed
            if not go:
                continue
            files = {k: home / f"{k.lower()}-{n}" for k in ("OUTPUT", "ENV", "PATH",
                                                              "STEP_SUMMARY")}
            for f in files.values():
                f.write_text("")
            step_env = dict(env) | ctx["env"]
            for k, v in (step.get("env") or {}).items():
                step_env[k] = _text(interpolate(v, ctx))
            step_env |= {
                "CI": "true", "GITHUB_ACTIONS": "true", "RUNNER_OS": "Linux",
                "RUNNER_TEMP": str(temp), "GITHUB_WORKSPACE": str(workspace),
                "GITHUB_EVENT_NAME": self.event.name, "GITHUB_EVENT_PATH": str(self.event_path),
                "GITHUB_SHA": self.event.sha, "GITHUB_REF": self.event.ref,
                "GITHUB_REF_NAME": ctx["github"]["ref_name"],
                "GITHUB_HEAD_REF": self.event.head_ref, "GITHUB_BASE_REF": self.event.base_ref,
                "GITHUB_RUN_ID": str(self.run_id), "GITHUB_RUN_ATTEMPT": "1",
                "GITHUB_REPOSITORY": ctx["github"]["repository"], "GITHUB_JOB": job,
                **{f"GITHUB_{k}": str(f) for k, f in files.items()}}
            step_env["PATH"] = os.pathsep.join(path_extra + [step_env.get("PATH", "")])
            with_ = {k: interpolate(v, ctx) for k, v in (step.get("with") or {}).items()}
            name = step.get("name") or step.get("uses") or step.get("run", "").split("\n")[0]
            try:
                if step.get("id") == SETUP_STEP:
                    path_extra.insert(0, str(self.tool_bin))
                    code, out = 0, f"(emulated: {self.tool_bin} on PATH)"
                elif "uses" in step:
                    code, out = self._uses(step["uses"], with_, workspace)
                else:
                    code, out = self._run(interpolate(step["run"], ctx), workspace, step_env,
                                          deadline - time.monotonic())
            except subprocess.TimeoutExpired:
                code, out = 124, "the job's timeout-minutes expired"
            logs.append(f"## {name}: exit {code}\n{out}")
            outputs = _key_values(files["OUTPUT"].read_text())
            if step.get("id"):
                ctx["steps"][step["id"]] = {"outputs": outputs}
            env |= _key_values(files["ENV"].read_text())
            path_extra = [p for p in files["PATH"].read_text().splitlines() if p] + path_extra
            run.summary += files["STEP_SUMMARY"].read_text()
            if code and not run.code:
                run.code = code
        run.outputs = {k: _text(interpolate(v, ctx)) for k, v in (spec.get("outputs") or {}).items()}
        self.needs[job] = {"outputs": run.outputs,
                           "result": "success" if run.code == 0 else "failure"}
        run.log = "\n".join(logs)
        return run

    def _run(self, script: str, cwd: Path, env: dict, left: float) -> tuple[int, str]:
        f = cwd.parent / f"step-{time.monotonic_ns()}.sh"
        f.write_text(script)
        out = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(f)],
                             cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=max(left, 1), stdin=subprocess.DEVNULL)
        return out.returncode, out.stdout + out.stderr

    # -- the actions, as directories -------------------------------------------------------

    def _uses(self, uses: str, with_: dict, ws: Path) -> tuple[int, str]:
        action = uses.split("@")[0]
        if action == "actions/checkout":
            return 0, self._checkout(ws, int(with_.get("fetch-depth", 1)))
        if action == "astral-sh/setup-uv":
            return 0, "(emulated: uv is on PATH)"
        if action == "actions/cache/restore":
            return 0, self._restore(ws, with_)
        if action == "actions/cache/save":
            return self._save(ws, with_)
        if action == "actions/upload-artifact":
            return self._upload(ws, with_)
        if action == "actions/download-artifact":
            dest = ws / with_.get("path", ".")
            dest.mkdir(parents=True, exist_ok=True)
            for art in sorted(self.artifacts.iterdir()):
                shutil.copytree(art, dest / art.name, dirs_exist_ok=True)
            return 0, f"downloaded {len(list(self.artifacts.iterdir()))} artifact(s)"
        raise ValueError(f"no emulation for {uses}")

    def _checkout(self, ws: Path, depth: int) -> str:
        """As actions/checkout@v4: init, fetch the event's commit into its ref, check out
        (a branch for a push, the merge ref detached for a pull request)."""
        e = self.event
        git("init", "-q", cwd=ws)
        git("remote", "add", "origin", self.origin.as_uri(), cwd=ws)
        if e.ref.startswith("refs/pull/"):
            dest = "refs/remotes/pull/" + e.ref.removeprefix("refs/pull/")
        else:
            dest = "refs/remotes/origin/" + e.ref.removeprefix("refs/heads/")
        if depth > 0:
            git("fetch", "--no-tags", "--prune", f"--depth={depth}", "origin",
                f"+{e.sha}:{dest}", cwd=ws)
        else:
            git("fetch", "--tags", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*", cwd=ws)
            if e.ref.startswith("refs/pull/"):
                git("fetch", "--no-tags", "origin", f"+{e.sha}:{dest}", cwd=ws)
        if e.ref.startswith("refs/heads/"):
            git("checkout", "-q", "--force", "-B", e.ref.removeprefix("refs/heads/"), dest, cwd=ws)
        else:
            git("checkout", "-q", "--force", dest, cwd=ws)
        return f"checked out {e.sha[:12]} ({e.ref}, depth {depth or 'all'})"

    def _restore(self, ws: Path, with_: dict) -> str:
        keys = [with_["key"]] + [k for k in str(with_.get("restore-keys") or "").splitlines()
                                 if k.strip()]
        saved = sorted(self.cache.iterdir(), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for i, key in enumerate(keys):
            hit = next((p for p in saved if (p.name == key if i == 0 else
                                             p.name.startswith(key.strip()))), None)
            if hit:
                for path in str(with_["path"]).split():
                    src = hit / path
                    if src.exists():
                        (ws / path).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, ws / path)
                return f"restored cache {hit.name}"
        return "cache not found"

    def _save(self, ws: Path, with_: dict) -> tuple[int, str]:
        dest = self.cache / with_["key"]
        if dest.exists():
            return 0, f"cache {dest.name} exists: not saved"
        found = False
        for path in str(with_["path"]).split():
            if (ws / path).exists():
                (dest / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ws / path, dest / path)
                found = True
        return (0, f"saved cache {dest.name}") if found else (0, "nothing to cache")

    def _upload(self, ws: Path, with_: dict) -> tuple[int, str]:
        src = ws / with_["path"]
        dest = self.artifacts / with_["name"]
        files = [src] if src.is_file() else (
            [p for p in src.rglob("*") if p.is_file()] if src.is_dir() else [])
        if not files:
            mode = with_.get("if-no-files-found", "warn")
            return (1 if mode == "error" else 0), f"no files at {with_['path']} ({mode})"
        if dest.exists():
            return 1, f"an artifact named {with_['name']} exists"
        if src.is_file():
            dest.mkdir(parents=True)
            shutil.copy2(src, dest / src.name)
        else:
            shutil.copytree(src, dest)
        return 0, f"uploaded {len(files)} file(s) as {with_['name']}"


def _key_values(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out
