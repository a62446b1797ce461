"""Run folders: the only module that reads or writes them (training, reports, landscapes, serving, tests).

``OUT/<recipe>/<variant>/seed<k>/`` holds:

- ``config.yaml``: the resolved config, with recipe, variant, seed and data_source;
- ``history.csv``: one row per finished epoch (HISTORY_COLUMNS);
- ``metrics.json``: the final numbers and the status (completed, diverged or failed), written at the end;
- ``model.keras`` (completed runs), ``error.log`` (failed runs), ``tb/`` (TensorBoard logs);
- ``checkpoint-epoch<k>.keras`` while a run is going: the state after epoch k, where ``run`` resumes
  (the newest two are kept, so that an unreadable newest one falls back to the one before);
- ``.lock`` while a process trains it, so that processes sharing the folder never train it twice.

A folder with a config or history but no metrics.json is *unfinished*: still going, or interrupted.
Keras-free, so reports and ``--dry-run`` start fast.
"""

import contextlib
import csv
import json
import math
import os
import re
import shutil
import socket
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from keras_cifar.cluster import task_identity
from keras_cifar.config import experiment
from keras_cifar.console import count, duration
from keras_cifar.errors import RunFolderError, WriteError
from keras_cifar.files import TMP_PREFIX, make_dirs, read_json, replace_atomic, write_atomic, write_csv, write_json, writing

HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                   "lr", "epoch_seconds", "train_seconds")
FINISHED = ("completed", "diverged")  # `run` skips these; failed and unfinished runs are trained again
IDENTITY = ("recipe", "variant", "seed")
LAYOUT = "OUT/<recipe>/<variant>/seed<k>/ folders holding config.yaml, history.csv or metrics.json"
MODEL_FILE = "model.keras"
CHECKPOINTS_KEPT = 2  # the newest and the one before it, should the newest prove unreadable
LOCK_FILE = ".lock"  # held while a process trains the run: {host, pid, time}, touched as a heartbeat
HEARTBEAT_SECONDS = 15.0
# A lock not touched for this long is taken over: its process died on another host (on this host, a dead
# pid is seen at once). Long enough for NFS's attribute caching (up to 60 s); a requeued SLURM task or a
# restarted pod takes over its own lock at once instead (cluster.task_identity).
STALE_SECONDS = 120.0


def finite_or_none(x):
    return float(x) if x is not None and math.isfinite(x) else None


def diff_keys(a, b, prefix=""):
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
    config: dict  # the config sections and data_source, without recipe/variant/seed
    metrics: dict  # {} until the run ends
    history: list
    status: str  # completed | diverged | failed | unfinished

    @property
    def label(self):
        return f"{self.recipe}/{self.variant}/seed{self.seed}"

    @property
    def epochs(self):
        return self.metrics.get("epochs") or (self.config.get("train") or {}).get("epochs")

    @property
    def epochs_completed(self):
        return self.metrics.get("epochs_completed", len(self.history))


