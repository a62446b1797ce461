"""``keras-cifar bench``: how fast ``run`` trains on each backend and precision, against plain PyTorch.

Each configuration runs in a process of its own (KERAS_BACKEND is fixed once Keras is imported). It
trains the recipe's first variant at its first seed through ``run``'s own code (sweep.run_sweep:
model, augmentation, optimizer, schedule, feeder, per-epoch evaluation, history, checkpoint,
TensorBoard) in a temporary folder, and reads its history.csv: the first epoch (compilation
included), the median of the later epochs, their training part, the rest of the epoch (what ``run``
adds: validation and test evaluation, TensorBoard, checkpoint) and training images/s. ``--reference``
trains the same network, recipe and data in plain PyTorch (torch_reference.py) in the same bench, so
that the ratios compare like with like on one machine.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from keras_cifar.config import Config, Recipe, RunSpec
from keras_cifar.core import backend
from keras_cifar.core.console import say
from keras_cifar.core.errors import BackendError, ConfigError
from keras_cifar.core.files import read_json, write_json
from keras_cifar.core.record import DataSizes

PRECISIONS = {"fp32": False, "bf16": True}  # -> train.mixed_precision
GPU_INPUT_NOTE = (
    "On the GPU the ratios include one difference of input path: the PyTorch reference keeps the training "
    "set on the device and gathers each batch there; keras-cifar gathers each batch on the host "
    "(data.pipeline) and copies it to the device."
)


def configurations(backends: str | None, precisions: str, reference: bool) -> list[tuple[str, str]]:
    """``--backends jax,torch:fp32 --precision fp32,bf16`` -> [(backend, precision), ...], each backend
    checked (installed, spelled right) and PyTorch present for ``--reference``, before anything trains.
    `backends` None (no --backends): the installed backends, saying which are skipped."""
    if backends is None:
        skipped = [name for name in backend.BACKENDS if not backend.installed(name)]
        if skipped:
            say(f"bench: {' and '.join(skipped)} not installed, skipped (--backends chooses the backends)")
        backends = ",".join(name for name in backend.BACKENDS if name not in skipped)
    default = [p.strip() for p in precisions.split(",") if p.strip()]
    configs = [
        (name, p)
        for entry in backends.split(",")
        if entry.strip()
        for name, _, pinned in [entry.strip().partition(":")]
        for p in ([pinned] if pinned else default)
    ]
    unknown = sorted({p for _, p in configs if p not in PRECISIONS})
    if unknown or not configs:
        raise ConfigError(f"--precision: {', '.join(unknown) or 'nothing'} given; use fp32 and/or bf16")
    for name in {name for name, _ in configs}:  # checked here, run in a process of its own
        backend.check(name, "--backends")
    if reference and not backend.installed("torch"):
        raise BackendError('--reference trains in plain PyTorch, which is not installed: pip install -e ".[torch]"')
    return configs


def summarize(rows: list[dict[str, Any]], images: int) -> dict[str, Any]:
    """Timing of one training from its history rows: the first epoch, then medians over the rest."""
    later = rows[1:] or rows
    epoch = statistics.median(r["epoch_seconds"] for r in later)
    trained = statistics.median(r["train_seconds"] for r in later)
    return {
        "epochs": len(rows),
        "compile_seconds": rows[0]["epoch_seconds"],
        "epoch_seconds": epoch,
        "train_seconds": trained,
        "overhead_seconds": epoch - trained,
        "images_per_second": images / trained,
        "test_accuracy": rows[-1]["test_accuracy"],
    }


def child(settings_file: str, result_file: str) -> None:
    """Train one configuration with run's code and write its result (``python -m keras_cifar.tools.bench``)."""
    from keras_cifar.core import backend
    from keras_cifar.data import sources as data
    from keras_cifar.training.runs import RunFolder

    settings = json.loads(Path(settings_file).read_text())
    config = Config.from_dict(settings["config"], settings_file)
    cifar = data.load(settings["data"])
    backend.start(deterministic=config.train.deterministic)
    from keras_cifar.training.sweep import run_sweep

    spec = RunSpec(settings["recipe"], settings["label"], config.train.seeds[0], config)
    with tempfile.TemporaryDirectory() as out:
        ((_, metrics),) = run_sweep([spec], cifar, out)
        rows = [row.to_dict() for row in RunFolder.of(out, spec).read_history()]
    result = {
        "status": metrics.status,
        "device": metrics.device,
        "precision": metrics.precision,
        "math": metrics.math,
        "steps_per_execution": metrics.steps_per_execution,
        "versions": metrics.versions,
    }
    if rows and metrics.status == "completed":
        result.update(summarize(rows, cast(DataSizes, metrics.data).train))  # a completed run's sizes are recorded
    write_json(result_file, result)


