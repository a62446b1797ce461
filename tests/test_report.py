"""`keras-cifar report` and `compare` on fabricated run folders: no training, backend-independent."""

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml

from keras_cifar import compare, report
from keras_cifar.runfiles import write_history
from tests.conftest import tiny_recipe

EPOCHS = 4


def make_run(out, recipe, variant, seed, final_acc, status="completed", epochs_done=EPOCHS, config=None):
    """A run folder as `keras-cifar run` leaves it; accuracy climbs linearly to `final_acc`.
    status "unfinished" writes no metrics.json (a run still going); "diverged" ends in a NaN loss."""
    run = Path(out) / recipe / variant / f"seed{seed}"
    run.mkdir(parents=True)
    cfg = {"recipe": recipe, "variant": variant, "seed": seed, "data_source": "/data/cifar10-jpeg.tar.gz",
           "model": {"width": 8, "batch_norm": True}, "data": {"batch_size": 32, "subset": 1000},
           "optimizer": {"learning_rate": 0.1}, "schedule": {"name": "cosine"}, "loss": "cross_entropy",
           "train": {"epochs": EPOCHS, "seeds": [seed]}}
    for section, values in (config or {}).items():
        cfg[section] = {**cfg[section], **values} if isinstance(values, dict) else values
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = []
    for e in range(1, epochs_done + 1):
        acc = final_acc * e / EPOCHS
        lr = 0.1 if cfg["schedule"]["name"] == "constant" else 0.05 * (1 + math.cos(math.pi * e / EPOCHS))
        loss = float("nan") if status == "diverged" and e == epochs_done else 2.0 - acc
        rows.append({"epoch": e, "loss": loss, "accuracy": acc, "val_loss": loss, "val_accuracy": acc - 0.01,
                     "test_loss": loss, "test_accuracy": acc, "lr": lr, "epoch_seconds": 10.0, "train_seconds": 8.0})
    write_history(run / "history.csv", rows)
    if status != "unfinished":
        metrics = {"status": status, "epochs_completed": epochs_done, "epochs": EPOCHS,
                   "test_accuracy": None if status == "diverged" else final_acc,
                   "val_accuracy": final_acc - 0.01, "best_val_accuracy": final_acc - 0.01,
                   "train_seconds": 8.0 * epochs_done, "wall_seconds": 10.0 * epochs_done,
                   "images_per_second": 125.0, "backend": "jax", "device": "gpu: Test GPU",
                   "data": {"source": "/data/cifar10-jpeg.tar.gz", "train": 1000, "val": 5000, "test": 5000}}
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def bn_runs(tmp_path):
    """Recipe bn: `bn` has three completed seeds; `no_bn` one completed, one diverged and seed 2 missing."""
    out = tmp_path / "runs"
    for seed, acc in enumerate((0.60, 0.62, 0.67)):
        make_run(out, "bn", "bn", seed, acc)
    make_run(out, "bn", "no_bn", 0, 0.50, config={"model": {"batch_norm": False}})
    make_run(out, "bn", "no_bn", 1, 0.1, status="diverged", epochs_done=2, config={"model": {"batch_norm": False}})
    return out


def _row(summary, variant):
    return next(r for r in summary["variants"] if r["variant"] == variant)


