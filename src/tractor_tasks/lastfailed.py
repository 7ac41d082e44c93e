"""pytest's lastfailed cache, as `invoke lastfailed` reads it: which caches (the
target's, where its last run's pytest said it is; a nox cell's own; every cell's),
and the node ids in one, read as JSON (no collection, no import of the tests).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import TaskError, usage
from .fsutil import atomic_write
from .probelog import ProbeLog
from .rundirs import PYTEST_CACHE, State, lastfailed_path, pass_dirs
from .target import Target, under_tests


def read_lastfailed(target: Target, path: Path) -> list[str] | None:
    """Node ids from a pytest lastfailed cache, junk entries (system paths) left out;
    None when there is no cache. Reads the JSON directly: no collection, no import."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise TaskError(f"{path} is a directory, not pytest's lastfailed file; it was "
                        "left as it is: remove it or rerun the tests")
    except OSError as err:
        raise TaskError(f"cannot read {path} ({err.strerror}); it was left as it is")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as err:
        reason = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else \
            f"not valid JSON ({err.args[0]})"
        raise TaskError(f"{path} is {reason}; it was left as it is: delete it or "
                        "rerun the tests to rewrite it")
    if not isinstance(data, dict):
        raise TaskError(f"{path} is not a lastfailed mapping; it was left as it is: "
                        "delete it or rerun the tests to rewrite it")
    return sorted(k for k in data if isinstance(k, str) and _is_test_id(target, k))


def _is_test_id(target: Target, key: str) -> bool:
    """A node id under the tests dir (`tests/...`), or relative to it when pytest's
    rootdir is the tests dir itself (tractor's `--rootdir=./tests`)."""
    if key.startswith("/") or key.startswith(".."):
        return False
    if under_tests(key, target.tests_dir) is not None:
        return True
    path = key.partition("::")[0]
    return (target.tests_path / path).exists()


def lastfailed_sources(target: Target, *, session: str | None = None,
                       every: bool = False) -> list[tuple[str, Path]]:
    """Which lastfailed caches `invoke lastfailed` reads: a nox cell's own, or the one
    the target's `invoke` runs use (where its last run's pytest said its cache is:
    tractor's `--rootdir=./tests` moves it), plus every cell's with `every`."""
    state = State(target)
    if session:
        from .cells import Cell
        cell = Cell.parse(session, target)
        if not cell.dir(target).is_dir():
            known = sorted(p.name for p in state.cells.glob("*")) or ["none"]
            raise usage(f"no runs recorded for cell {cell.name!r}; cells run so far: "
                        + ", ".join(known))
        return [(cell.name, lastfailed_path(cell.cache_dir(target)))]
    cache = target.root / PYTEST_CACHE
    last = state.last_link()
    for pass_dir in pass_dirs(last) if last.exists() else []:
        recorded = ProbeLog(pass_dir).finish().session
        if recorded is not None and recorded.cachedir:
            cache = Path(recorded.cachedir)
            break
    label = os.path.relpath(cache, target.root) if cache.is_relative_to(target.root) else str(cache)
    out = [(label, lastfailed_path(cache))]
    if every:
        for cell_cache in state.cell_caches():
            out.append((cell_cache.parent.name, lastfailed_path(cell_cache)))
    return out


def write(results) -> Path | None:
    """The lastfailed cache pytest's own `--lf` reads, over every pass of `results`
    (results.Results): failed, errored and hung tests in, tests that passed or skipped
    out (pytest's rules)."""
    if not results.cachedir or results.lastfailed_before is None:
        return None
    data = dict(results.lastfailed_before)
    for t in results.tests.values():
        if t.outcome.bad:
            data[t.nodeid] = True
        elif t.outcome.clean:
            data.pop(t.nodeid, None)
    path = lastfailed_path(Path(results.cachedir))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True))
    return path
