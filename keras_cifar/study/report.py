"""Figures, a Markdown table and summary.json for the runs of one recipe (``OUT/<recipe>/``).

Keras-free: it reads only run folders (``<variant>/seed<k>/`` with config.yaml, history.csv and
metrics.json). Every run found is accounted for: completed runs make the numbers; diverged, failed and
unfinished runs (a history.csv but no metrics.json: still going, or interrupted) are shown as such, and a
seed that some variant has but another lacks is listed as missing.

Numbers: final-epoch test accuracy, mean ± sample standard deviation (ddof=1) over the completed seeds,
its t-interval at the level of the rule the seeds were gathered under (95 % for seeds fixed in advance,
the per-look level of a `--seeds auto` plan: claims.plan_of) and the binomial standard error of one test
set (stats.py).
The table bolds the highest mean test accuracy, as the report's tables do; nothing is selected on it.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from keras_cifar.config import Config
from keras_cifar.core.console import count, duration
from keras_cifar.core.errors import RunFolderError
from keras_cifar.core.files import make_dirs, write_atomic, write_json
from keras_cifar.core.record import RunRecord
from keras_cifar.study import plots
from keras_cifar.study.claims import plan_of
from keras_cifar.study.stats import FIXED, Rule, Stats, describe
from keras_cifar.training.runs import LAYOUT, Run, natural_key, recipe_runs

STATUS_ORDER = ("completed", "unfinished", "diverged", "failed", "missing")
Summary = dict[str, Any]  # a recipe's numbers, as summary.json holds them (summarize)


@dataclass
class Variant:
    """A recipe's variant: its runs (runs.Run, by seed) and the seeds other variants have but it lacks."""

    name: str
    runs: list[Run]
    missing: list[int] = field(default_factory=list)

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.status == "completed"]


def load_variants(recipe_dir: Path | str) -> list[Variant]:
    """The recipe's variants (natural name order) with their runs; seeds missing from a variant are noted."""
    variants = [Variant(name, runs) for name, runs in recipe_runs(recipe_dir).items()]
    seeds = {r.seed for v in variants for r in v.runs}
    for v in variants:
        v.missing = sorted(seeds - {r.seed for r in v.runs})
    return variants


# ---------------------------------------------------------------------------------------- numbers


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _run_problem(run: Run) -> str:
    """A run that is not completed, in words: 'diverged at epoch 3', 'unfinished, 7/10 epochs'."""
    if run.status == "diverged":
        return f"diverged at epoch {run.epochs_completed}"
    if run.status == "unfinished":
        return f"unfinished, {run.epochs_completed}/{run.epochs} epochs"
    return f"{run.status} after {run.epochs_completed}/{run.epochs} epochs"


def status_text(variant: Variant) -> str:
    """'completed', or what is wrong with which seed: '1 completed; seed1 diverged at epoch 3; seed2 missing'."""
    problems = [f"seed{r.seed} {_run_problem(r)}" for r in variant.runs if r.status != "completed"]
    problems += [f"seed{s} missing" for s in variant.missing]
    if not problems:
        return "completed"
    return "; ".join(([f"{len(variant.completed)} completed"] if variant.completed else []) + problems)


def _counts_text(variant: Variant) -> str:
    """Short form for legends: '2 seeds', '1 completed, 1 diverged'."""
    counts = Counter(r.status for r in variant.runs) + Counter({"missing": len(variant.missing)})
    if set(counts) == {"completed"}:
        return f"{counts['completed']} seed{'s' if counts['completed'] > 1 else ''}"
    return ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s])