class RunFolder:
    """``OUT/<recipe>/<variant>/seed<k>/``: reads what is there and writes each file of a run."""

    def __init__(self, path):
        self.path = Path(path)
        self.lock = self.path / LOCK_FILE

    @classmethod
    def of(cls, out_root, spec):
        """The folder of a config.RunSpec under `out_root`."""
        return cls(Path(out_root) / spec.recipe / spec.variant / f"seed{spec.seed}")

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    # reading

    def exists(self):
        return any((self.path / f).exists() for f in ("config.yaml", "history.csv", "metrics.json"))

    def read_config(self):
        """(identity {recipe, variant, seed}, config sections with data_source) from config.yaml."""
        try:
            full = yaml.safe_load((self.path / "config.yaml").read_text()) or {}
        except FileNotFoundError:
            return {}, {}
        return {k: full.pop(k, None) for k in IDENTITY}, full

    def read_metrics(self):
        return read_json(self.path / "metrics.json")

    def read_history(self):
        """History rows as dicts of floats (epoch as int); [] when there is no file."""
        try:
            with open(self.path / "history.csv", newline="") as f:
                return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                        for row in csv.DictReader(f)]
        except FileNotFoundError:
            return []

    def status(self):
        """completed, diverged or failed from metrics.json; unfinished without one; None if empty."""
        metrics = self.read_metrics()
        if metrics:
            return metrics.get("status", "unfinished")
        return "unfinished" if self.exists() else None

    def load(self):
        """The Run as it is now."""
        ident, config = self.read_config()
        metrics = self.read_metrics() or {}
        seed = ident["seed"] if ident.get("seed") is not None else _seed_of(self.path)
        return Run(self.path, ident.get("recipe") or self.path.parents[1].name,
                   ident.get("variant") or self.path.parent.name, seed, config, metrics,
                   self.read_history(), metrics.get("status", "unfinished"))

    @property
    def model_file(self):
        return self.path / MODEL_FILE

    def checkpoints(self):
        """[(epoch, file)] of the checkpoint files, newest first."""
        found = [(int(m.group(1)), p) for p in self.path.glob("checkpoint-epoch*.keras")
                 if (m := re.fullmatch(r"checkpoint-epoch(\d+)\.keras", p.name))]
        return sorted(found, reverse=True)

    def checkpoint(self):
        """(file, epoch) of the newest checkpoint that is a whole Keras archive, or (None, 0)."""
        return next(((file, epoch) for epoch, file in self.checkpoints() if unreadable(file) is None), (None, 0))

    # writing

    def write_config(self, spec, data_source):
        make_dirs(self.path)
        ident = {"recipe": spec.recipe, "variant": spec.variant, "seed": spec.seed}
        write_atomic(self.path / "config.yaml",
                     yaml.safe_dump({**ident, **expected_config(spec, data_source)}, sort_keys=False))

    def write_history(self, rows):
        write_csv(self.path / "history.csv", rows, HISTORY_COLUMNS)

    def write_metrics(self, metrics):
        write_json(self.path / "metrics.json", metrics)

    def write_error(self, text):
        write_atomic(self.path / "error.log", text)

    def save_model(self, save):
        """``save(path)`` writes the trained model (e.g. ``model.save``), atomically."""
        replace_atomic(self.model_file, save)

    def save_checkpoint(self, save, epoch):
        """Write the checkpoint of `epoch` with ``save(path)``; keep it and the one before it only."""
        replace_atomic(self.path / f"checkpoint-epoch{epoch}.keras", save)
        for _, old in self.checkpoints()[CHECKPOINTS_KEPT:]:
            old.unlink()

    def remove_checkpoints(self, newer_than=-1):
        """Delete the checkpoints after epoch `newer_than` (all by default)."""
        for epoch, old in self.checkpoints():
            if epoch > newer_than:
                old.unlink()

    def remove_temporary(self):
        """Delete what an interrupted write left (a process killed while saving)."""
        for tmp in self.path.glob(f"{TMP_PREFIX}*"):
            tmp.unlink(missing_ok=True)

    # claiming: one process trains a run, whatever else shares the folder

    def claim(self):
        """Take this run for this process: create its lock file, or take over a stale one (its owner
        died: same host and no such process, the same scheduler task (requeued), or no heartbeat for
        STALE_SECONDS). Returns None, or the owner ('host pid ...') of a live lock held elsewhere."""
        make_dirs(self.path)
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = read_json(self.lock) or {}
                if not _stale(self.lock, owner):
                    return f"{owner.get('host')} pid {owner.get('pid')} since {owner.get('time')}"
                taken = self.path / f"{LOCK_FILE}.stale{os.getpid()}"
                with contextlib.suppress(FileNotFoundError):  # rename is atomic: one process gets the file
                    os.rename(self.lock, taken)
                    if (read_json(taken) or {}) != owner:  # a fresh lock, of who took it over first
                        os.rename(taken, self.lock)
                        return "another process, which took over the stale lock first"
                    taken.unlink()
                continue
            try:
                with writing(self.lock), os.fdopen(fd, "w") as f:
                    json.dump({"host": socket.gethostname(), "pid": os.getpid(), "task": task_identity(),
                               "time": time.strftime("%Y-%m-%d %H:%M:%S")}, f)
            except WriteError:
                self.lock.unlink(missing_ok=True)
                raise
            return None
        return "another process, which took over the stale lock first"

    @contextlib.contextmanager
    def heartbeat(self):
        """While the run trains, touch its lock every HEARTBEAT_SECONDS; remove it at the end."""
        stop = threading.Event()

        def beat():
            while not stop.wait(HEARTBEAT_SECONDS):
                with contextlib.suppress(OSError):
                    os.utime(self.lock)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with contextlib.suppress(OSError):
                self.lock.unlink()


