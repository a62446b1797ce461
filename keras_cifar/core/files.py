"""Files written whole or not at all: a reader sees the old file or the new one, never half of one.
A file that cannot be written (disk full, no permission) is a WriteError naming it, and leaves no
temporary file behind."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from keras_cifar.core.errors import WriteError

TMP_PREFIX = ".tmp"


FIX = "free some space or fix the folder's permissions, then run the same command again"


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn an OSError while writing `path` into a one-line WriteError that says how to go on."""
    path = Path(path)
    try:
        yield
    except OSError as e:
        raise WriteError(f"{path.parent}: cannot write {path.name} ({e.strerror or e}); {FIX}") from None


def make_dirs(path: Path | str) -> None:
    """``mkdir -p``; a WriteError naming the folder if it cannot be made."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"{path}: cannot create this folder ({e.strerror or e}); {FIX}") from None


def replace_atomic(path: Path | str, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of `path`, then move it onto `path`: readers see the
    old file or the new one, never half of one. The temporary name keeps `path`'s suffix; it is
    removed whatever goes wrong."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}.{path.name}")
    with writing(path):
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def write_atomic(path: Path | str, text: str) -> None:
    replace_atomic(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path | str, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path | str) -> Any:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_csv(path: Path | str, rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())