def summarize(recipe_dir: Path | str, variants: list[Variant]) -> Summary:
    """The numbers behind the table and figures, as written to summary.json (accuracies as fractions)."""
    rule = plan_of(recipe_dir)
    rows: list[dict[str, Any]] = []
    for v in variants:
        done = [cast(RunRecord, r.metrics) for r in v.completed]  # a completed run has its metrics.json
        n_test = max((m.data.test for m in done if m.data), default=0)
        rows.append(
            {
                "variant": v.name,
                "test_accuracy": describe([m.reported_accuracy for m in done], n_test, rule),
                "tta": sorted({m.tta for m in done if m.tta}),
                "plain_test_accuracy": describe([m.test_accuracy for m in done], n_test, rule)
                if any(m.tta for m in done)
                else None,
                "best_val_accuracy": describe([m.best_val_accuracy for m in done], rule=rule),
                "epochs": sorted({r.epochs for r in v.runs if r.epochs}),
                "status": status_text(v),
                "seeds": [r.seed for r in v.runs],
                "missing_seeds": v.missing,
                "train_seconds": _mean([m.train_seconds for m in done]),
                "images_per_second": _mean([m.images_per_second for m in done]),
                "runs": [
                    {
                        "seed": r.seed,
                        "status": r.status,
                        "epochs_completed": r.epochs_completed,
                        "epochs": r.epochs,
                        "test_accuracy": r.metrics and r.metrics.reported_accuracy,
                        "best_val_accuracy": r.metrics and r.metrics.best_val_accuracy,
                        **({"reused_from": r.metrics.reused_from} if r.metrics and r.metrics.reused_from else {}),
                    }
                    for r in v.runs
                ],
            }
        )
    means = {row["variant"]: row["test_accuracy"]["mean"] for row in rows if row["test_accuracy"]}
    best = max(means.values(), default=None)
    return {
        "recipe": Path(recipe_dir).name,
        "seeds": sorted({s for row in rows for s in row["seeds"] + row["missing_seeds"]}),
        "seeds_auto": {"first": rule.first, "cap": rule.cap} if rule.cap else None,
        "highest_test_accuracy": [name for name, m in means.items() if m == best],
        "variants": rows,
    }


def rule_of(summary: Summary) -> Rule:
    """The rule (stats.Rule) that a summary's intervals and verdicts follow."""
    return Rule(**summary["seeds_auto"]) if summary.get("seeds_auto") else FIXED


# ------------------------------------------------------------------------------------------ table


def _in_percent(x: float) -> str:
    """0.6142 -> '61.42' (the tables' columns say %)."""
    return f"{100 * x:.2f}"


def accuracy_cell(stats: Stats | None, n_seeds: int, bold: bool) -> str:
    if not stats:
        return "–"
    text = _in_percent(stats["mean"]) + (f" ± {_in_percent(stats['std'])}" if stats["std"] is not None else "")
    n = f"n={stats['n']}" + (f" of {n_seeds}" if stats["n"] < n_seeds else "")
    return f"**{text}** ({n})" if bold else f"{text} ({n})"


