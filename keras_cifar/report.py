"""Figures, a Markdown table and summary.json for the runs of one recipe (``OUT/<recipe>/``).

Keras-free: it reads only run folders (``<variant>/seed<k>/`` with config.yaml, history.csv and
metrics.json). Every run found is accounted for: completed runs make the numbers; diverged, failed and
unfinished runs (a history.csv but no metrics.json: still going, or interrupted) are shown as such, and a
seed that some variant has but another lacks is listed as missing.

Numbers: final-epoch test accuracy, mean ± sample standard deviation (ddof=1) over the completed seeds.
The table bolds the highest mean test accuracy, as the report's tables do; nothing is selected on it.
"""

import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from keras_cifar.runfiles import read_history, read_json, write_atomic

RUN_FILES = ("config.yaml", "history.csv", "metrics.json")
LAYOUT = "OUT/<recipe>/<variant>/seed<k>/ folders holding config.yaml, history.csv or metrics.json"
STATUS_ORDER = ("completed", "unfinished", "diverged", "failed", "missing")
FIGURE_FORMATS = ("png", "svg")


class ReportError(ValueError):
    """Run folders that cannot be reported on; the message says what layout is expected."""


@dataclass
class Run:
    seed: int
    path: Path
    status: str  # completed | diverged | failed | unfinished
    metrics: dict
    config: dict
    history: list

    @property
    def epochs(self):
        return self.metrics.get("epochs") or (self.config.get("train") or {}).get("epochs")

    @property
    def epochs_completed(self):
        return self.metrics.get("epochs_completed", len(self.history))


@dataclass
class Variant:
    name: str
    runs: list
    missing: list = field(default_factory=list)  # seeds that other variants of the recipe have

    @property
    def completed(self):
        return [r for r in self.runs if r.status == "completed"]


# ------------------------------------------------------------------------------------- finding runs


def _seed_of(path):
    match = re.fullmatch(r"seed(\d+)", path.name)
    return int(match.group(1)) if match else None


def _is_run(path):
    return path.is_dir() and _seed_of(path) is not None and any((path / f).exists() for f in RUN_FILES)


def _is_recipe(path):
    return any(_is_run(seed) for variant in path.iterdir() if variant.is_dir() for seed in variant.iterdir())


def find_recipes(paths):
    """Recipe folders under `paths` (each a recipe folder or an OUT root holding several), in order."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ReportError(f"{path}: not a folder; expected a recipe run folder or an OUT root ({LAYOUT})")
        recipes = [path] if _is_recipe(path) else [p for p in sorted(path.iterdir()) if p.is_dir() and _is_recipe(p)]
        if not recipes:
            raise ReportError(f"{path}: no runs found; expected {LAYOUT}")
        found += [r for r in recipes if r not in found]
    return found


def _natural_key(name):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def load_run(path):
    metrics = read_json(path / "metrics.json") or {}
    config_file = path / "config.yaml"
    config = (yaml.safe_load(config_file.read_text()) or {}) if config_file.exists() else {}
    return Run(_seed_of(path), path, metrics.get("status", "unfinished"), metrics, config,
               read_history(path / "history.csv"))


def load_variants(recipe_dir):
    """The recipe's variants (natural name order) with their runs; seeds missing from a variant are noted."""
    variants = []
    for vdir in sorted((p for p in Path(recipe_dir).iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name)):
        runs = sorted((load_run(p) for p in vdir.iterdir() if _is_run(p)), key=lambda r: r.seed)
        if runs:
            variants.append(Variant(vdir.name, runs))
    seeds = {r.seed for v in variants for r in v.runs}
    for v in variants:
        v.missing = sorted(seeds - {r.seed for r in v.runs})
    return variants


# ---------------------------------------------------------------------------------------- numbers


def _stats(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "n": len(values)}


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _run_problem(run):
    """A run that is not completed, in words: 'diverged at epoch 3', 'unfinished, 7/10 epochs'."""
    if run.status == "diverged":
        return f"diverged at epoch {run.epochs_completed}"
    if run.status == "unfinished":
        return f"unfinished, {run.epochs_completed}/{run.epochs} epochs"
    return f"{run.status} after {run.epochs_completed}/{run.epochs} epochs"


def status_text(variant):
    """'completed', or what is wrong with which seed: '1 completed; seed1 diverged at epoch 3; seed2 missing'."""
    problems = [f"seed{r.seed} {_run_problem(r)}" for r in variant.runs if r.status != "completed"]
    problems += [f"seed{s} missing" for s in variant.missing]
    if not problems:
        return "completed"
    return "; ".join(([f"{len(variant.completed)} completed"] if variant.completed else []) + problems)


