"""Children that do not outlive their parent: the one hook the node and the tests' API server share."""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child (a `preexec_fn`): get SIGKILL when the parent dies (Linux), so nothing outlives
    a crash. Safe with threads: one prctl call, taking no lock the fork may have copied."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
