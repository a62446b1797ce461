"""A recipe's sweep in this process: each run decided once (skip, reuse a twin, resume or train) and
trained in order, with one ETA and one table; failed and diverged runs are recorded and the sweep goes
on; at the end, the runs that other processes held are watched until each is left to its owner or
taken over."""

from __future__ import annotations

import time
from pathlib import Path

import keras

from keras_cifar.config import RunSpec
from keras_cifar.core import backend
from keras_cifar.core.console import Eta, count, run_table, say
from keras_cifar.core.errors import ConfigError
from keras_cifar.core.files import make_dirs
from keras_cifar.core.record import RunRecord
from keras_cifar.data import sources as data_lib
from keras_cifar.training import cluster, locks, signals
from keras_cifar.training.decisions import Decision, Twins, decide_all, plan
from keras_cifar.training.train import train_run


class Sweep:
    """The sweep this process trains: where it writes (`out_root`), its data's source, and its lines (a
    header per run, skips and endings, the ETA, the final table's rows)."""

    def __init__(self, runs: list[RunSpec], out_root: Path | str, source: str, restart: bool = False) -> None:
        self.out_root, self.source, self.restart = out_root, source, restart
        self.eta = Eta(sum(r.config.train.epochs for r in runs))
        self.runs = len(runs)
        self.index = 0
        self.rows: list[tuple[RunSpec, RunRecord]] = []

    def skipped(self, spec: RunSpec, metrics: RunRecord, why: str) -> RunRecord:
        self.index += 1
        self.eta.skip(spec.config.train.epochs)
        say(f"[{self.index}/{self.runs}] {spec.key}: {why}, skipped")
        self.rows.append((spec, metrics))
        return metrics

    def started(self, spec: RunSpec, start: int) -> None:
        self.index += 1
        self.eta.skip(start)
        self.eta.restart()
        cfg = spec.config
        say(
            f"[{self.index}/{self.runs}] {spec.key}: width {cfg.model.width}, "
            f"{count(cfg.train.epochs, 'epoch')}, batch {cfg.data.batch_size}, "
            f"backend {keras.backend.backend()}"
        )

    def retry(self, spec: RunSpec) -> None:
        """Forget `spec`'s row (a run skipped as held elsewhere, about to be tried again)."""
        self.rows = [row for row in self.rows if row[0] is not spec]
        self.index -= 1
        self.eta.skip(-spec.config.train.epochs)

    def ended(self, spec: RunSpec, metrics: RunRecord) -> None:
        self.eta.skip(spec.config.train.epochs - (metrics.epochs_completed or 0))  # diverged early, or lost
        self.rows.append((spec, metrics))
        if metrics.status != "completed":
            say(f"  {spec.key}: {metrics.status}" + (f" ({metrics.error})" if metrics.error else ""))


def check_runs(runs: list[RunSpec], out_root: Path | str, data_source: str, restart: bool = False) -> list[Decision]:
    """Refuse, before anything is trained or written, what the backend cannot run, global batches that
    do not split over the processes, run folders that hold another config, and (without `restart`)
    unfinished runs none of whose checkpoints can be read; returns each run's Decision."""
    processes = cluster.process()[1]
    for spec in runs:
        backend.check_settings(spec.config, spec.key)
        if spec.config.data.batch_size % processes:
            raise ConfigError(
                f"{spec.key}: data.batch_size {spec.config.data.batch_size} does not split "
                f"over {processes} processes; use a multiple of {processes}"
            )
    decisions = decide_all(runs, out_root, data_source, restart)
    make_dirs(out_root)  # a folder that cannot be written fails now, not after the first epoch
    return decisions


def _quick_look(runs: list[RunSpec], images: int) -> str:
    """On a CPU, for a sweep at the report's scale: the option that gives a quick look instead."""
    full = [s for s in runs if s.config.model.width >= 32 and (s.config.data.subset or images) >= 20_000]
    if not full or backend.accelerator().kind != "cpu":
        return ""
    return (
        "\nThis is a CPU: at width 64 on all 50,000 images an epoch took about 30 minutes on the 2-core machine "
        "keras-cifar is developed on. For a quick look, add --quick (width 16, 10,000 images, 10 epochs)."
    )


def run_sweep(
    runs: list[RunSpec], cifar: data_lib.Cifar, out_root: Path | str = "runs", restart: bool = False
) -> list[tuple[RunSpec, RunRecord]]:
    """Train every RunSpec on the loaded data in order; returns [(spec, metrics)]. Failed and diverged
    runs are recorded and the sweep goes on. `restart`: unfinished runs start again from epoch 0."""
    decisions = check_runs(runs, out_root, cifar.source, restart)
    sweep = Sweep(runs, out_root, cifar.source, restart)
    say(
        f"data: {cifar.source} ({len(cifar.y_train)} train / {len(cifar.y_test)} test images); "
        f"{count(len(runs), 'run')}, {count(sweep.eta.total, 'epoch')} -> {out_root}"
    )
    say(plan(runs, decisions, out_root, cifar.source)[-1] + _quick_look(runs, len(cifar.y_train)))
    twins = Twins(cifar.source)
    held: list[tuple[RunSpec, Decision]] = []
    for spec, d in zip(runs, decisions):
        signals.check()
        d = twins.decision(spec, d)
        metrics = train_run(spec, d, _splits(cifar, spec), sweep)
        twins.ended(spec, d.folder, metrics)
        if metrics.status == "elsewhere":
            held.append((spec, d))
    if held and cluster.process()[1] == 1:
        _watch(held, cifar, sweep, twins)
    say(run_table(sweep.rows))
    return sweep.rows


def _splits(cifar: data_lib.Cifar, spec: RunSpec) -> data_lib.Splits:
    return data_lib.split(cifar, spec.config.data.subset, spec.config.data.eval_subset)


def _watch(held: list[tuple[RunSpec, Decision]], cifar: data_lib.Cifar, sweep: Sweep, twins: Twins) -> None:
    """The runs whose locks other processes held when the sweep came to them, watched until each lock is
    seen to change (its owner is alive: the run is left to it), goes (its run is decided again), or
    stays unchanged for locks.STALE_SECONDS (its owner is dead or hangs: the run is taken over)."""
    say(
        f"{count(len(held), 'run')} held by other processes: watching their locks "
        f"(one that does not change for {locks.STALE_SECONDS:.0f} s is taken over)"
    )
    while held:
        time.sleep(min(1.0, locks.HEARTBEAT_SECONDS))
        signals.check()
        for spec, d in list(held):
            if d.folder.lock.beating():
                held.remove((spec, d))
            elif d.folder.lock.takeable():
                held.remove((spec, d))
                sweep.retry(spec)
                twins.ended(spec, d.folder, train_run(spec, twins.decision(spec, d), _splits(cifar, spec), sweep))