def _counts_text(variant):
    """Short form for legends: '2 seeds', '1 completed, 1 diverged'."""
    counts = Counter(r.status for r in variant.runs) + Counter({"missing": len(variant.missing)})
    if set(counts) == {"completed"}:
        return f"{counts['completed']} seed{'s' if counts['completed'] > 1 else ''}"
    return ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s])


def summarize(recipe_dir, variants):
    """The numbers behind the table and figures, as written to summary.json (accuracies as fractions)."""
    rows = []
    for v in variants:
        done = v.completed
        rows.append({
            "variant": v.name,
            "test_accuracy": _stats([r.metrics.get("test_accuracy") for r in done]),
            "best_val_accuracy": _stats([r.metrics.get("best_val_accuracy") for r in done]),
            "epochs": sorted({r.epochs for r in v.runs if r.epochs}),
            "status": status_text(v),
            "seeds": [r.seed for r in v.runs],
            "missing_seeds": v.missing,
            "train_seconds": _mean([r.metrics.get("train_seconds") for r in done]),
            "images_per_second": _mean([r.metrics.get("images_per_second") for r in done]),
            "runs": [{"seed": r.seed, "status": r.status, "epochs_completed": r.epochs_completed, "epochs": r.epochs,
                      "test_accuracy": r.metrics.get("test_accuracy"),
                      "best_val_accuracy": r.metrics.get("best_val_accuracy"),
                      **({"reused_from": r.metrics["reused_from"]} if r.metrics.get("reused_from") else {})}
                     for r in v.runs],
        })
    means = {row["variant"]: row["test_accuracy"]["mean"] for row in rows if row["test_accuracy"]}
    best = max(means.values(), default=None)
    return {
        "recipe": Path(recipe_dir).name,
        "seeds": sorted({s for row in rows for s in row["seeds"] + row["missing_seeds"]}),
        "highest_test_accuracy": [name for name, m in means.items() if m == best],
        "variants": rows,
    }


# ------------------------------------------------------------------------------------------ table


def _pct(x):
    return f"{100 * x:.2f}"


def _duration(seconds):
    if seconds is None:
        return "–"
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def accuracy_cell(stats, n_seeds, bold):
    if not stats:
        return "–"
    text = _pct(stats["mean"]) + (f" ± {_pct(stats['std'])}" if stats["std"] is not None else "")
    n = f"n={stats['n']}" + (f" of {n_seeds}" if stats["n"] < n_seeds else "")
    return f"**{text}** ({n})" if bold else f"{text} ({n})"


