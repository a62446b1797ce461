"""Claiming a run: the lock file that lets processes sharing a run folder (``--parallel``, ``--shard``,
several machines on one file system) train each run once. A live owner keeps its lock fresh with a
heartbeat; a lock whose owner died is taken over."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from keras_cifar.cluster import task_identity
from keras_cifar.errors import WriteError
from keras_cifar.files import make_dirs, read_json, writing

HEARTBEAT_SECONDS = 15.0
# A lock not touched for this long is taken over: its process died on another host (on this host, a dead
# pid is seen at once). Long enough for NFS's attribute caching (up to 60 s); a requeued SLURM task or a
# restarted pod takes over its own lock at once instead (cluster.task_identity).
STALE_SECONDS = 120.0


class Lock:
    """The lock file at `path`: {host, pid, task, time} of the process that holds it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def claim(self) -> str | None:
        """Take the lock for this process: create the file, or take over a stale one (its owner died: same
        host and no such process, the same scheduler task (requeued), or no heartbeat for STALE_SECONDS).
        Returns None, or the owner ('host pid ...') of a live lock held elsewhere."""
        make_dirs(self.path.parent)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = read_json(self.path) or {}
                if not _stale(self.path, owner):
                    return f"{owner.get('host')} pid {owner.get('pid')} since {owner.get('time')}"
                taken = self.path.with_name(f"{self.path.name}.stale{os.getpid()}")
                with contextlib.suppress(FileNotFoundError):  # rename is atomic: one process gets the file
                    os.rename(self.path, taken)
                    if (read_json(taken) or {}) != owner:  # a fresh lock, of who took it over first
                        os.rename(taken, self.path)
                        return "another process, which took over the stale lock first"
                    taken.unlink()
                continue
            try:
                with writing(self.path), os.fdopen(fd, "w") as f:
                    json.dump(
                        {
                            "host": socket.gethostname(),
                            "pid": os.getpid(),
                            "task": task_identity(),
                            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                        },
                        f,
                    )
            except WriteError:
                self.path.unlink(missing_ok=True)
                raise
            return None
        return "another process, which took over the stale lock first"

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """While the holder works, touch the lock every HEARTBEAT_SECONDS; remove it at the end."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                with contextlib.suppress(OSError):
                    os.utime(self.path)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release()


def _stale(lock: Path, owner: dict) -> bool:
    if owner.get("task") and owner["task"] == task_identity():  # this task's own, before a requeue
        return True
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    try:
        return time.time() - lock.stat().st_mtime > STALE_SECONDS
    except FileNotFoundError:
        return True