def _stale(lock, owner):
    if owner.get("task") and owner["task"] == task_identity():  # this task's own, before a requeue
        return True
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    try:
        return time.time() - lock.stat().st_mtime > STALE_SECONDS
    except FileNotFoundError:
        return True


def unreadable(checkpoint):
    """Why a checkpoint file is not a whole Keras archive (empty, truncated, not a zip), or None.
    Reads only the archive's directory; a file whose contents are damaged fails later, when loaded."""
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            missing = {"config.json", "model.weights.h5"} - set(archive.namelist())
    except (OSError, zipfile.BadZipFile) as e:
        return f"{type(e).__name__}: {e}"
    return f"no {' or '.join(sorted(missing))} in it" if missing else None


def _seed_of(path):
    match = re.fullmatch(r"seed(\d+)", Path(path).name)
    return int(match.group(1)) if match else None


def expected_config(spec, data_source):
    """What config.yaml holds for `spec` on `data_source`, without the run identity."""
    return {"data_source": data_source, **spec.config}


def completed_run(path):
    """The Run of a completed run folder (one that has a model), or a RunFolderError saying why not."""
    folder = RunFolder(path)
    if not (folder.path / "config.yaml").is_file():
        raise RunFolderError(f"{folder.path}: not a run folder (no config.yaml)")
    if not folder.model_file.is_file():
        raise RunFolderError(f"{folder.path}: no {MODEL_FILE} (run status: {folder.status()}); "
                             "only completed runs have one")
    return folder.load()


# ------------------------------------------------------------------------------- sweeps of runs


def find_twin(out_root, spec, data_source):
    """A finished run folder under `out_root` (any recipe) with `spec`'s config and data, or None."""
    own = RunFolder.of(out_root, spec).path
    for cfg_file in sorted(Path(out_root).glob(f"*/*/seed{spec.seed}/config.yaml")):
        twin = RunFolder(cfg_file.parent)
        if (twin.path != own and twin.status() in FINISHED
                and experiment(twin.read_config()[1]) == experiment(expected_config(spec, data_source))):
            return twin
    return None


