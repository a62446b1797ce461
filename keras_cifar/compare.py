"""The side-by-side page: every experiment's figure and table next to the report's claim about it.

The claims come from the recipes' ``report:`` sections (claims.py says how agreement is judged);
the numbers from the run folders under RUN_ROOT. Experiments follow the report's figures.
"""

import os
from pathlib import Path

from keras_cifar import report
from keras_cifar.claims import judge, our_ordering
from keras_cifar.config import SHIPPED_RECIPES, load_recipe
from keras_cifar.errors import ConfigError
from keras_cifar.files import make_dirs, write_atomic
from keras_cifar.runs import find_recipes

REPORT_TITLE = "Midterm report: study neural network on CIFAR-10 (Li, Yuan, Chen; Fudan University)"
REPORT_SCALE = (
    "ResNet-18 width 64, 200 epochs, batch 128, the full training split (10:1:1 of the 60,000 images), "
    "one run per variant, original CIFAR-10 images"
)
JUDGING = (
    '**How "agrees?" is judged.** Final-epoch test accuracy over completed seeds, pair by pair along the '
    "report's ordering, from the 95 % Welch interval of the difference of means (claimed better minus "
    "worse). *yes* / *no*: the interval lies above / below 0. *can't tell*: it holds 0, or a variant has "
    "one seed; the reason gives the seeds per variant that would resolve a difference of the observed "
    "size at the observed spread (Welch's test, α = 0.05, power 0.8). The worst pair decides."
)


def claimed_recipes(recipes_dir=SHIPPED_RECIPES):
    """The recipes in `recipes_dir` that have a ``report:`` section, in the order of the report's figures."""
    folder = Path(recipes_dir)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder of recipes; pass --recipes DIR (the recipes/ of the repository)")
    recipes = [load_recipe(path) for path in sorted(folder.glob("*.yaml"))]
    return sorted((r for r in recipes if r.claim), key=lambda r: (r.claim.figure, r.name))


