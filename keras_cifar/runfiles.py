"""Small, Keras-free helpers for the files of a run folder (shared by training and reports).

Run folder ``OUT/<recipe>/<variant>/seed<k>/``: ``config.yaml`` (resolved), ``history.csv`` (one row
per epoch, columns HISTORY_COLUMNS), ``metrics.json`` (final numbers and status).
"""

import csv
import io
import json
import os
from pathlib import Path

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                   "lr", "epoch_seconds", "train_seconds")
FINISHED = ("completed", "diverged")


def replace_atomic(path, write):
    """Call ``write(tmp)`` on a temporary sibling of `path`, then move it onto `path`: readers see the
    old file or the new one, never half of one. The temporary name keeps `path`'s suffix."""
    path = Path(path)
    tmp = path.with_name(f".tmp{os.getpid()}.{path.name}")
    write(tmp)
    os.replace(tmp, path)


def write_atomic(path, text):
    replace_atomic(path, lambda tmp: tmp.write_text(text))


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_history(path):
    """History rows as dicts of floats (epoch as int); [] when there is no file."""
    try:
        with open(path, newline="") as f:
            return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]
    except FileNotFoundError:
        return []


def write_history(path, rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, buf.getvalue())
