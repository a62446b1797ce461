"""The side-by-side page: every experiment's figure and table next to the report's claim about it.

The claims come from the recipes' ``report:`` sections (claims.py says how agreement is judged);
the numbers from the run folders under RUN_ROOT. Experiments follow the report's figures.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from keras_cifar.config import SHIPPED_RECIPES, Claim, Config, Recipe, load_recipe
from keras_cifar.core.errors import ConfigError
from keras_cifar.core.files import make_dirs, write_atomic
from keras_cifar.study import report
from keras_cifar.study.claims import Stats, Verdict, holm, judge, our_ordering
from keras_cifar.study.report import Summary, Variant
from keras_cifar.study.stats import Rule
from keras_cifar.training.runs import Run, find_recipes, identity

REPORT_TITLE = "Midterm report: study neural network on CIFAR-10 (Li, Yuan, Chen; Fudan University)"
REPORT_SCALE = (
    "ResNet-18 width 64, 200 epochs, batch 128, the full training split (10:1:1 of the 60,000 images), "
    "one run per variant, original CIFAR-10 images"
)
JUDGING = (
    '**How "agrees?" is judged.** Final-epoch test accuracy over completed seeds, on every pair the '
    "report's ordering implies (for a > b > c: a − b, a − c and b − c), from Welch's interval of the "
    "difference of means (claimed better minus worse) at the level of the rule the seeds were gathered "
    "under, which each experiment names: 95 % for seeds fixed in advance; for `--seeds auto`, 5 % split "
    "over the looks its plan allows (Bonferroni), so that stopping when a look decides keeps the 5 %. "
    "A variant's spread is never taken below one test set's standard error. A pair is *yes* / *no* where "
    "its interval lies above / below 0, *can't tell* where it holds 0 or a variant has one seed. The "
    "claim is *no* if any pair is *no*, *yes* if every pair is *yes*, else *can't tell*; the reason names "
    "the pairs that decide it, and for an undecided pair a planning estimate of the seeds per variant "
    "that would resolve it (power 0.8 at the observed difference, from the observed spread to its 95 % "
    "upper bound: a range, never a promise)."
)


def claimed_recipes(recipes_dir: Path | str = SHIPPED_RECIPES) -> list[Recipe]:
    """The recipes in `recipes_dir` that have a ``report:`` section: the report's experiments in the order
    of its figures, then those that cite another work (``cites``), by name."""
    folder = Path(recipes_dir)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder of recipes; pass --recipes DIR (the recipes/ of the repository)")
    recipes = [load_recipe(path) for path in sorted(folder.glob("*.yaml"))]
    return sorted((r for r in recipes if r.claim), key=lambda r: (bool(_claim(r).cites), _claim(r).figure, r.name))


def _claim(recipe: Recipe) -> Claim:
    """The claim of a recipe that claimed_recipes returned (one that has a ``report:`` section)."""
    return cast(Claim, recipe.claim)


def claims_table(recipes_dir: Path | str = SHIPPED_RECIPES) -> str:
    """The README's tables of experiments: recipe, variants and what the report found; then, apart, the
    experiments beyond the report and what the works they cite found."""
    recipes = claimed_recipes(recipes_dir)
    lines = ["| experiment | recipe | variants | report's result |", "| --- | --- | --- | --- |"]
    beyond = ["", "| experiment beyond the report | recipe | variants | cited result |", "| --- | --- | --- | --- |"]
    for recipe in recipes:
        c = _claim(recipe)
        if c.cites and beyond:
            lines, beyond = lines + beyond, []
        numbers = " / ".join(f"{v:.2f}" for v in c.accuracy.values())
        lines.append(
            f"| {c.title} | `{Path(recipe.path).name}` | {' / '.join(recipe.variants)} | "
            + (f"{c.cites}, " if c.cites else "")
            + f"{c.source}: {c.verdict}"
            + (f" ({numbers} %)" if numbers else "")
            + " |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- page


def _stats_by_variant(summary: Summary) -> dict[str, Stats | None]:
    return {row["variant"]: row["test_accuracy"] for row in summary["variants"]}


def _ours_cell(summary: Summary) -> str:
    n_seeds = len(summary["seeds"])
    return "<br>".join(
        f"{row['variant']} "
        + (report.accuracy_cell(row["test_accuracy"], n_seeds, False) if row["test_accuracy"] else f"– ({row['status']})")
        for row in summary["variants"]
    )


def _setup(all_variants: list[Variant], out: Path, command: str) -> list[str]:
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


@dataclass
class Experiment:
    """One experiment of the page: its recipe's claim, its runs' summary and variants (None: not run
    yet), and the verdict on the claim."""

    name: str
    claim: Claim | None
    summary: Summary | None = None
    variants: list[Variant] = field(default_factory=list)
    verdict: Verdict = Verdict("n/a", "not in the report")
    kept: list[bool] = field(default_factory=list)  # per pair of the verdict: whether it survives Holm

    @property
    def rule(self) -> Rule:  # of an experiment that ran: one with a summary
        return report.rule_of(cast(Summary, self.summary))

    @property
    def page_wide(self) -> str:
        """The answer when only the pair decisions that survive the page-wide correction stand."""
        return self.verdict.standing(self.kept)


def _family_text(experiments: list[Experiment]) -> list[str]:
    """The paragraph on the page as a family: how many pairs, the family-wise rates, which verdicts share runs."""
    m = sum(len(e.verdict.pairs) for e in experiments)
    if not m:
        return []
    text = (
        f"**The page as a family.** Its verdicts rest on {m} pairs. Each pair alone shows a false *yes* or "
        f"*no* with probability at most 5 %; the chance that at least one of the {m} does can reach "
        f"{min(100, 5 * m)} % (5 % × {m}, the union bound). The column *page-wide* keeps only the pair "
        f"decisions that survive Holm's step-down correction over those {m} pairs (Holm 1979: the k-th "
        f"smallest p-value must be at most 5 % / ({m} − k + 1), stopping at the first that is not), which "
        "holds whatever the dependence between the pairs: the chance that that column shows any false *yes* "
        "or *no* is at most 5 %."
    )
    return [text, ""] + [f"- {line}" for line in _shared_runs(experiments)] + [""]


def _config_key(run: Run) -> str:
    """Equal for runs of one configuration and data, whatever their seed."""
    ident = identity(cast(Config, run.config), run.data_source)  # a completed run's, which has its config.yaml
    ident["train"].pop("seeds", None)
    return json.dumps(ident, sort_keys=True, default=str)


def _shared_runs(experiments: list[Experiment]) -> list[str]:
    """In words: the variants of different experiments that are one configuration with the same seeds
    (one training reused, or the same training repeated), and the verdicts that rest on them together."""
    groups: dict[str, dict[str, tuple[str, set[int]]]] = {}  # configuration -> {experiment: (variant, its completed seeds)}
    for e in experiments:
        for v in e.variants:
            if v.completed:
                groups.setdefault(_config_key(v.completed[0]), {})[e.name] = (v.name, {r.seed for r in v.completed})
    lines = []
    for users in groups.values():
        seen = Counter(seed for _, seeds in users.values() for seed in seeds)
        shared = sorted(seed for seed, k in seen.items() if k > 1)
        judged = [e.name for e in experiments if e.name in users and e.verdict.pairs]
        if shared and len(judged) > 1:
            holders = ", ".join(f"{name}'s {variant}" for name, (variant, _) in users.items())
            lines.append(
                f"One configuration, seeds {', '.join(map(str, shared))}: the same runs are {holders}. The verdicts "
                f"of {', '.join(judged)} rest on them together, so one unusual seed among them moves those verdicts together."
            )
    return lines or ["No two verdicts share runs."]


def _section(e: Experiment, recipe_dir: Path, out_dir: Path) -> list[str]:
    rel = Path(os.path.relpath(recipe_dir, out_dir))
    summary = cast(Summary, e.summary)  # only an experiment that ran has a section
    head = f"## {e.name}"
    if e.claim:  # the report's claim, or that of the work it cites
        said = f"{e.claim.cites}, {e.claim.source}" if e.claim.cites else f"report {e.claim.source}"
        head += f": {e.claim.title} — {said}: {e.claim.verdict}"
    diffs = report.variant_differences(e.variants)
    lines = [
        f'<a id="{e.name}"></a>',
        "",
        head,
        "",
        f"![{e.name}: test accuracy and loss per epoch]({rel / 'test_curves.png'})",
        "",
    ]
    if diffs:
        lines += ["Variants differ in " + ", ".join(f"`{k}`" for k in diffs) + ".", ""]
    lines += [report.markdown_table(summary, e.claim.accuracy if e.claim and e.claim.accuracy else None), ""]
    reused = report.reuse_notes(summary)
    if reused:
        lines += [f"- {note}" for note in reused] + [""]
    ours = our_ordering(_stats_by_variant(summary), e.claim.order if e.claim else (), e.rule)
    lines += [f"Intervals: {e.rule}.", ""]
    work = e.claim.cites if e.claim and e.claim.cites else "the report"
    lines += [f"Our ordering: {ours}. Agrees with {work}: **{e.verdict.answer}** ({e.verdict.reason}).", ""]
    if e.verdict.pairs:
        lines += [f"Page-wide (Holm): **{e.page_wide}**.", ""]
    lines += [
        f"More: [table and setup]({rel / 'report.md'}) · [train/validation curves]"
        f"({rel / 'train_val_curves.png'}) · [summary.json]({rel / 'summary.json'})",
        "",
    ]
    return lines


def _summary_row(e: Experiment) -> str:
    stats = _stats_by_variant(e.summary) if e.summary else {}
    claim = e.claim
    report_acc = " / ".join(f"{v} {a:.2f}" for v, a in claim.accuracy.items()) if claim and claim.accuracy else "–"
    cells = [
        f"[{e.name}](#{e.name})" if e.summary else f"{e.name} (not run yet)",
        f"{claim.verdict} ({claim.cites + ', ' if claim.cites else ''}{claim.source})" if claim else "not in the report",
        report_acc,
        _ours_cell(e.summary) if e.summary else "–",
        our_ordering(stats, claim.order if claim else (), e.rule) if e.summary else "–",
        f"**{e.verdict.answer}**",
        f"**{e.page_wide}**",
    ]
    return "| " + " | ".join(cells) + " |"


def _marker(root: Path | str, out: Path) -> str:
    """The page's first line: which runs it was made from, relative to the page's folder."""
    runs = Path(os.path.relpath(Path(root).resolve(), out.parent.resolve())).as_posix()
    return f"<!-- keras-cifar compare: the runs in {runs} -->"


def check_page(root: Path | str, out: Path | str) -> None:
    """Refuse to replace a file that `compare` did not write for `root` (a hand-written README, say)."""
    out = Path(out)
    if out.exists() and not out.read_text(errors="replace").startswith(_marker(root, out) + "\n"):
        raise ConfigError(
            f"{out} exists and was not written by `keras-cifar compare` for {root}; "
            "pass another --out, or delete that file first"
        )


def _experiments(root: Path | str, recipes_dir: Path | str) -> tuple[list[Experiment], dict[str, Path]]:
    """Every experiment of the page, in the report's order, then the run folders no recipe claims: each
    recipe's report (re)written, its claim judged, and the pair decisions that survive Holm over the page."""
    claims = {r.name: r.claim for r in claimed_recipes(recipes_dir)}
    recipe_dirs = {d.name: d for d in find_recipes([root])}
    experiments: list[Experiment] = []
    for name in list(claims) + [n for n in recipe_dirs if n not in claims]:
        e = Experiment(name, claims.get(name))
        if name in recipe_dirs:
            e.summary, e.variants, _ = report.write_report(recipe_dirs[name])
            if e.claim:
                e.verdict = judge(e.claim.order, _stats_by_variant(e.summary), e.rule)
        experiments.append(e)
    kept = iter(holm([p.p for e in experiments for p in e.verdict.pairs]))
    for e in experiments:
        e.kept = [next(kept) for _ in e.verdict.pairs]
    return experiments, recipe_dirs


