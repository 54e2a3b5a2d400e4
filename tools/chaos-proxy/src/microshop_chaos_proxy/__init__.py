"""TCP fault-injection proxy for chaos runs: this machine's kernel has no netem, so faults live in userspace."""

__version__ = "0.1.0"
