"""Run folders: the only module that reads or writes them (training, reports, landscapes, serving, tests).

``OUT/<recipe>/<variant>/seed<k>/`` holds:

- ``config.yaml``: the resolved config, with recipe, variant, seed and data_source;
- ``history.csv``: one row per finished epoch (record.Epoch);
- ``metrics.json``: the final numbers and the status (completed, diverged or failed), written at the end
  (record.RunRecord);
- ``model.keras`` (completed runs), ``error.log`` (failed runs), ``tb/`` (TensorBoard logs);
- ``checkpoint-epoch<k>.keras`` while a run is going: the state after epoch k, where ``run`` resumes
  (the newest two are kept, so that an unreadable newest one falls back to the one before);
- ``.lock.<n>`` while a process trains it, so that processes sharing the folder never train it twice
  (locks.Lock).

A folder with a config or history but no metrics.json is *unfinished*: still going, or interrupted.
Keras-free, so reports and ``--dry-run`` start fast.
"""

from __future__ import annotations

import csv
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from keras_cifar.config import Config, RunSpec
from keras_cifar.core.errors import RunFolderError
from keras_cifar.core.files import TMP_PREFIX, make_dirs, read_json, replace_atomic, write_atomic, write_csv, write_json
from keras_cifar.core.record import Epoch, RunRecord, history_columns
from keras_cifar.training.locks import Lock

IDENTITY = ("recipe", "variant", "seed")
LAYOUT = "OUT/<recipe>/<variant>/seed<k>/ folders holding config.yaml, history.csv or metrics.json"
MODEL_FILE = "model.keras"
CHECKPOINTS_KEPT = 2  # the newest and the one before it, should the newest prove unreadable
# config.yaml path -> (mtime, identity, data_source, Config) as last read
_CONFIGS: dict[Path, tuple[int, tuple, str | None, Config]] = {}