def markdown_table(summary: Summary, reference: dict[str, float] | None = None) -> str:
    """The report-style table; `reference` (variant -> report's accuracy in %) adds a column."""
    head = [
        "variant",
        "test accuracy, final epoch (%)",
        f"{rule_of(summary).ci} over seeds (%)",
        "one test set's SE (%)",
        "best val accuracy (%)",
        "epochs",
        "status",
        "training time per run",
        "images/s",
    ]
    tta = any(row.get("plain_test_accuracy") for row in summary["variants"])
    if tta:  # eval.tta: the accuracy above is under test-time augmentation, this one without
        head.insert(2, "without TTA (%)")
    if reference is not None:
        head.insert(1, "report (%)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    n_seeds = len(summary["seeds"])
    for row in summary["variants"]:
        test, val = row["test_accuracy"], row["best_val_accuracy"]
        ips = row["images_per_second"]
        plain = row.get("plain_test_accuracy")
        cells = [
            row["variant"] + "".join(f" (TTA: {mode})" for mode in row.get("tta", [])),
            accuracy_cell(test, n_seeds, row["variant"] in summary["highest_test_accuracy"]),
            "[" + ", ".join(map(_in_percent, test["ci"])) + "]" if test and test["ci"] else "–",
            _in_percent(test["binomial_se"]) if test and test["binomial_se"] else "–",
            _in_percent(val["mean"]) if val else "–",
            ", ".join(map(str, row["epochs"])) or "–",
            row["status"],
            duration(row["train_seconds"]) if row["train_seconds"] is not None else "–",
            f"{ips:.0f}" if ips else "–",
        ]
        if tta:
            cells.insert(2, accuracy_cell(plain, n_seeds, False) if plain else "–")
        if reference is not None:
            cells.insert(1, f"{reference[row['variant']]:.2f}" if row["variant"] in reference else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reuse_notes(summary: Summary) -> list[str]:
    return [
        f"{row['variant']} seed{run['seed']}: same resolved config as {run['reused_from']}, results reused."
        for row in summary["variants"]
        for run in row["runs"]
        if "reused_from" in run
    ]


TABLE_NOTE = (
    "Mean ± sample standard deviation over the n completed seeds (no ± with one seed); a variant that "
    "evaluates with test-time augmentation (eval.tta, named beside it) is reported with it, and without "
    "it in its own column; diverged, "
    "failed and unfinished runs are left out of the numbers and named under status. Bold: the highest "
    "mean final-epoch test accuracy, as in the report's tables (reported, not used to select anything). "
    "CI: the t-interval of the mean over seeds at the level of the rule the seeds were gathered under (95 % "
    "for seeds fixed in advance), from a spread never taken below one test set's SE, clipped to the "
    "possible 0–100 % (– with one seed). One test set's SE: the binomial "
    "standard error sqrt(p(1 - p) / n_test) that a single run's test set alone implies, at the mean p. "
    "Best val accuracy: each run's best epoch, averaged over seeds. Training time per run: the training part "
    "of every epoch, first-epoch compilation included, evaluation excluded; images/s leaves out the first "
    "epoch, which compiles (– for a 1-epoch run)."
)


# ---------------------------------------------------------------------------------------- setup


IDENTITY_KEYS = ("recipe", "variant", "seed", "train.seeds")


def variant_differences(variants: list[Variant]) -> dict[str, dict[str, Any]]:
    """{dotted key: {variant: value}} for the config keys in which the variants differ."""
    flat = {v.name: v.runs[0].settings() for v in variants}
    keys = sorted({k for f in flat.values() for k in f} - set(IDENTITY_KEYS))
    return {k: {name: f.get(k) for name, f in flat.items()} for k in keys if len({repr(f.get(k)) for f in flat.values()}) > 1}


def _values(items: Iterable[Any]) -> str:
    return ", ".join(sorted({str(i) for i in items if i is not None}, key=natural_key)) or "–"


def _backend(metrics: RunRecord) -> str | None:
    """'tensorflow 2.21.0 (Keras 3.15.1)' from a RunRecord."""
    name, versions = metrics.backend, metrics.versions or {}
    if not name:
        return None
    lib = f"{name} {versions[name]}" if name in versions else name
    return f"{lib} (Keras {versions['keras']})" if "keras" in versions else lib


def setup_lines(variants: list[Variant]) -> list[str]:
    """Scale, data and hardware of the runs, read from their config.yaml and metrics.json."""
    runs = [r for v in variants for r in v.runs]
    cfg = [r.settings() for r in runs]
    met = [r.metrics for r in runs if r.metrics]
    subset = _values(f"{c['data.subset']:,} images" if c.get("data.subset") else "all" for c in cfg)
    sizes = _values(f"{m.data.train} train / {m.data.val} val / {m.data.test} test" for m in met if m.data)
    return [
        f"Model: ResNet-18, width (Channel1) {_values(c.get('model.width') for c in cfg)}; "
        f"epochs {_values(c.get('train.epochs') for c in cfg)}; "
        f"batch size {_values(c.get('data.batch_size') for c in cfg)}; "
        f"seeds {_values(r.seed for r in runs)}.",
        f"Data: {_values(Path(str(c['data_source'])).name for c in cfg if c.get('data_source'))}; "
        f"training subset {subset}; images {sizes}.",
        f"Backend: {_values(_backend(m) for m in met)}; device: {_values(m.device for m in met)}.",
    ]


# ---------------------------------------------------------------------------------------- figures


def _loss_label(variants: list[Variant]) -> str:
    losses = {v.runs[0].config.loss if v.runs[0].config else None for v in variants}
    if len(losses) > 1:
        return "loss (each variant's own loss: scales differ)"
    return f"{(losses.pop() or '').replace('_', '-')} loss".strip()


def _lr_differs(variants: list[Variant]) -> bool:
    """Whether two variants' learning rates differ at an epoch both have run (unfinished runs are shorter)."""
    curves = [{row.epoch: row.lr for row in r.history} for v in variants for r in v.runs]
    return any(not math.isclose(a[e], b[e], rel_tol=1e-6) for a in curves for b in curves for e in a.keys() & b.keys())


def scale_text(run: Run) -> str:
    """'ResNet-18 width 16, 10 epochs, 10,000 training images' for one run."""
    c = cast(Config, run.config)  # the runs shown are completed ones, with their config.yaml
    subset = c.data.subset
    return f"ResNet-18 width {c.model.width}, {count(c.train.epochs, 'epoch')}, " + (
        f"{subset:,} training images" if subset else "all training images"
    )


def _subtitle(variants: list[Variant]) -> str:
    runs = [r for v in variants for r in v.runs]
    cfg = [r.settings() for r in runs]
    subset = _values(f"{c['data.subset']:,}" if c.get("data.subset") else "all" for c in cfg)
    parts = [
        f"ResNet-18 width {_values(c.get('model.width') for c in cfg)}, {subset} training images",
        "mean over seeds, band min–max" if len({r.seed for r in runs}) > 1 else "one seed per variant",
    ]
    if any(r.status in ("diverged", "failed") for r in runs):
        parts.append("dotted, ending in a cross: diverged or failed runs")
    return " · ".join(parts)


# ------------------------------------------------------------------------------------------- report


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def report_markdown(summary: Summary, variants: list[Variant], figures: list[Path]) -> str:
    diffs = variant_differences(variants)
    lines = [
        f"# {summary['recipe']}",
        "",
        f"Generated by `keras-cifar report` from the run folders in `{variants[0].runs[0].path.parents[1]}`.",
        "",
    ]
    lines += [f"- {line}" for line in setup_lines(variants)] + [f"- Intervals: {rule_of(summary)}."]
    for key, values in diffs.items():
        pairs = ", ".join(f"{name} = {_yaml(val)}" for name, val in values.items())
        lines.append(f"- Variants differ in `{key}`: {pairs}")
    lines += ["", markdown_table(summary), "", TABLE_NOTE, ""]
    lines += [f"- {note}" for note in reuse_notes(summary)]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in figures if p.suffix == ".png"]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def write_report(recipe_dir: Path | str, out_dir: Path | str | None = None) -> tuple[Summary, list[Variant], list[Path]]:
    """Write figures (PNG, SVG), report.md and summary.json for one recipe folder; returns
    (summary, variants, paths written)."""
    recipe_dir = Path(recipe_dir)
    out_dir = Path(out_dir or recipe_dir)
    make_dirs(out_dir)
    variants = load_variants(recipe_dir)
    if not variants:
        raise RunFolderError(f"{recipe_dir}: no runs found; expected {LAYOUT}")
    summary = summarize(recipe_dir, variants)
    legends = {v.name: f"{v.name} ({_counts_text(v)})" for v in variants}
    curves = plots.RecipeCurves(summary["recipe"], variants, legends, _subtitle(variants), _loss_label(variants))
    figures = plots.figure_test(curves, out_dir) + plots.figure_train_val(curves, out_dir)
    if _lr_differs(variants):
        figures += plots.figure_lr(curves, out_dir)
    write_json(out_dir / "summary.json", summary)
    write_atomic(out_dir / "report.md", report_markdown(summary, variants, figures))
    return summary, variants, [out_dir / "report.md", out_dir / "summary.json", *figures]
