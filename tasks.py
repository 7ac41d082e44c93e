"""invoke tasks for the target's tests (here: the bundled sample), from tractor-tasks."""
from tractor_tasks.invoke_tasks import collection

ns = collection(__file__)