def diff_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    out = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_keys(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


# ------------------------------------------------------------------------------------- one folder


@dataclass(frozen=True)
class Run:
    """What a run folder held when it was read."""

    path: Path
    recipe: str
    variant: str
    seed: int
    config: Config | None  # None without a config.yaml
    data_source: str | None
    metrics: RunRecord | None  # None until the run ends
    history: list[Epoch]
    status: str  # completed | diverged | failed | unfinished

    @property
    def label(self) -> str:
        return f"{self.recipe}/{self.variant}/seed{self.seed}"

    @property
    def epochs(self) -> int | None:
        return (self.metrics and self.metrics.epochs) or (self.config.train.epochs if self.config else None)

    def settings(self) -> dict[str, Any]:
        """Its data source and config as dotted keys ({} without a config.yaml)."""
        return {"data_source": self.data_source, **self.config.flat()} if self.config else {}

    @property
    def epochs_completed(self) -> int:
        known = self.metrics.epochs_completed if self.metrics else None
        return len(self.history) if known is None else known


class RunFolder:
    """``OUT/<recipe>/<variant>/seed<k>/``: reads what is there and writes each file of a run."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.lock = Lock(self.path)

    @classmethod
    def of(cls, out_root: Path | str, spec: RunSpec) -> RunFolder:
        """The folder of a config.RunSpec under `out_root`."""
        return cls(Path(out_root) / spec.recipe / spec.variant / f"seed{spec.seed}")

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # reading

    def exists(self) -> bool:
        return any((self.path / f).exists() for f in ("config.yaml", "history.csv", "metrics.json"))

    def read_config(self) -> tuple[dict[str, Any], str | None, Config | None]:
        """(identity {recipe, variant, seed}, data_source, Config) from config.yaml, the config read
        through the schema; ({}, None, None) without one."""
        file = self.path / "config.yaml"
        try:
            stamp = file.stat().st_mtime_ns
        except FileNotFoundError:
            return {}, None, None
        if _CONFIGS.get(file, (None,))[0] != stamp:  # a sweep reads each file once, not once per decision
            full = yaml.safe_load(file.read_text()) or {}
            ident = tuple(full.pop(k, None) for k in IDENTITY)
            _CONFIGS[file] = stamp, ident, full.pop("data_source", None), Config.from_dict(full, str(file))
        _, ident, data_source, config = _CONFIGS[file]
        return dict(zip(IDENTITY, ident)), data_source, config

    def identity(self) -> dict[str, Any]:
        """What config.yaml says two runs must share to be the same experiment (see identity())."""
        _, data_source, config = self.read_config()
        if config is None:
            raise RunFolderError(f"{self.path}: no config.yaml")
        return identity(config, data_source)

    def read_metrics(self) -> RunRecord | None:
        """The RunRecord of metrics.json; None without one."""
        file = self.path / "metrics.json"
        values = read_json(file)
        try:
            return RunRecord.from_dict(values) if values else None
        except (AttributeError, TypeError, ValueError) as e:
            raise RunFolderError(f"{file}: not a metrics.json that keras-cifar wrote ({e})") from None

    def read_history(self) -> list[Epoch]:
        """The Epochs of history.csv; [] when there is no file."""
        try:
            with open(self.path / "history.csv", newline="") as f:
                return [Epoch.from_dict(row) for row in csv.DictReader(f)]
        except FileNotFoundError:
            return []

    def status(self) -> str | None:
        """completed, diverged or failed from metrics.json; unfinished without one; None if empty."""
        metrics = self.read_metrics()
        if metrics:
            return metrics.status
        return "unfinished" if self.exists() else None

    def load(self) -> Run:
        """The Run as it is now."""
        ident, data_source, config = self.read_config()
        metrics = self.read_metrics()
        seed = ident["seed"] if ident.get("seed") is not None else _seed_of(self.path) or 0
        return Run(
            self.path,
            ident.get("recipe") or self.path.parents[1].name,
            ident.get("variant") or self.path.parent.name,
            seed,
            config,
            data_source,
            metrics,
            self.read_history(),
            metrics.status if metrics else "unfinished",
        )

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    def checkpoints(self) -> list[tuple[int, Path]]:
        """[(epoch, file)] of the checkpoint files, newest first."""
        found = [
            (int(m.group(1)), p)
            for p in self.path.glob("checkpoint-epoch*.keras")
            if (m := re.fullmatch(r"checkpoint-epoch(\d+)\.keras", p.name))
        ]
        return sorted(found, reverse=True)

    def checkpoint(self) -> tuple[Path | None, int]:
        """(file, epoch) of the newest checkpoint that is a whole Keras archive, or (None, 0)."""
        return next(((file, epoch) for epoch, file in self.checkpoints() if unreadable(file) is None), (None, 0))

    # writing

    def write_config(self, spec: RunSpec, data_source: str) -> None:
        make_dirs(self.path)
        ident = {"recipe": spec.recipe, "variant": spec.variant, "seed": spec.seed}
        write_atomic(
            self.path / "config.yaml",
            yaml.safe_dump({**ident, "data_source": data_source, **spec.config.to_dict()}, sort_keys=False),
        )

    def write_history(self, rows: list[Epoch]) -> None:
        """history.csv of a list of Epochs."""
        write_csv(self.path / "history.csv", [row.to_dict() for row in rows], history_columns(rows))

    def write_metrics(self, record: RunRecord) -> None:
        """metrics.json of a RunRecord."""
        write_json(self.path / "metrics.json", record.to_dict())

    def write_error(self, text: str) -> None:
        write_atomic(self.path / "error.log", text)

    def save_model(self, save: Callable[[Path], Any]) -> None:
        """``save(path)`` writes the trained model (e.g. ``model.save``), atomically."""
        replace_atomic(self.model_file, save)

    def save_checkpoint(self, save: Callable[[Path], Any], epoch: int) -> None:
        """Write the checkpoint of `epoch` with ``save(path)``; keep it and the one before it only."""
        replace_atomic(self.path / f"checkpoint-epoch{epoch}.keras", save)
        for _, old in self.checkpoints()[CHECKPOINTS_KEPT:]:
            old.unlink()

    def remove_checkpoints(self, newer_than: int = -1) -> None:
        """Delete the checkpoints after epoch `newer_than` (all by default)."""
        for epoch, old in self.checkpoints():
            if epoch > newer_than:
                old.unlink()

    def remove_temporary(self) -> None:
        """Delete what an interrupted write left (a process killed while saving)."""
        for tmp in self.path.glob(f"{TMP_PREFIX}*"):
            tmp.unlink(missing_ok=True)


def unreadable(checkpoint: Path) -> str | None:
    """Why a checkpoint file is not a whole Keras archive (empty, truncated, not a zip), or None.
    Reads only the archive's directory; a file whose contents are damaged fails later, when loaded."""
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            missing = {"config.json", "model.weights.h5"} - set(archive.namelist())
    except (OSError, zipfile.BadZipFile) as e:
        return f"{type(e).__name__}: {e}"
    return f"no {' or '.join(sorted(missing))} in it" if missing else None


def _seed_of(path: Path | str) -> int | None:
    match = re.fullmatch(r"seed(\d+)", Path(path).name)
    return int(match.group(1)) if match else None


def identity(config: Config, data_source: str | None) -> dict[str, Any]:
    """A run's config and data without config.EXECUTION_KEYS: what two runs must share to be the same
    experiment (a finished run is kept, and a twin reused, whatever the others say)."""
    return {"data_source": data_source, **config.experiment()}


def completed_run(path: Path | str) -> Run:
    """The Run of a completed run folder (one that has a model), or a RunFolderError saying why not."""
    folder = RunFolder(path)
    if not (folder.path / "config.yaml").is_file():
        raise RunFolderError(f"{folder.path}: not a run folder (no config.yaml)")
    if not folder.model_file.is_file():
        raise RunFolderError(f"{folder.path}: no {MODEL_FILE} (run status: {folder.status()}); only completed runs have one")
    return folder.load()


# ----------------------------------------------------------------------------- folders of runs


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and _seed_of(path) is not None and RunFolder(path).exists()


def _is_recipe_dir(path: Path) -> bool:
    return any(_is_run_dir(seed) for variant in path.iterdir() if variant.is_dir() for seed in variant.iterdir())


def find_recipes(paths: Iterable[Path | str]) -> list[Path]:
    """Recipe folders under `paths` (each a recipe folder or an OUT root holding several), in order."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise RunFolderError(f"{path}: not a folder; expected a recipe run folder or an OUT root ({LAYOUT})")
        recipes = [path] if _is_recipe_dir(path) else [p for p in sorted(path.iterdir()) if p.is_dir() and _is_recipe_dir(p)]
        if not recipes:
            raise RunFolderError(f"{path}: no runs found; expected {LAYOUT}")
        found += [r for r in recipes if r not in found]
    return found


def natural_key(name: str) -> list[int | str]:
    """Sort key that puts 'batch64' before 'batch128'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def recipe_runs(recipe_dir: Path | str) -> dict[str, list[Run]]:
    """{variant: [Run, ...] by seed} of a recipe folder, variants in natural name order."""
    out = {}
    for vdir in sorted((p for p in Path(recipe_dir).iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        runs = sorted((RunFolder(p).load() for p in vdir.iterdir() if _is_run_dir(p)), key=lambda r: r.seed)
        if runs:
            out[vdir.name] = runs
    return out
