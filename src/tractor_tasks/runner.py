"""The runner interface the verdict drives (its confirmation and baseline passes):
declared here, below both, so the verdict needs nothing of the pipeline's objects.
`passes.PassRunner` is the one implementation; the fast tests give a fake of it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .options import RunOptions
    from .results import Results


class LaneFacts(Protocol):
    """What a lane gives back that the verdict reads: its passes and their results."""
    passes: list
    results: Results


class RunDirLike(Protocol):
    path: Path


@runtime_checkable
class Runner(Protocol):
    """Lanes of passes for the verdict: its re-runs alone and its baseline runs."""
    p: Any                   # the run's plan (pipeline.Plan): target, opts, cell, ...
    run_dir: RunDirLike | None
    out: Any                 # where the verdict's progress lines go (output.Output), or None

    def stopped(self) -> bool:
        """A stop was asked for, or the time is spent: start no more passes."""

    def import_check(self, at: Path, venv: Path | None = None) -> str | None:
        """Where `import <package>` resolves for a pass run at `at` (None: it failed)."""

    def baseline_venv(self, tree: Path, lock_hash: str) -> tuple[Path | None, str]:
        """A venv synced from `tree`'s own uv.lock, and what was done (None, and why,
        when it could not be made)."""

    def lane(self, *, only: set[str] | None, shard: int | None, echo,
             opts: RunOptions | None = None, phase: str | None = None,
             at: Path | None = None, venv: Path | None = None) -> LaneFacts:
        """Passes until the selection `only` has run (a fresh pass after a hang); `at`
        another tree of the target, `venv` the venv to run it with."""
