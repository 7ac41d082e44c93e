"""nox sessions for the target's test matrix (here: the bundled sample), from tractor-tasks."""
from tractor_tasks.nox_sessions import register

register(__file__)
