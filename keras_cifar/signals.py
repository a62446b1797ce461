"""SIGINT (Ctrl-C) and SIGTERM (what SLURM and Kubernetes send before they preempt a job) during a
long command: both raise ``Interrupted`` in the main thread, so a run can keep its last finished
epoch before the command exits with 128 + the signal's number (130, 143). A signal that arrives
inside ``deferred()`` (a checkpoint being written) is raised when that block ends."""

import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_pending = []  # signals that arrived inside deferred()
_depth = [0]  # how deeply deferred() blocks nest


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM; `where` says what was stopped and what was kept."""

    def __init__(self, signum=signal.SIGINT, where=None):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.where = where


def _raise(signum, frame):
    if _depth[0]:
        _pending.append(signum)
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def interruptible():
    """While inside, SIGINT and SIGTERM raise Interrupted (in the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def deferred():
    """A block that a signal does not cut in half: it is raised as Interrupted when the block ends."""
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
    if not _depth[0] and _pending:
        signum = _pending[0]
        _pending.clear()
        raise Interrupted(signum)
