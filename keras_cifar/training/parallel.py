"""One run per device: ``keras-cifar run RECIPE... --parallel N|gpus``.

For a network as small as ResNet-18 on CIFAR-10 the fastest way through a sweep is one run per GPU,
not one run split over every GPU. This process never imports Keras. It decides each run once, as ``run``
does (decisions.decide: finished runs are skipped, twins of finished runs copied) and keeps N slots busy,
each a GPU (``CUDA_VISIBLE_DEVICES``) or a share of the CPU cores, by starting one ``keras-cifar run``
process per run, which claims its run folder like any other (its lock). A run whose twin is being
trained waits for it and is then copied instead of trained twice.

It prints each slot's epoch lines prefixed with the slot, with one ETA for the whole sweep, and a
table at the end (the caller writes the reports). A process that crashes loses only its run, which
is recorded as failed; SIGINT or SIGTERM is passed to every process, each keeps its last finished
epoch, and the same command resumes them (a second signal ends this process at once; the runs still
stop as the first one asked).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from keras_cifar.config import RunSpec
from keras_cifar.core.console import Eta, count, run_table, say
from keras_cifar.core.errors import ConfigError
from keras_cifar.core.record import RunRecord
from keras_cifar.training import signals
from keras_cifar.training.decisions import Decision, Twins, decide_all, identity_key, reuse
from keras_cifar.training.runs import RunFolder

SHOWN = re.compile(r" epoch +\d+/\d+ |resuming|: diverged|: failed|cannot be read|being trained by|^Error|interrupted")
EPOCH_SECONDS = re.compile(r"([\d.]+)s$")

Command = Callable[[RunSpec], list[str]]  # the argv that trains one run alone
Lines = queue.Queue[tuple["_Process", str | None]]  # each process's output lines, None once it ended
Row = tuple[RunSpec, RunRecord]


@dataclass(frozen=True)
class Slot:
    """Where one run trains at a time: a name for its lines and the environment its process gets."""

    name: str
    env: dict[str, str] = field(default_factory=dict)


def visible_gpus() -> list[str]:
    """The GPUs this process may use: $CUDA_VISIBLE_DEVICES, else those nvidia-smi lists."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if not shutil.which("nvidia-smi"):
        return []
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return [str(i) for i, line in enumerate(listed.splitlines()) if line.startswith("GPU ")]


