"""tractor-tasks: run a tractor-style multi-process test suite correctly, fast, and cleanly."""
__version__ = "0.2.0"
