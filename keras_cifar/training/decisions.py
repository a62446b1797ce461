"""What a sweep does with each run, decided from its run folder (runs.py): skip it (finished), reuse a
finished twin of the same experiment (any recipe), resume it from its newest checkpoint, or train it
anew; refusals (a folder holding another config, checkpoints none of which can be read) come here too,
before anything trains. ``plan`` says it in lines, with times estimated from finished runs."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from keras_cifar.config import Config, RunSpec
from keras_cifar.core.console import count, duration
from keras_cifar.core.errors import OtherConfigError, RunFolderError
from keras_cifar.core.record import FINISHED, RunRecord
from keras_cifar.training.runs import RunFolder, diff_keys, identity, unreadable


def find_twin(out_root: Path | str, spec: RunSpec, data_source: str) -> RunFolder | None:
    """A finished run folder under `out_root` (any recipe) with `spec`'s config and data, or None."""
    own = RunFolder.of(out_root, spec).path
    for cfg_file in sorted(Path(out_root).glob(f"*/*/seed{spec.seed}/config.yaml")):
        twin = RunFolder(cfg_file.parent)
        if twin.path != own and twin.status() in FINISHED and twin.identity() == identity(spec.config, data_source):
            return twin
    return None


def reuse(twin: RunFolder, folder: RunFolder, spec: RunSpec, data_source: str) -> RunRecord:
    """Copy the finished `twin` into `folder` under `spec`'s name; returns its metrics."""
    shutil.copytree(twin.path, folder.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*", ".*"))
    folder.write_config(spec, data_source)
    original = twin.read_metrics()
    assert original is not None, f"{twin.path}: a twin is a finished run"
    metrics = original.replace(
        recipe=spec.recipe,
        variant=spec.variant,  # a copy of a copy names the original
        reused_from=original.reused_from or str(Path(*twin.path.parts[-3:])),
    )
    folder.write_metrics(metrics)
    return metrics


@dataclass(frozen=True)
class Decision:
    """What ``run`` does with one RunSpec: ``done`` (skip), ``reuse`` (copy `twin`), ``resume``
    (after epoch `start`) or ``new``. Made once per run, before the sweep trains anything."""

    action: str
    folder: RunFolder
    status: str | None = None  # for done: completed or diverged
    twin: RunFolder | None = None
    start: int = 0


class Twins:
    """The runs that finished in one sweep, by experiment (identity_key): a later run of the same
    experiment reuses the first of them instead of training, which its decision, made before the sweep
    started, could not know."""

    def __init__(self, data_source: str) -> None:
        self.source = data_source
        self.finished: dict[str, RunFolder] = {}

    def decision(self, spec: RunSpec, d: Decision) -> Decision:
        """`d`, or a reuse of a twin that finished in this sweep where `d` would train."""
        twin = self.finished.get(identity_key(spec, self.source))
        return Decision("reuse", d.folder, twin=twin) if twin and d.action in ("new", "resume") else d

    def ended(self, spec: RunSpec, folder: RunFolder, metrics: RunRecord | None) -> None:
        """Record how `spec`'s run in `folder` ended; a finished one serves its later twins."""
        if metrics and metrics.finished:
            self.finished.setdefault(identity_key(spec, self.source), folder)


def decide(out_root: Path | str, spec: RunSpec, data_source: str, restart: bool = False) -> Decision:
    """The Decision for `spec`; a RunFolderError when its folder holds a run with a different config, or
    checkpoints of which none can be read. `restart`: an unfinished run starts again from epoch 0."""
    folder = RunFolder.of(out_root, spec)
    if (folder.path / "config.yaml").exists():
        diffs = diff_keys(folder.identity(), identity(spec.config, data_source))
        if diffs:
            raise OtherConfigError(
                f"{folder.path} already holds a run with a different config (differs in "
                f"{', '.join(diffs)}); use another --out or delete that folder"
            )
    status = folder.status()
    if status in FINISHED:
        return Decision("done", folder, status=status)
    twin = find_twin(out_root, spec, data_source)
    if twin:
        return Decision("reuse", folder, twin=twin)
    if restart:
        return Decision("new", folder)
    start = folder.checkpoint()[1]
    checkpoints = folder.checkpoints()
    if checkpoints and not start:
        newest = checkpoints[0][1]
        raise RunFolderError(
            f"{newest}: cannot be read ({unreadable(newest)}); run the same command with "
            f"--restart to train {spec.key} again from epoch 0"
        )
    return Decision("resume" if start else "new", folder, start=start)


def decide_all(runs: list[RunSpec], out_root: Path | str, data_source: str, restart: bool = False) -> list[Decision]:
    """Each RunSpec's Decision, in order: the sweep's one decision per run (refusals raise here, before
    anything trains)."""
    return [decide(out_root, spec, data_source, restart) for spec in runs]


def identity_key(spec: RunSpec, data_source: str) -> str:
    """identity() as a string: equal for runs of the same experiment."""
    return json.dumps(identity(spec.config, data_source), sort_keys=True, default=str)


def plan(runs: list[RunSpec], decisions: list[Decision], out_root: Path | str, data_source: str) -> list[str]:
    """What ``run`` does with each RunSpec given its Decision, one line each, with times estimated from
    finished runs under `out_root` on the same data, width and training subset (median seconds per epoch)."""
    epoch_seconds: dict[tuple[int, int | None], list[float]] = {}
    for m_file in Path(out_root).glob("*/*/seed*/metrics.json"):
        folder = RunFolder(m_file.parent)
        m, (_, source, config) = folder.read_metrics(), folder.read_config()
        if (
            m
            and m.status == "completed"
            and not m.reused_from
            and source == data_source
            and config
            and m.wall_seconds is not None
            and m.epochs_completed
        ):
            epoch_seconds.setdefault(_scale(config), []).append(m.wall_seconds / m.epochs_completed)
    lines, total, unknown = [], 0.0, 0
    for spec, d in zip(runs, decisions):
        if d.action == "done":
            lines.append(f"{spec.key}: already {d.status}")
            continue
        if d.twin:
            lines.append(f"{spec.key}: reuses {d.twin.path.relative_to(out_root)}")
            continue
        c = spec.config
        epochs = c.train.epochs
        known = sorted(epoch_seconds.get(_scale(c), []))
        estimate = (epochs - d.start) * known[len(known) // 2] if known else 0.0
        total, unknown = total + estimate, unknown + (not known)
        lines.append(
            f"{spec.key}: {f'resume after epoch {d.start}' if d.start else 'new'}, width {c.model.width}, "
            f"{count(epochs, 'epoch')}, batch {c.data.batch_size}, "
            + (f"about {duration(estimate)}" if known else "no timing yet at this scale")
        )
    lines.append(f"estimated total: {_total(total, unknown)}")
    return lines


def _total(seconds: float, untimed: int) -> str:
    """The plan's total: runs at a scale nothing has been timed at yet make it unknown (or a lower bound)
    until their first epoch, after which the sweep's ETA says."""
    if not untimed:
        return duration(seconds)
    if not seconds:
        return "unknown until the first epoch (nothing timed yet at this scale)"
    return f"at least {duration(seconds)}, plus {count(untimed, 'run')} at a scale not timed yet (known after the first epoch)"


def _scale(config: Config) -> tuple[int, int | None]:
    return config.model.width, config.data.subset