def test_report_table_numbers_diverged_run_and_missing_seed(bn_runs):
    summary, paths = report.write_report(bn_runs / "bn")
    bn, no_bn = _row(summary, "bn"), _row(summary, "no_bn")
    mean = (0.60 + 0.62 + 0.67) / 3
    std = math.sqrt(((0.60 - mean) ** 2 + (0.62 - mean) ** 2 + (0.67 - mean) ** 2) / 2)  # sample std, ddof=1
    assert bn["test_accuracy"]["mean"] == pytest.approx(mean) and bn["test_accuracy"]["std"] == pytest.approx(std)
    assert bn["test_accuracy"]["n"] == 3 and bn["status"] == "completed"
    assert no_bn["test_accuracy"] == {"mean": 0.5, "std": None, "min": 0.5, "max": 0.5, "n": 1}  # diverged left out
    assert no_bn["missing_seeds"] == [2] and [r["status"] for r in no_bn["runs"]] == ["completed", "diverged"]
    assert summary["highest_test_accuracy"] == ["bn"]

    text = (bn_runs / "bn" / "report.md").read_text()
    assert f"| bn | **{100 * mean:.2f} ± {100 * std:.2f}** (n=3) | 62.00 | 4 | completed | 0m32s | 125 |" in text
    assert "| no_bn | 50.00 (n=1 of 3) | 49.00 | 4 | 1 completed; seed1 diverged at epoch 2; seed2 missing |" in text
    assert "- Variants differ in `model.batch_norm`: bn = true, no_bn = false" in text
    assert json.loads((bn_runs / "bn" / "summary.json").read_text()) == summary
    names = {p.name for p in paths}
    assert {f"{stem}.{ext}" for stem in ("test_curves", "train_val_curves") for ext in ("png", "svg")} <= names
    assert "lr.png" not in names  # both variants ran the same schedule
    for p in paths:
        assert p.stat().st_size > 1000 if p.suffix in (".png", ".svg") else p.exists()
    assert (bn_runs / "bn" / "test_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_unfinished_and_failed_runs_are_shown_not_dropped(tmp_path):
    make_run(tmp_path, "lr", "cosine", 0, 0.6)
    fixed = {"schedule": {"name": "constant"}}
    make_run(tmp_path, "lr", "fixed", 0, 0.5, status="unfinished", epochs_done=2, config=fixed)
    make_run(tmp_path, "lr", "fixed", 1, 0.5, status="failed", epochs_done=3, config=fixed)
    summary, paths = report.write_report(tmp_path / "lr")
    fixed = _row(summary, "fixed")
    assert fixed["test_accuracy"] is None
    assert fixed["status"] == "seed0 unfinished, 2/4 epochs; seed1 failed after 3/4 epochs"
    assert _row(summary, "cosine")["status"] == "1 completed; seed1 missing"
    assert "| fixed | – | – | 4 | seed0 unfinished, 2/4 epochs; seed1 failed after 3/4 epochs |" in \
        (tmp_path / "lr" / "report.md").read_text()
    assert {"lr.png", "lr.svg"} <= {p.name for p in paths}  # the learning rates differ


def test_find_recipes_in_an_out_root_and_a_clear_error_without_runs(tmp_path, cli):
    make_run(tmp_path / "runs", "bn", "bn", 0, 0.6)
    make_run(tmp_path / "runs", "loss", "cross_entropy", 0, 0.6)
    (tmp_path / "runs" / "notes").mkdir()
    assert report.find_recipes([tmp_path / "runs"]) == [tmp_path / "runs" / "bn", tmp_path / "runs" / "loss"]
    assert report.find_recipes([tmp_path / "runs" / "bn"]) == [tmp_path / "runs" / "bn"]

    result = cli("report", tmp_path / "runs" / "notes")
    assert result.exit_code == 2 and "no runs found; expected OUT/<recipe>/<variant>/seed<k>/" in result.output


def test_cli_report_writes_every_recipe_into_out(bn_runs, tmp_path, cli):
    make_run(bn_runs, "loss", "cross_entropy", 0, 0.6)
    result = cli("report", bn_runs, "--out", tmp_path / "figs")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "figs" / "bn" / "test_curves.svg").exists()
    assert (tmp_path / "figs" / "loss" / "report.md").exists()
    assert "| no_bn | 50.00 (n=1 of 3)" in result.output
    assert not (bn_runs / "bn" / "report.md").exists()