def markdown_table(summary, reference=None):
    """The report-style table; `reference` (variant -> report's accuracy in %) adds a column."""
    head = ["variant", "test accuracy, final epoch (%)", "best val accuracy (%)", "epochs", "status",
            "train time per run", "images/s"]
    if reference is not None:
        head.insert(1, "report (%)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    n_seeds = len(summary["seeds"])
    for row in summary["variants"]:
        val = row["best_val_accuracy"]
        ips = row["images_per_second"]
        cells = [row["variant"],
                 accuracy_cell(row["test_accuracy"], n_seeds, row["variant"] in summary["highest_test_accuracy"]),
                 _pct(val["mean"]) if val else "–",
                 ", ".join(map(str, row["epochs"])) or "–",
                 row["status"],
                 _duration(row["train_seconds"]),
                 f"{ips:.0f}" if ips else "–"]
        if reference is not None:
            cells.insert(1, f"{reference[row['variant']]:.2f}" if row["variant"] in reference else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reuse_notes(summary):
    return [f"{row['variant']} seed{run['seed']}: same resolved config as {run['reused_from']}, results reused."
            for row in summary["variants"] for run in row["runs"] if "reused_from" in run]


TABLE_NOTE = ("Mean ± sample standard deviation over the n completed seeds (no ± with one seed); diverged, "
              "failed and unfinished runs are left out of the numbers and named under status. Bold: the highest "
              "mean final-epoch test accuracy, as in the report's tables (reported, not used to select anything). "
              "Best val accuracy: each run's best epoch, averaged over seeds. Train time per run: the training part "
              "of every epoch, first-epoch compilation included, evaluation excluded; images/s leaves out the first "
              "epoch.")


# ---------------------------------------------------------------------------------------- setup


def _flatten(config, prefix=""):
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


IDENTITY_KEYS = ("recipe", "variant", "seed", "train.seeds")


def variant_differences(variants):
    """{dotted key: {variant: value}} for the config keys in which the variants differ."""
    flat = {v.name: _flatten(v.runs[0].config) for v in variants}
    keys = sorted({k for f in flat.values() for k in f} - set(IDENTITY_KEYS))
    return {k: {name: f.get(k) for name, f in flat.items()} for k in keys
            if len({repr(f.get(k)) for f in flat.values()}) > 1}


def _values(items):
    return ", ".join(sorted({str(i) for i in items if i is not None}, key=_natural_key)) or "–"


def _backend(metrics):
    """'tensorflow 2.21.0 (Keras 3.15.1)' from a metrics.json."""
    name, versions = metrics.get("backend"), metrics.get("versions") or {}
    if not name:
        return None
    lib = f"{name} {versions[name]}" if name in versions else name
    return f"{lib} (Keras {versions['keras']})" if "keras" in versions else lib


def setup_lines(variants):
    """Scale, data and hardware of the runs, read from their config.yaml and metrics.json."""
    runs = [r for v in variants for r in v.runs]
    cfg = [_flatten(r.config) for r in runs]
    met = [r.metrics for r in runs if r.metrics]
    subset = _values(f"{c['data.subset']:,} images" if c.get("data.subset") else "all" for c in cfg)
    sizes = _values(f"{m['data']['train']} train / {m['data']['val']} val / {m['data']['test']} test"
                    for m in met if "data" in m)
    return [
        f"Model: ResNet-18, width (Channel1) {_values(c.get('model.width') for c in cfg)}; "
        f"epochs {_values(c.get('train.epochs') for c in cfg)}; "
        f"batch size {_values(c.get('data.batch_size') for c in cfg)}; "
        f"seeds {_values(r.seed for r in runs)}.",
        f"Data: {_values(Path(str(c['data_source'])).name for c in cfg if c.get('data_source'))}; "
        f"training subset {subset}; images {sizes}.",
        f"Backend: {_values(_backend(m) for m in met)}; device: {_values(m.get('device') for m in met)}.",
    ]


# ---------------------------------------------------------------------------------------- figures


def _colors(variants):
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return {v.name: palette[i % len(palette)] for i, v in enumerate(variants)}


def _series(runs, key, scale):
    """(epochs, mean, min, max) of `key` over `runs`, per epoch, ignoring runs without a finite value."""
    by_epoch = {}
    for run in runs:
        for row in run.history:
            value = row.get(key)
            if value is not None and math.isfinite(value):
                by_epoch.setdefault(row["epoch"], []).append(value * scale)
    epochs = sorted(by_epoch)
    return (epochs, [statistics.fmean(by_epoch[e]) for e in epochs],
            [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs])


def _plot(ax, variants, colors, key, scale=1.0, style="-", label=True):
    """One line per variant: the mean over its healthy runs (completed or unfinished) with a min-max band;
    diverged or failed runs drawn alone, thin, ending in a cross."""
    for v in variants:
        healthy = [r for r in v.runs if r.status in ("completed", "unfinished")]
        broken = [r for r in v.runs if r not in healthy]
        epochs, mean, low, high = _series(healthy, key, scale)
        if epochs:
            ax.plot(epochs, mean, style, color=colors[v.name], lw=1.8,
                    label=f"{v.name} ({_counts_text(v)})" if label else None)
            if len(healthy) > 1:
                ax.fill_between(epochs, low, high, color=colors[v.name], alpha=0.18, lw=0)
        for run in broken:
            epochs, values, _, _ = _series([run], key, scale)
            if epochs:
                ax.plot(epochs, values, ":", color=colors[v.name], lw=1.0,
                        label=f"{v.name} seed{run.seed} ({run.status})" if label else None)
                ax.plot(epochs[-1:], values[-1:], "x", color=colors[v.name], ms=8, mew=2)


def _new_figure(ncols):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0 * ncols, 4.6), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _decorate(ax, title, ylabel):
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _legend(fig, handles, labels):
    """One legend under the panels, so that it never hides a curve."""
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), frameon=False)


def _save(fig, out_dir, stem):
    """PNG and SVG; byte-identical when the runs are unchanged (no date, fixed SVG ids), for committed results."""
    from matplotlib import rc_context

    paths = [Path(out_dir) / f"{stem}.{fmt}" for fmt in FIGURE_FORMATS]
    with rc_context({"svg.hashsalt": "keras-cifar"}):
        for path in paths:
            fig.savefig(path, dpi=120, metadata={"Date": None} if path.suffix == ".svg" else None)
    return paths


def _loss_label(variants):
    losses = {v.runs[0].config.get("loss") for v in variants}
    if len(losses) > 1:
        return "loss (each variant's own loss: scales differ)"
    return f"{(losses.pop() or '').replace('_', '-')} loss".strip()


