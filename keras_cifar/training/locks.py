"""Claiming a run: the lock that lets processes sharing a run folder (``--parallel``, ``--shard``,
several machines on one file system) train each run once.

A claim is a file ``.lock.<n>`` that the claimant creates exclusively (O_EXCL): of the processes that
try one number, one gets it, and the highest number present is the owner. The file holds the owner's
token (a random id, with its host, pid and process start time, and its scheduler task) and a beat
count that the owner rewrites every HEARTBEAT_SECONDS, after checking that the lock is still its own.
Only the owner rewrites or removes its file. An owner that finds a higher number has lost the run
(its process was paused past the stale time, say): it writes nothing more into the run folder.

A lock is taken over (the next number created, once the claimant has checked that the lock it judged
is still there unchanged) when its owner is proved dead: on this host its process has ended (pid and
start time), or it is the same scheduler task in an earlier incarnation (a SLURM job requeued after
SIGKILL: a lower SLURM_RESTART_COUNT; an Indexed Job's replaced pod: another pod name) — or when it has
stopped changing: the claimant watches its contents with its own monotonic clock and takes it over
once they have not changed for STALE_SECONDS. No clock is compared with another machine's file times.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from keras_cifar.core.errors import WriteError
from keras_cifar.core.files import make_dirs, writing
from keras_cifar.training.cluster import task_identity, task_incarnation

# A lock whose contents have not changed for this long, as the claimant watches it, is taken over: its owner
# died on another host, or hangs. Long enough for NFS's attribute caching (up to 60 s); the owner beats
# eight times in it.
STALE_SECONDS = float(os.environ.get("KERAS_CIFAR_LOCK_STALE_SECONDS", 120.0))
HEARTBEAT_SECONDS = STALE_SECONDS / 8
PREFIX = ".lock."

# lock file -> [its owner's token, its contents, since when this process has seen them, whether it saw them change]
_watched: dict[Path, list[Any]] = {}


class LockLost(Exception):
    """This process's lock on a run was taken over: it must not write into the run folder again."""