def test_run_ends_with_the_recipes_report(tmp_path, cli, monkeypatch):
    from keras_cifar import train

    def fake_sweep(runs, data_source, out_root):  # stands in for training
        for spec in runs:
            make_run(out_root, spec.recipe, spec.variant, spec.seed, 0.5 if spec.variant == "a" else 0.6)
        return [(spec, {"status": "completed"}) for spec in runs]

    monkeypatch.setattr(train, "run_sweep", fake_sweep)
    result = cli("run", tiny_recipe(tmp_path, "  a: {}\n  b: {model: {width: 8}}\n"), "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "tiny" / "test_curves.png").exists()
    assert "tiny: " in result.output and "| b | **60.00** (n=1)" in result.output


# ------------------------------------------------------------------------------------------ compare


def _stats(*accs):
    return {"mean": statistics.fmean(accs), "min": min(accs), "max": max(accs), "n": len(accs)}


@pytest.mark.parametrize("bn, no_bn, answer", [
    ((0.60, 0.62), (0.50, 0.52), "yes"),
    ((0.50, 0.52), (0.60, 0.62), "no"),
    ((0.55, 0.62), (0.50, 0.58), "can't tell"),  # means in order, but the seed ranges overlap
    ((0.60,), (0.50, 0.52), "yes, 1 seed"),
    ((0.50,), (0.60,), "no, 1 seed"),
])
def test_judge_pairs(bn, no_bn, answer):
    assert compare.judge(("bn", "no_bn"), {"bn": _stats(*bn), "no_bn": _stats(*no_bn)})[0] == answer


def test_judge_three_way_worst_pair_decides_and_missing_data():
    stats = {"relu": _stats(0.7, 0.72), "tanh": _stats(0.6, 0.62), "sigmoid": _stats(0.61, 0.65)}
    order = ("relu", "tanh", "sigmoid")
    assert compare.judge(order, stats) == ("can't tell", "within the seed spread: tanh vs sigmoid")
    assert compare.our_ordering(stats) == "relu > sigmoid ≈ tanh"
    assert compare.judge(order, {**stats, "sigmoid": None})[0] == "no data"
    assert compare.judge((), stats)[0] == "n/a"


def test_compare_page_flags_disagreement_and_agreement(tmp_path, cli):
    runs = tmp_path / "results" / "runs"
    for seed in (0, 1):  # bn contradicts the report in every seed; activation matches it
        make_run(runs, "bn", "bn", seed, 0.40 + seed / 100)
        make_run(runs, "bn", "no_bn", seed, 0.55 + seed / 100, config={"model": {"batch_norm": False}})
        for variant, acc in (("relu", 0.7), ("tanh", 0.6), ("sigmoid", 0.4)):
            make_run(runs, "activation", variant, seed, acc + seed / 100, config={"model": {"activation": variant}})
    notes = tmp_path / "notes.md"
    notes.write_text("At 4 epochs BN loses.")
    out = tmp_path / "results" / "README.md"
    result = cli("compare", runs, "--out", out, "--notes", notes)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    summary = {line.split(" | ")[0]: line for line in page.splitlines() if line.startswith("| ")}
    assert summary["| [bn](#bn)"].endswith("| no_bn > bn | **no** |")
    assert summary["| [activation](#activation)"].endswith("| relu > tanh > sigmoid | **yes** |")
    assert "relu 95.48 / tanh 92.37 / sigmoid 87.63" in summary["| [activation](#activation)"]
    assert summary["| momentum (not run yet)"].endswith("| **n/a** |")
    assert "| relu | 95.48 | **70.50 ± 0.71** (n=2) |" in page  # the report's number beside ours
    assert "![bn: test accuracy and loss per epoch](runs/bn/test_curves.png)" in page
    assert (runs / "bn" / "test_curves.png").exists()
    for fact in ("width (Channel1) 8", "epochs 4", "seeds 0, 1", "training subset 1,000 images",
                 "JPEG copy of CIFAR-10: lossy", "gpu: Test GPU", f"keras-cifar compare {runs} --out {out}",
                 "## Discussion\n\nAt 4 epochs BN loses."):
        assert fact in page