def claims_table(recipes_dir=SHIPPED_RECIPES):
    """The README's table of experiments: recipe, variants and what the report found."""
    lines = ["| experiment | recipe | variants | report's result |", "| --- | --- | --- | --- |"]
    for recipe in claimed_recipes(recipes_dir):
        c = recipe.claim
        numbers = " / ".join(f"{v:.2f}" for v in c.accuracy.values())
        lines.append(
            f"| {c.title} | `{Path(recipe.path).name}` | {' / '.join(recipe.variants)} | "
            f"{c.source}: {c.verdict}" + (f" ({numbers} %)" if numbers else "") + " |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- page


def _stats_by_variant(summary):
    return {row["variant"]: row["test_accuracy"] for row in summary["variants"]}


def _ours_cell(summary):
    n_seeds = len(summary["seeds"])
    return "<br>".join(
        f"{row['variant']} "
        + (report.accuracy_cell(row["test_accuracy"], n_seeds, False) if row["test_accuracy"] else f"– ({row['status']})")
        for row in summary["variants"]
    )


def _setup(all_variants, out, command):
    lines = report.setup_lines(all_variants)
    sources = {str(r.data_source or "").lower() for v in all_variants for r in v.runs}
    if any("jpeg" in s or "jpg" in s for s in sources):
        lines.append(
            "The data is a JPEG copy of CIFAR-10: lossy, so absolute accuracies are not comparable "
            "one-to-one with published numbers; compare the orderings."
        )
    lines.append(
        f"The report's scale: {REPORT_SCALE}. Where ours differs (above), absolute numbers differ too; "
        "only the orderings are compared."
    )
    script = Path(out).parent / "reproduce.sh"
    again = f"`bash {script}` (finished runs are skipped), then " if script.exists() else ""
    lines.append(f"Reproduce: {again}`{command}`.")
    return [f"- {line}" for line in lines]


def _section(name, claim, summary, variants, recipe_dir, out_dir):
    rel = Path(os.path.relpath(recipe_dir, out_dir))
    answer, reason = judge(claim.order, _stats_by_variant(summary)) if claim else ("n/a", "not in the report")
    head = f"## {name}: {claim.title} — report {claim.source}: {claim.verdict}" if claim else f"## {name}"
    diffs = report.variant_differences(variants)
    lines = [
        f'<a id="{name}"></a>',
        "",
        head,
        "",
        f"![{name}: test accuracy and loss per epoch]({rel / 'test_curves.png'})",
        "",
    ]
    if diffs:
        lines += ["Variants differ in " + ", ".join(f"`{k}`" for k in diffs) + ".", ""]
    lines += [report.markdown_table(summary, claim.accuracy if claim and claim.accuracy else None), ""]
    reused = report.reuse_notes(summary)
    if reused:
        lines += [f"- {note}" for note in reused] + [""]
    ours = our_ordering(_stats_by_variant(summary), claim.order if claim else ())
    lines += [f"Our ordering: {ours}. Agrees with the report: **{answer}** ({reason}).", ""]
    lines += [
        f"More: [table and setup]({rel / 'report.md'}) · [train/validation curves]"
        f"({rel / 'train_val_curves.png'}) · [summary.json]({rel / 'summary.json'})",
        "",
    ]
    return lines


def _summary_row(name, claim, summary):
    stats = _stats_by_variant(summary) if summary else {}
    answer, _ = judge(claim.order, stats) if claim and summary else ("n/a", "")
    report_acc = " / ".join(f"{v} {a:.2f}" for v, a in claim.accuracy.items()) if claim and claim.accuracy else "–"
    return (
        "| "
        + " | ".join(
            [
                f"[{name}](#{name})" if summary else f"{name} (not run yet)",
                f"{claim.verdict} ({claim.source})" if claim else "not in the report",
                report_acc,
                _ours_cell(summary) if summary else "–",
                our_ordering(stats, claim.order if claim else ()) if summary else "–",
                f"**{answer}**",
            ]
        )
        + " |"
    )


def _marker(root, out):
    """The page's first line: which runs it was made from, relative to the page's folder."""
    runs = Path(os.path.relpath(Path(root).resolve(), out.parent.resolve())).as_posix()
    return f"<!-- keras-cifar compare: the runs in {runs} -->"


def check_page(root, out):
    """Refuse to replace a file that `compare` did not write for `root` (a hand-written README, say)."""
    out = Path(out)
    if out.exists() and not out.read_text(errors="replace").startswith(_marker(root, out) + "\n"):
        raise ConfigError(
            f"{out} exists and was not written by `keras-cifar compare` for {root}; "
            "pass another --out, or delete that file first"
        )


def write_page(root, out, command, notes=None, recipes_dir=SHIPPED_RECIPES):
    """Write every recipe's report under `root`, then the comparison page `out`, with the claims of the
    recipes in `recipes_dir`; returns out's path."""
    out = Path(out)
    check_page(root, out)
    claims = {r.name: r.claim for r in claimed_recipes(recipes_dir)}
    recipe_dirs = {d.name: d for d in find_recipes([root])}
    make_dirs(out.parent)
    names = list(claims) + [n for n in recipe_dirs if n not in claims]
    summaries, all_variants, sections = {}, [], []
    for name in names:
        if name in recipe_dirs:
            summaries[name], variants, _ = report.write_report(recipe_dirs[name])
            all_variants += variants
            sections += _section(name, claims.get(name), summaries[name], variants, recipe_dirs[name], out.parent)
    lines = [
        _marker(root, out),
        "# Reproducing the report's ResNet-18 study on CIFAR-10",
        "",
        f"Generated by `{command}` from the run folders in `{root}`: rerun it rather than edit this page.",
        f"The report: *{REPORT_TITLE}*.",
        "",
        "## Setup",
        "",
    ]
    lines += _setup(all_variants, out, command) + ["", "## Summary", ""]
    lines += [
        "| experiment | report says | report accuracy (%) | ours: final test accuracy (%) | our ordering | agrees? |",
        "|---|---|---|---|---|---|",
    ]
    lines += [_summary_row(n, claims.get(n), summaries.get(n)) for n in names]
    lines += ["", JUDGING, "", report.TABLE_NOTE, ""] + sections
    if notes:
        lines += ["## Discussion", "", Path(notes).read_text().strip(), ""]
    write_atomic(out, "\n".join(lines))
    return out
