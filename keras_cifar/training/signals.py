"""SIGINT (Ctrl-C) and SIGTERM (what SLURM and Kubernetes send before they preempt a job) during a
long command. The handler only notes the signal; the command acts on it where stopping is safe:
``check()`` raises ``Interrupted`` there (training calls it at every batch and epoch boundary, the
sweeps between runs), so that a run keeps its last finished epoch before the command exits with
128 + the signal's number (130, 143). A handler that raised at once could land in any Python code,
also in a garbage-collection callback or a ``__del__``, where Python prints "Exception ignored" and
carries on: the stop was lost. A second signal ends the command at once."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: list[int] = []  # the signals noted since interruptible() began


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM; `where` says what was stopped and what was kept."""

    def __init__(self, signum: int = signal.SIGINT, where: str | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.where = where


def _note(signum: int, frame: FrameType | None) -> None:
    if _received:  # the second: whatever is under way is given up
        name = signal.Signals(signum).name
        os.write(2, f"interrupted again ({name}): stopped at once; run the same command again to resume\n".encode())
        os._exit(128 + signum)
    _received.append(signum)


def received() -> int | None:
    """The first signal noted, or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raise Interrupted if a signal was noted: call it where the command can stop safely."""
    if _received:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM are noted for check() (in the main thread; elsewhere a no-op).
    A signal noted but not acted on inside is raised as Interrupted when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {s: signal.signal(s, _note) for s in SIGNALS}
    try:
        yield
        check()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received.clear()