def slots_of(text: str) -> list[Slot]:
    """``--parallel gpus`` (one slot per visible GPU) or ``--parallel N`` (N slots: over the GPUs in
    turn, or sharing the CPU cores when there is none), checked before anything runs."""
    gpus = visible_gpus()
    if text == "gpus":
        if not gpus:
            raise ConfigError(
                "--parallel gpus: no GPU is visible (nvidia-smi lists none, or CUDA_VISIBLE_DEVICES "
                "is empty); give a number of processes instead, e.g. --parallel 2"
            )
        return [Slot(f"gpu{g}", {"CUDA_VISIBLE_DEVICES": g}) for g in gpus]
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"--parallel: expected a number of processes or 'gpus', got {text!r}")
    n = int(text)
    if gpus:
        return [Slot(f"gpu{gpus[i % len(gpus)]}", {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}) for i in range(n)]
    threads = str(max(1, (os.cpu_count() or 1) // n))
    return [Slot(f"w{i}", {"OMP_NUM_THREADS": threads, "TF_NUM_INTRAOP_THREADS": threads}) for i in range(n)]


class _Process:
    """One run training in a child process, its output read on a thread into the sweep's queue."""

    def __init__(self, slot: Slot, spec: RunSpec, command: list[str], lines: Lines) -> None:
        self.slot, self.spec = slot, spec
        self.last: list[str] = []
        self.proc = subprocess.Popen(
            command,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **slot.env},
            start_new_session=True,
        )  # signals reach it from this process only

        def read() -> None:
            for line in cast(IO[str], self.proc.stdout):  # stdout=PIPE: never None
                lines.put((self, line.rstrip("\n")))
            lines.put((self, None))

        threading.Thread(target=read, daemon=True).start()


class ParallelSweep:
    """The runs of a sweep over `slots`, one process a run; see the module's doc."""

    def __init__(
        self,
        runs: list[RunSpec],
        decisions: list[Decision],
        slots: list[Slot],
        out_root: Path | str,
        data_source: str,
        command: Command,
    ) -> None:
        self.runs, self.slots, self.out, self.source = runs, slots, out_root, data_source
        self.decisions = dict(zip((spec.key for spec in runs), decisions))
        self.twins = Twins(data_source)
        self.command = command  # command(spec) -> the argv that trains spec alone
        self.eta = Eta(sum(spec.config.train.epochs for spec in runs), lanes=len(slots))
        self.rows: list[Row] = []
        self.started = 0
        self.ticks: dict[str, int] = {}

    def run(self) -> list[Row]:
        """Train every run; returns [(spec, metrics)] in the sweep's order."""
        say(
            f"{count(len(self.runs), 'run')}, {count(self.eta.total, 'epoch')} -> {self.out}; {len(self.slots)} at a "
            f"time, each in a process of its own: {', '.join(s.name for s in self.slots)}"
        )
        pending = list(self.runs)
        active: dict[str, _Process] = {}
        lines: Lines = queue.Queue()
        try:
            while pending or active:
                for slot in [s for s in self.slots if s.name not in active]:
                    spec = self._next(pending, active)
                    if spec is None:
                        break
                    self.started += 1
                    active[slot.name] = _Process(slot, spec, self.command(spec), lines)
                    say(f"[{slot.name}] [{self.started}/{len(self.runs)}] {spec.key} (pid {active[slot.name].proc.pid})")
                if active:
                    with contextlib.suppress(queue.Empty):  # looks for a signal every half second
                        self._handle(*lines.get(timeout=0.5), active)
                signals.check()
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: every run keeps its last epoch
            self._stop(active, getattr(stop, "signum", signal.SIGINT), lines)
        order = {spec.key: i for i, spec in enumerate(self.runs)}
        return sorted(self.rows, key=lambda row: order[row[0].key])

    def _next(self, pending: list[RunSpec], active: dict[str, _Process]) -> RunSpec | None:
        """The next run to start, after skipping finished runs and copying twins; None if every pending
        run waits for a twin being trained."""
        training = {identity_key(p.spec, self.source) for p in active.values()}
        for spec in list(pending):
            if identity_key(spec, self.source) in training:
                continue
            d = self.twins.decision(spec, self.decisions[spec.key])
            if d.action == "done":
                self._skipped(pending, spec, cast(RunRecord, d.folder.read_metrics()), f"already {d.status}")  # it finished
            elif d.action == "reuse":
                twin = cast(RunFolder, d.twin)  # a reuse names its twin
                self._skipped(
                    pending,
                    spec,
                    reuse(twin, d.folder, spec, self.source),
                    f"same config as {twin.path.relative_to(self.out)}, reused",
                )
            else:
                pending.remove(spec)
                self.eta.skip(d.start)
                self.ticks[spec.key] = d.start
                return spec
        return None

    def _skipped(self, pending: list[RunSpec], spec: RunSpec, metrics: RunRecord, why: str) -> None:
        pending.remove(spec)
        self.started += 1
        self.eta.skip(spec.config.train.epochs)
        self.rows.append((spec, metrics))
        say(f"[{self.started}/{len(self.runs)}] {spec.key}: {why}, skipped")

    def _handle(self, process: _Process, line: str | None, active: dict[str, _Process]) -> None:
        if line is None:
            self._ended(process, active)
            return
        process.last = (process.last + [line])[-20:]
        if not SHOWN.search(line):
            return
        head, eta_part, _ = line.partition("  | sweep ")
        seconds = EPOCH_SECONDS.search(head) if eta_part else None
        if seconds:
            self.eta.tick(float(seconds.group(1)))
            self.ticks[process.spec.key] += 1
            head = f"{head}  | sweep {self.eta.text('epochs')}"
        say(f"[{process.slot.name}] {head.strip()}")

    def _ended(self, process: _Process, active: dict[str, _Process]) -> None:
        code, spec = process.proc.wait(), process.spec
        del active[process.slot.name]
        folder = RunFolder.of(self.out, spec)
        metrics = folder.read_metrics()
        if metrics is None and code != 0:  # it crashed, or stopped with an error: only this run is lost
            last = next((line.strip() for line in reversed(process.last) if line.strip()), "")
            why = f"by {signal.Signals(-code).name}" if code < 0 else f"with exit code {code}: {last}"
            metrics = RunRecord(
                "failed",
                spec.recipe,
                spec.variant,
                spec.seed,
                len(folder.read_history()),
                spec.config.train.epochs,
                error=f"its process ended {why}",
            )
            folder.write_metrics(metrics)
            say(f"[{process.slot.name}] {spec.key}: failed ({metrics.error})")
        self.eta.skip(max(0, spec.config.train.epochs - self.ticks[spec.key]))  # ended early
        self.twins.ended(spec, folder, metrics)
        self.rows.append((spec, metrics or RunRecord("elsewhere", spec.recipe, spec.variant, spec.seed)))

    def _stop(self, active: dict[str, _Process], signum: int, lines: Lines) -> None:
        for process in active.values():
            process.proc.send_signal(signum)
        for process in active.values():
            try:
                process.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.proc.kill()
        while not lines.empty():
            process, line = lines.get()
            if line is not None and SHOWN.search(line):
                say(f"[{process.slot.name}] {line.partition('  | sweep ')[0].strip()}")
        raise signals.Interrupted(signum, f"{count(len(active), 'run')} stopped, each keeping its last finished epoch")


def run_sweep(
    runs: list[RunSpec], slots: list[Slot], out_root: Path | str, data_source: str, command: Command, restart: bool = False
) -> list[Row]:
    """Train `runs` over `slots` (ParallelSweep); prints the table and returns [(spec, metrics)]. Refuses, before
    anything starts, what ``run`` refuses (decisions.decide)."""
    decisions = decide_all(runs, out_root, data_source, restart)
    rows = ParallelSweep(runs, decisions, slots, out_root, data_source, command).run()
    say(run_table(rows))
    return rows


def child_command(recipe_paths: Mapping[str, str | Path], common: Sequence[str]) -> Command:
    """command(spec) for ParallelSweep: ``keras-cifar run`` of spec's recipe, variant and seed only, with the
    sweep's other options (`common`), writing no report (the sweep writes one per recipe)."""

    def command(spec: RunSpec) -> list[str]:
        return [
            sys.executable,
            "-m",
            "keras_cifar",
            "run",
            str(recipe_paths[spec.recipe]),
            "--variants",
            spec.variant,
            "--seeds",
            str(spec.seed),
            "--no-report",
            *common,
        ]

    return command
