"""What a run records, written and read only through these types: ``RunRecord`` (metrics.json) and
``Epoch`` (one row of history.csv). Keras-free, so reports read them without it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


def finite_or_none(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class Epoch:
    """One finished epoch: training loss and accuracy (the mean over the epoch's batches), validation and
    test scores at its end, its last learning rate, and its seconds (the whole epoch; its training part);
    with eval.tta, the validation and test scores under test-time augmentation too (NaN without)."""

    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float
    lr: float
    epoch_seconds: float
    train_seconds: float
    val_tta_loss: float = math.nan
    val_tta_accuracy: float = math.nan
    test_tta_loss: float = math.nan
    test_tta_accuracy: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Epoch:
        """An Epoch of a history.csv row (strings) or a dict of numbers; a missing column reads as NaN."""
        return cls(int(row["epoch"]), *(float(row.get(k, math.nan)) for k in ALL_COLUMNS[1:]))


ALL_COLUMNS = tuple(f.name for f in dataclasses.fields(Epoch))
TTA_COLUMNS = ALL_COLUMNS[ALL_COLUMNS.index("val_tta_loss") :]
HISTORY_COLUMNS = ALL_COLUMNS[: ALL_COLUMNS.index("val_tta_loss")]  # every run's; TTA_COLUMNS follow with eval.tta


def history_columns(rows: list[Epoch]) -> tuple[str, ...]:
    """The columns of a history.csv of `rows`: TTA_COLUMNS only where some epoch has TTA scores."""
    return ALL_COLUMNS if any(math.isfinite(r.test_tta_accuracy) for r in rows) else HISTORY_COLUMNS


@dataclass(frozen=True)
class DataSizes:
    """The data a run trained on: its source and the images of each split."""

    source: str | None
    train: int
    val: int
    test: int


@dataclass(frozen=True)
class RunRecord:
    """A run's metrics.json: its status (completed, diverged or failed; ``elsewhere`` in a sweep's table
    for a run another process trains), final-epoch scores (None where it did not complete), times, data,
    precision and environment. Fields after ``images_per_second`` are left out of the file when None."""

    status: str
    recipe: str
    variant: str
    seed: int
    epochs_completed: int | None = None
    epochs: int | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    best_val_accuracy: float | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    images_per_second: float | None = None
    data: DataSizes | None = None
    precision: str | None = None
    math: str | None = None
    steps_per_execution: int | None = None
    jit_compile: bool | None = None
    backend: str | None = None
    versions: dict[str, str] | None = None
    device: str | None = None
    error: str | None = None
    parameters: int | None = None
    devices: int | None = None
    processes: int | None = None
    reused_from: str | None = None  # the run folder whose results a twin copied (OUT-relative)
    tta: str | None = None  # eval.tta, where the run evaluates with test-time augmentation; then its final scores:
    test_tta_accuracy: float | None = None
    test_tta_loss: float | None = None
    val_tta_accuracy: float | None = None
    val_tta_loss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """metrics.json's mapping, in field order."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in OPTIONAL:
                continue
            out[f.name] = dataclasses.asdict(value) if isinstance(value, DataSizes) else value
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunRecord:
        """The record of a metrics.json mapping; keys this version does not know are left out."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        if isinstance(kwargs.get("data"), dict):
            kwargs["data"] = DataSizes(**kwargs["data"])
        return cls(**kwargs)

    @property
    def reported_accuracy(self) -> float | None:
        """The final-epoch test accuracy the study reports and judges: under the run's test-time
        augmentation where it evaluates with one (eval.tta), else test_accuracy."""
        return self.test_tta_accuracy if self.tta else self.test_accuracy

    @property
    def finished(self) -> bool:
        """Completed or diverged: ``run`` skips it (failed runs are trained again)."""
        return self.status in FINISHED

    def replace(self, **changes: Any) -> RunRecord:
        return dataclasses.replace(self, **changes)


FINISHED = ("completed", "diverged")
_FIELDS = [f.name for f in dataclasses.fields(RunRecord)]
OPTIONAL = frozenset(_FIELDS[_FIELDS.index("data") :])