def write_page(
    root: Path | str, out: Path | str, command: str, notes: Path | str | None = None, recipes_dir: Path | str = SHIPPED_RECIPES
) -> Path:
    """Write every recipe's report under `root`, then the comparison page `out`, with the claims of the
    recipes in `recipes_dir`; returns out's path."""
    out = Path(out)
    check_page(root, out)
    experiments, recipe_dirs = _experiments(root, recipes_dir)
    make_dirs(out.parent)
    ran = [e for e in experiments if e.summary]
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
    lines += _setup([v for e in ran for v in e.variants], out, command) + ["", "## Summary", ""]
    lines += [
        "| experiment | report says | report accuracy (%) | ours: final test accuracy (%) | our ordering | agrees? "
        "| page-wide (Holm) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_summary_row(e) for e in experiments if not (e.claim and e.claim.cites)]
    beyond = [e for e in experiments if e.claim and e.claim.cites]
    if beyond:
        lines += [
            "",
            "### Beyond the report",
            "",
            "The tricks of later fast CIFAR-10 trainers, each judged against the work it cites.",
            "",
        ]
        lines += [
            "| experiment | the cited work says | its accuracy (%) | ours: final test accuracy (%) | our ordering "
            "| agrees? | page-wide (Holm) |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [_summary_row(e) for e in beyond]
    lines += ["", JUDGING, ""] + _family_text(ran) + [report.TABLE_NOTE, ""]
    for e in ran:
        lines += _section(e, recipe_dirs[e.name], out.parent)
    if notes:
        lines += ["## Discussion", "", Path(notes).read_text().strip(), ""]
    write_atomic(out, "\n".join(lines))
    return out