def figure_test(recipe, variants, colors, subtitle, out_dir):
    fig, (acc, loss) = _new_figure(2)
    _plot(acc, variants, colors, "test_accuracy", 100)
    _plot(loss, variants, colors, "test_loss", label=False)
    _decorate(acc, "Test accuracy", "test accuracy (%)")
    _decorate(loss, "Test loss", f"test {_loss_label(variants)}")
    _legend(fig, *acc.get_legend_handles_labels())
    fig.suptitle(f"{recipe}: test accuracy and loss per epoch\n{subtitle}")
    return _save(fig, out_dir, "test_curves")


def figure_train_val(recipe, variants, colors, subtitle, out_dir):
    from matplotlib.lines import Line2D

    fig, (acc, loss) = _new_figure(2)
    for ax, key, scale in ((acc, "accuracy", 100), (loss, "loss", 1.0)):
        _plot(ax, variants, colors, key, scale, style="--", label=False)
        _plot(ax, variants, colors, f"val_{key}", scale, label=ax is acc)
    _decorate(acc, "Accuracy: train (dashed) and validation (solid)", "accuracy (%)")
    _decorate(loss, "Loss: train (dashed) and validation (solid)", _loss_label(variants))
    handles, labels = acc.get_legend_handles_labels()
    _legend(fig, handles + [Line2D([], [], color="gray", ls="--"), Line2D([], [], color="gray")],
            labels + ["train (augmented, averaged over the epoch)", "validation"])
    fig.suptitle(f"{recipe}: train and validation curves\n{subtitle}")
    return _save(fig, out_dir, "train_val_curves")


def figure_lr(recipe, variants, colors, subtitle, out_dir):
    fig, (ax,) = _new_figure(1)
    _plot(ax, variants, colors, "lr")
    _decorate(ax, "Learning rate at the end of each epoch", "learning rate")
    _legend(fig, *ax.get_legend_handles_labels())
    fig.suptitle(f"{recipe}: learning rate per epoch\n{subtitle}")
    return _save(fig, out_dir, "lr")


def _lr_differs(variants):
    """Whether two variants' learning rates differ at an epoch both have run (unfinished runs are shorter)."""
    curves = [{row["epoch"]: row["lr"] for row in r.history} for v in variants for r in v.runs]
    return any(not math.isclose(a[e], b[e], rel_tol=1e-6) for a in curves for b in curves for e in a.keys() & b.keys())


def _subtitle(variants):
    runs = [r for v in variants for r in v.runs]
    cfg = [_flatten(r.config) for r in runs]
    subset = _values(f"{c['data.subset']:,}" if c.get("data.subset") else "all" for c in cfg)
    parts = [f"ResNet-18 width {_values(c.get('model.width') for c in cfg)}, {subset} training images",
             "mean over seeds, band min–max" if len({r.seed for r in runs}) > 1 else "one seed per variant"]
    if any(r.status in ("diverged", "failed") for r in runs):
        parts.append("dotted, ending in a cross: diverged or failed runs")
    return " · ".join(parts)


# ------------------------------------------------------------------------------------------- report


def _yaml(value):
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def report_markdown(summary, variants, figures):
    diffs = variant_differences(variants)
    lines = [f"# {summary['recipe']}", "",
             f"Generated by `keras-cifar report` from the run folders in `{variants[0].runs[0].path.parents[1]}`.", ""]
    lines += [f"- {line}" for line in setup_lines(variants)]
    for key, values in diffs.items():
        pairs = ", ".join(f"{name} = {_yaml(val)}" for name, val in values.items())
        lines.append(f"- Variants differ in `{key}`: {pairs}")
    lines += ["", markdown_table(summary), "", TABLE_NOTE, ""]
    lines += [f"- {note}" for note in reuse_notes(summary)]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in figures if p.suffix == ".png"]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def write_report(recipe_dir, out_dir=None):
    """Write figures (PNG, SVG), report.md and summary.json for one recipe folder; returns (summary, paths)."""
    recipe_dir = Path(recipe_dir)
    out_dir = Path(out_dir or recipe_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = load_variants(recipe_dir)
    if not variants:
        raise ReportError(f"{recipe_dir}: no runs found; expected {LAYOUT}")
    summary = summarize(recipe_dir, variants)
    colors, subtitle, recipe = _colors(variants), _subtitle(variants), summary["recipe"]
    figures = figure_test(recipe, variants, colors, subtitle, out_dir)
    figures += figure_train_val(recipe, variants, colors, subtitle, out_dir)
    if recipe == "lr" or _lr_differs(variants):
        figures += figure_lr(recipe, variants, colors, subtitle, out_dir)
    write_atomic(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(out_dir / "report.md", report_markdown(summary, variants, figures))
    return summary, [out_dir / "report.md", out_dir / "summary.json", *figures]