def reuse(twin, folder, spec, data_source):
    """Copy the finished `twin` into `folder` under `spec`'s name; returns its metrics."""
    shutil.copytree(twin.path, folder.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint-*", ".*"))
    folder.write_config(spec, data_source)
    original = twin.read_metrics()
    metrics = {**original, "recipe": spec.recipe, "variant": spec.variant,  # a copy of a copy names the original
               "reused_from": original.get("reused_from") or str(Path(*twin.path.parts[-3:]))}
    folder.write_metrics(metrics)
    return metrics


@dataclass(frozen=True)
class Decision:
    """What ``run`` does with one RunSpec: ``done`` (skip), ``reuse`` (copy `twin`), ``resume``
    (after epoch `start`) or ``new``."""

    action: str
    folder: RunFolder
    status: str = None  # for done: completed or diverged
    twin: RunFolder = None
    start: int = 0


def decide(out_root, spec, data_source, restart=False):
    """The Decision for `spec`; a RunFolderError when its folder holds a run with a different config, or
    checkpoints of which none can be read. `restart`: an unfinished run starts again from epoch 0."""
    folder = RunFolder.of(out_root, spec)
    if (folder.path / "config.yaml").exists():
        diffs = diff_keys(experiment(folder.read_config()[1]), experiment(expected_config(spec, data_source)))
        if diffs:
            raise RunFolderError(f"{folder.path} already holds a run with a different config (differs in "
                                 f"{', '.join(diffs)}); use another --out or delete that folder")
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
        raise RunFolderError(f"{newest}: cannot be read ({unreadable(newest)}); run the same command with "
                             f"--restart to train {spec.key} again from epoch 0")
    return Decision("resume" if start else "new", folder, start=start)


def plan(runs, out_root, data_source, restart=False):
    """What ``run`` would do with each RunSpec, one line each, with times estimated from finished runs
    under `out_root` on the same data, width and training subset (median seconds per epoch)."""
    decisions = [decide(out_root, spec, data_source, restart) for spec in runs]  # refuses like the real run
    epoch_seconds = {}
    for m_file in Path(out_root).glob("*/*/seed*/metrics.json"):
        folder = RunFolder(m_file.parent)
        m, config = folder.read_metrics() or {}, folder.read_config()[1]
        if m.get("status") == "completed" and not m.get("reused_from") and config.get("data_source") == data_source:
            epoch_seconds.setdefault(_scale(config), []).append(m["wall_seconds"] / m["epochs_completed"])
    lines, total, unknown = [], 0.0, 0
    for spec, d in zip(runs, decisions):
        if d.action == "done":
            lines.append(f"{spec.key}: already {d.status}")
            continue
        if d.action == "reuse":
            lines.append(f"{spec.key}: reuses {d.twin.path.relative_to(out_root)}")
            continue
        c = spec.config
        epochs = c["train"]["epochs"]
        known = sorted(epoch_seconds.get(_scale(c), []))
        estimate = (epochs - d.start) * known[len(known) // 2] if known else 0.0
        total, unknown = total + estimate, unknown + (not known)
        lines.append(f"{spec.key}: {f'resume after epoch {d.start}' if d.start else 'new'}, width {c['model']['width']}, "
                     f"{count(epochs, 'epoch')}, batch {c['data']['batch_size']}, "
                     + (f"about {duration(estimate)}" if known else "no timing yet at this scale"))
    lines.append(f"estimated total: {duration(total)}" + (f" + {count(unknown, 'run')} not yet timed" if unknown else ""))
    return lines


def _scale(config):
    return config["model"]["width"], config["data"]["subset"]


# ----------------------------------------------------------------------------- folders of runs


def _is_run_dir(path):
    return path.is_dir() and _seed_of(path) is not None and RunFolder(path).exists()


def _is_recipe_dir(path):
    return any(_is_run_dir(seed) for variant in path.iterdir() if variant.is_dir() for seed in variant.iterdir())


def find_recipes(paths):
    """Recipe folders under `paths` (each a recipe folder or an OUT root holding several), in order."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise RunFolderError(f"{path}: not a folder; expected a recipe run folder or an OUT root ({LAYOUT})")
        recipes = [path] if _is_recipe_dir(path) else [p for p in sorted(path.iterdir())
                                                         if p.is_dir() and _is_recipe_dir(p)]
        if not recipes:
            raise RunFolderError(f"{path}: no runs found; expected {LAYOUT}")
        found += [r for r in recipes if r not in found]
    return found


def natural_key(name):
    """Sort key that puts 'batch64' before 'batch128'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def recipe_runs(recipe_dir):
    """{variant: [Run, ...] by seed} of a recipe folder, variants in natural name order."""
    out = {}
    for vdir in sorted((p for p in Path(recipe_dir).iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        runs = sorted((RunFolder(p).load() for p in vdir.iterdir() if _is_run_dir(p)), key=lambda r: r.seed)
        if runs:
            out[vdir.name] = runs
    return out