def _started(pid: int | str) -> str | None:
    """When process `pid` started (Linux's clock ticks since boot), or None where that cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def _me() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _started("self"),
        "task": task_identity(),
        "incarnation": task_incarnation(),
    }


class Lock:
    """The lock of the run folder `folder`: its ``.lock.<n>`` files."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.number: int | None = None  # of the file this process created, while it holds the lock
        self.token: str | None = None
        self.beats = 0
        self.lost = threading.Event()  # set by the heartbeat when the lock was taken over

    @property
    def path(self) -> Path | None:
        return self.folder / f"{PREFIX}{self.number}" if self.number else None

    def files(self) -> list[tuple[int, Path]]:
        """[(number, file)] of the lock files present, highest first."""
        found = [(int(m.group(1)), p) for p in self.folder.glob(f"{PREFIX}*") if (m := re.fullmatch(r"\.lock\.(\d+)", p.name))]
        return sorted(found, reverse=True)

    def claim(self) -> str | None:
        """Take the lock for this process (create it, or take over a dead or silent owner's). Returns None,
        or who holds it ('host pid N since ...')."""
        make_dirs(self.folder)
        for _ in range(3):
            held = self.files()
            number = held[0][0] if held else 0
            if held:
                contents = _read(held[0][1])
                if contents is None:  # released meanwhile
                    continue
                if not _takeable(held[0][1], contents):
                    return _describe(_parse(contents))
                if _read(held[0][1]) != contents:  # it beat meanwhile: alive after all
                    continue
            if self._create(number + 1):
                if self.files()[0][0] == self.number:  # nobody created a higher one meanwhile
                    return None
                self.release()
        return "another process, which claimed it at the same moment"

    def takeable(self) -> bool:
        """Whether claim() would take the lock now: nobody holds it, or its holder is dead or silent."""
        held = self.files()
        contents = _read(held[0][1]) if held else None
        return contents is None or _takeable(held[0][1], contents)

    def beating(self) -> bool:
        """Whether this process has seen the holder's lock file change since it began to watch it."""
        held = self.files()
        return bool(held) and _watched.get(held[0][1], [None, None, 0, False])[3]

    def _create(self, number: int) -> bool:
        path = self.folder / f"{PREFIX}{number}"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        self.number, self.token, self.beats = number, uuid.uuid4().hex, 0
        self.lost.clear()
        try:
            with writing(path), os.fdopen(fd, "w") as f:
                f.write(self._record())
        except WriteError:
            path.unlink(missing_ok=True)
            self.number = None
            raise
        return True

    def _record(self) -> str:
        return json.dumps(
            {"token": self.token, **_me(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "beats": self.beats}, indent=None
        )

    def owned(self) -> bool:
        """Whether this process still holds the lock: its file is there with its token, and no higher one."""
        if self.path is None:
            return False
        held = self.files()
        return bool(held) and held[0][0] == self.number and _parse(_read(self.path)).get("token") == self.token

    def check(self) -> None:
        """Raise LockLost unless this process still holds the lock (call it before writing into the run)."""
        if not self.owned():
            self.lost.set()
            raise LockLost(self.taken())

    def taken(self) -> str:
        """What became of this process's lock, in words: who holds the run now."""
        held = self.files()
        who = _describe(_parse(_read(held[0][1]))) if held else "another process, which has released it since"
        return f"{self.folder}: taken over by {who}"

    def beat(self) -> bool:
        """Rewrite the beat count in this process's lock file if it is still its own; False if it is not."""
        path = self.path
        if path is None or not self.owned():
            self.lost.set()
            return False
        self.beats += 1
        with contextlib.suppress(OSError), open(path, "r+") as f:  # in place: never re-creates a removed file
            f.write(self._record())
            f.truncate()
        return True

    def release(self) -> None:
        """Remove this process's lock file, if it is still its own, and the files of the owners before it."""
        mine = self.number
        if mine is not None and self.owned():
            for number, file in self.files():
                if number <= mine:
                    file.unlink(missing_ok=True)
        self.number = self.token = None

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """While the holder works, beat every HEARTBEAT_SECONDS (``lost`` is set once the lock is taken);
        release it at the end."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_SECONDS) and self.beat():
                pass

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release()


def _read(file: Path) -> bytes | None:
    try:
        return file.read_bytes()
    except OSError:
        return None


def _parse(contents: bytes | None) -> dict[str, Any]:
    try:
        owner = json.loads(contents or b"")
    except ValueError:  # being written
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    return f"{owner.get('host')} pid {owner.get('pid')} since {owner.get('time')}" if owner else "another process"


def _takeable(file: Path, contents: bytes) -> bool:
    owner = _parse(contents)
    return _dead(owner) or _silent(file, contents)


def _dead(owner: dict[str, Any]) -> bool:
    """Whether the owner is proved dead: its process on this host has ended, or it is this scheduler task's
    earlier incarnation (a requeued SLURM job: a lower restart count; a replaced pod: another pod name)."""
    me = _me()
    if owner.get("host") == me["host"] and isinstance(owner.get("pid"), int):
        return not _alive(owner["pid"], owner.get("started"))
    if owner.get("task") and owner["task"] == me["task"]:
        theirs, mine = owner.get("incarnation"), me["incarnation"]
        if isinstance(mine, int):
            return isinstance(theirs, int) and theirs < mine
        return theirs != mine
    return False


def _alive(pid: int, started: str | None) -> bool:
    """Whether process `pid` of this host runs, and is the one that started at `started` (not a later
    process given the same pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        pass
    now = _started(pid)
    return started is None or now is None or now == started


def _silent(file: Path, contents: bytes) -> bool:
    """Whether this process has watched `file` hold `contents` for STALE_SECONDS (by its own clock). Another
    owner's token at the same path (the lock was released and claimed again) starts the watch anew."""
    now, token = time.monotonic(), _parse(contents).get("token")
    watched = _watched.get(file)
    if watched is None or (token is not None and token != watched[0]):
        _watched[file] = [token, contents, now, False]
        return False
    if watched[1] != contents:
        watched[1:] = contents, now, True
    return now - watched[2] >= STALE_SECONDS
