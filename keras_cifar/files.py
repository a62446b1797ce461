"""Files written whole or not at all: a reader sees the old file or the new one, never half of one."""

import csv
import io
import json
import os
from pathlib import Path


def replace_atomic(path, write):
    """Call ``write(tmp)`` on a temporary sibling of `path`, then move it onto `path`: readers see the
    old file or the new one, never half of one. The temporary name keeps `path`'s suffix."""
    path = Path(path)
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")
    write(tmp)
    os.replace(tmp, path)


def write_atomic(path, text):
    replace_atomic(path, lambda tmp: tmp.write_text(text))


def write_json(path, data):
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path):
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_csv(path, rows, columns):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())
