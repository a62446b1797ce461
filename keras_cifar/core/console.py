"""What the commands print: lines, counts, percentages, durations, and progress with an ETA."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import click


def say(text: str = "", err: bool = False) -> None:
    """One line (or several) on stdout, or stderr with ``err``, flushed at once."""
    click.echo(text, err=err)


def count(n: int, noun: str) -> str:
    """'1 run', '3 runs'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def pct(x: float | None) -> str:
    """'61.42%', or '-' for a missing value."""
    return "-" if x is None else f"{x:.2%}"


def duration(seconds: float | None) -> str:
    """'0m07s', '12m30s', '2h05m'; '-' for a missing value."""
    if seconds is None:
        return "-"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_table(rows: Iterable[tuple[Any, Any]]) -> str:
    """The table a sweep ends with: one line per (RunSpec, RunRecord) of `rows`. Two times, named apart:
    training (the fit part of every epoch, as the report's table gives it) and wall time (the whole run:
    evaluation, checkpoints and start-up too)."""
    lines = [f"{'variant':<16} {'seed':>4}  {'status':<9} {'test acc':>9} {'val acc':>9}  {'training':>8}  {'wall time':>9}"]
    for spec, m in rows:
        lines.append(
            f"{spec.variant:<16} {spec.seed:>4}  {m.status:<9} {pct(m.test_accuracy):>9} "
            f"{pct(m.val_accuracy):>9}  {duration(m.train_seconds):>8}  {duration(m.wall_seconds):>9}"
        )
    return "\n".join(lines)


class Eta:
    """Time left for `total` units of work (epochs, trials, grid points): the median time of the units
    timed so far, leaving out the first unit after each start (it compiles) once others are known, over
    the `lanes` that work at once."""

    def __init__(self, total: int, lanes: int = 1) -> None:
        self.total = total
        self.lanes = lanes
        self.done = 0
        self._steady: list[float] = []
        self._first: list[float] = []
        self._starting = True

    def restart(self) -> None:
        """Work starts anew (another run or model): its next unit compiles again."""
        self._starting = True

    def skip(self, units: int) -> None:
        """Units that take no time (already done, reused, ended early)."""
        self.done += units

    def tick(self, seconds: float, units: int = 1) -> None:
        self.done += units
        (self._first if self._starting else self._steady).append(seconds / units)
        self._starting = False

    def left(self) -> float | None:
        """Seconds left, or None before anything was timed."""
        times = sorted(self._steady or self._first)
        return max(self.total - self.done, 0) * times[len(times) // 2] / self.lanes if times else None

    def text(self, unit: str) -> str:
        """'12/40 epochs, ETA 3m10s'."""
        left = self.left()
        return f"{self.done}/{self.total} {unit}" + (f", ETA {duration(left)}" if left is not None else "")