def _subprocess(module: str, settings: dict[str, Any], env: dict[str, str], workdir: str, name: str) -> dict[str, Any]:
    """Run ``python -m module SETTINGS RESULT`` with its output passed through; its result, or a failure."""
    settings_file, result_file = Path(workdir) / f"{name}.json", Path(workdir) / f"{name}.result.json"
    write_json(settings_file, settings)
    done = subprocess.run(
        [sys.executable, "-m", module, str(settings_file), str(result_file)], env={**os.environ, **env}, check=False
    )
    result = read_json(result_file)
    if done.returncode or result is None:
        return {"status": "failed", "error": f"exit code {done.returncode} (its output is above)"}
    return result


def run_bench(
    recipe: Recipe,
    config: Config,
    data_source: str,
    configs: list[tuple[str, str]],
    epochs: int,
    reference: bool,
    saved: Callable[[dict[str, Any]], None] = lambda record: None,
) -> dict[str, Any]:
    """Each (backend, precision) of `configs` through run's code, then the PyTorch reference; returns
    the record, and hands it to `saved` after each configuration (so it grows as the bench goes)."""
    config = config.updated({"train": {"epochs": epochs}})
    record: dict[str, Any] = {
        "recipe": recipe.path,
        "variant": next(iter(recipe.variants)),
        "data": data_source,
        "epochs": epochs,
        "config": config.to_dict(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "results": [],
        "reference": None,
    }
    with tempfile.TemporaryDirectory() as workdir:
        for i, (b, p) in enumerate(configs, start=1):
            say(f"\nbench {i}/{len(configs)}: {b} {p}")
            cfg = config.updated({"train": {"mixed_precision": PRECISIONS[p]}})
            settings = {"recipe": recipe.name, "label": f"{b}-{p}", "config": cfg.to_dict(), "data": data_source}
            record["results"].append(
                {
                    "backend": b,
                    "requested": p,
                    **_subprocess("keras_cifar.tools.bench", settings, {"KERAS_BACKEND": b}, workdir, f"{b}-{p}"),
                }
            )
            saved(record)
        if reference:
            say("\nbench: PyTorch reference")
            ref = _subprocess(
                "keras_cifar.tools.torch_reference",
                {"config": config.to_dict(), "data": data_source, "epochs": epochs},
                {},
                workdir,
                "reference",
            )
            if ref.get("status") != "failed":
                ref["modes"] = {mode: summarize(rows, ref["images"]) for mode, rows in ref["modes"].items()}
            record["reference"] = ref
            saved(record)
    return record


def _fastest_reference(record: dict[str, Any]) -> float | None:
    ref = record["reference"]
    if not ref or not ref.get("modes"):
        return None
    return max(ref["modes"].values(), key=lambda m: m["images_per_second"])["images_per_second"]


def table(record: dict[str, Any]) -> str:
    """The bench's table, Markdown: one row per configuration and reference mode."""
    best = _fastest_reference(record)
    head = (
        "| configuration | device | first epoch (s) | epoch (s) | training (s) | overhead (s) | train images/s "
        "| × PyTorch | test accuracy |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def row(name: str, device: str, r: dict[str, Any]) -> str:
        if "images_per_second" not in r:
            return f"| {name} | {device} | {r.get('status', 'failed')}: {r.get('error', '')} |||||||"
        ratio = f"{r['images_per_second'] / best:.2f}x" if best else "–"
        return (
            f"| {name} | {device} | {r['compile_seconds']:.1f} | {r['epoch_seconds']:.2f} | "
            f"{r['train_seconds']:.2f} | {r['overhead_seconds']:.2f} | {r['images_per_second']:.0f} | {ratio} | "
            f"{r['test_accuracy']:.2%} |"
        )

    for r in record["results"]:
        lines.append(row(f"keras-cifar {r['backend']} {r.get('math', r['requested'])}", r.get("device", "?"), r))
    ref = record["reference"]
    if ref:
        for mode, r in (ref.get("modes") or {}).items():
            math = "tf32" if mode == "fp32" and ref.get("tf32") else mode
            lines.append(row(f"PyTorch reference {math}", ref["device"], r))
        for mode, why in (ref.get("skipped") or {}).items():
            lines.append(f"| PyTorch reference {mode} | {ref['device']} | skipped: {why} |||||||")
        if ref.get("status") == "failed":
            lines.append(f"| PyTorch reference | – | failed: {ref['error']} |||||||")
        elif ref.get("device", "cpu") != "cpu":
            lines.append(f"\n{GPU_INPUT_NOTE}")
    return "\n".join(lines)


if __name__ == "__main__":
    child(*sys.argv[1:3])
