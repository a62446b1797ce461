"""The side-by-side page: every experiment's figure and table next to the report's numbers and verdict.

Agreement is judged on final-epoch test accuracy over completed seeds, pair by pair along the report's
ordering (claimed better variant first):
- "yes" / "no": every seed of one variant beats every seed of the other (the min-max bands of the
  figures do not overlap at the last epoch), in the report's order / against it;
- "can't tell": the two variants' seed ranges overlap: the difference is within the seed spread;
- with a single seed on either side the spread is unknown: the answer follows the means and says so.
The worst pair decides (no > no with one seed > can't tell > yes with one seed > yes).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from keras_cifar import report
from keras_cifar.errors import ConfigError
from keras_cifar.runs import find_recipes, write_atomic


@dataclass(frozen=True)
class Claim:
    """What the report says about one experiment (recipe): its words, its ranking, its accuracies (%)."""

    title: str
    source: str
    verdict: str
    order: tuple = ()  # variants, best first; () when the report ranks nothing
    accuracy: dict = field(default_factory=dict)


REPORT = {
    "bn": Claim("Batch normalization", "Fig. 3", "BN better", ("bn", "no_bn")),
    "shortcut": Claim("Shortcut connections", "Fig. 4", "shortcut better, and converges faster",
                      ("shortcut", "no_shortcut")),
    "momentum": Claim("SGD momentum", "Fig. 5", "momentum better", ("momentum", "no_momentum")),
    "activation": Claim("Activation function", "Table 1, Fig. 6", "relu > tanh > sigmoid", ("relu", "tanh", "sigmoid"),
                        {"relu": 95.48, "tanh": 92.37, "sigmoid": 87.63}),
    "loss": Claim("Loss function", "Table 2, Fig. 7", "cross_entropy > multi_margin", ("cross_entropy", "multi_margin"),
                  {"cross_entropy": 95.48, "multi_margin": 95.39}),
    "lr": Claim("Learning-rate schedule", "Fig. 8",
                "no verdict: it only plots fixed against cosine annealing and ranks neither"),
    "batch_size": Claim("Batch size", "Table 3, Fig. 9", "128 > 256 > 64 (its text: 'accuracy barely changes')",
                        ("batch128", "batch256", "batch64"), {"batch64": 94.89, "batch128": 95.48, "batch256": 95.27}),
}
REPORT_TITLE = "Midterm report: study neural network on CIFAR-10 (Li, Yuan, Chen; Fudan University)"
REPORT_SCALE = ("ResNet-18 width 64, 200 epochs, batch 128, the full training split (10:1:1 of the 60,000 images), "
                "one run per variant, original CIFAR-10 images")
JUDGING = ("**How \"agrees?\" is judged.** Final-epoch test accuracy over completed seeds, pair by pair along the "
           "report's ordering. *yes* / *no*: every seed of one variant beats every seed of the other (the figures' "
           "min–max bands do not overlap at the last epoch). *can't tell*: the seed ranges overlap, so the "
           "difference is within the seed spread. With one seed on either side the spread is unknown; the answer "
           "then follows the means and says \"1 seed\". The worst pair decides.")
RANKS = ("no", "no, 1 seed", "can't tell", "yes, 1 seed", "yes")


# -------------------------------------------------------------------------------------- judging


def _pair(a, b):
    """Verdict on "a beats b" from their test-accuracy stats (mean/min/max/n, or None)."""
    if a["n"] < 2 or b["n"] < 2:
        return "yes, 1 seed" if a["mean"] > b["mean"] else "no, 1 seed" if a["mean"] < b["mean"] else "can't tell"
    if a["min"] > b["max"]:
        return "yes"
    return "no" if b["min"] > a["max"] else "can't tell"


def judge(order, stats):
    """(answer, reason) for the claim that `order` is best-first, given {variant: test-accuracy stats}."""
    if not order:
        return "n/a", "the report states no ordering"
    lacking = [v for v in order if not stats.get(v)]
    if lacking:
        return "no data", f"no completed run of {', '.join(lacking)}"
    verdicts = [(_pair(stats[a], stats[b]), a, b) for a, b in zip(order, order[1:])]
    worst = min(verdicts, key=lambda t: RANKS.index(t[0]))[0]
    pairs = [f"{a} vs {b}" for v, a, b in verdicts if v == worst]
    reasons = {"no": "against the report in every seed: ", "no, 1 seed": "means against the report: ",
               "can't tell": "within the seed spread: ", "yes, 1 seed": "means in the report's order: ",
               "yes": "in the report's order in every seed: "}
    return worst, reasons[worst] + ", ".join(pairs)


def relation(a, b, stats):
    """How `a` and `b` compare: 'a > b' (every seed), 'a ≈ b' (seed ranges overlap), '... (1 seed)'."""
    verdict = _pair(stats[a], stats[b])
    if verdict == "can't tell":
        return f"{a} ≈ {b}" + (" (1 seed)" if min(stats[a]["n"], stats[b]["n"]) < 2 else "")
    better, worse = (a, b) if verdict.startswith("yes") else (b, a)
    return f"{better} > {worse}" + (" (1 seed)" if verdict.endswith("1 seed") else "")


def our_ordering(stats, order=()):
    """Our result in words. With the report's ordering `order`, the relation of each pair it ranks,
    in its order (the pairs the verdict judges): 'batch128 ≈ batch256; batch64 > batch256'. Without one,
    the variants by mean test accuracy, best first, '≈' where the seed ranges overlap."""
    lacking = "".join(f"; {v}: no completed run" for v, s in stats.items() if not s)
    if order and all(stats.get(v) for v in order):
        return "; ".join(relation(a, b, stats) for a, b in zip(order, order[1:])) + lacking
    ranked = sorted((v for v, s in stats.items() if s), key=lambda v: stats[v]["mean"], reverse=True)
    text = ranked[0] if ranked else ""
    for better, worse in zip(ranked, ranked[1:]):
        text += (" ≈ " if _pair(stats[better], stats[worse]) == "can't tell" else " > ") + worse
    return text + lacking


# ----------------------------------------------------------------------------------------- page


def _stats_by_variant(summary):
    return {row["variant"]: row["test_accuracy"] for row in summary["variants"]}


def _ours_cell(summary):
    n_seeds = len(summary["seeds"])
    return "<br>".join(f"{row['variant']} " + (report.accuracy_cell(row["test_accuracy"], n_seeds, False)
                                                if row["test_accuracy"] else f"– ({row['status']})")
                       for row in summary["variants"])


def _setup(all_variants, out, command):
    lines = report.setup_lines(all_variants)
    sources = {str(r.config.get("data_source", "")).lower() for v in all_variants for r in v.runs}
    if any("jpeg" in s or "jpg" in s for s in sources):
        lines.append("The data is a JPEG copy of CIFAR-10: lossy, so absolute accuracies are not comparable "
                     "one-to-one with published numbers; compare the orderings.")
    lines.append(f"The report's scale: {REPORT_SCALE}. Where ours differs (above), absolute numbers differ too; "
                 "only the orderings are compared.")
    script = Path(out).parent / "reproduce.sh"
    again = f"`bash {script}` (finished runs are skipped), then " if script.exists() else ""
    lines.append(f"Reproduce: {again}`{command}`.")
    return [f"- {line}" for line in lines]


def _section(name, claim, summary, variants, recipe_dir, out_dir):
    rel = Path(os.path.relpath(recipe_dir, out_dir))
    answer, reason = judge(claim.order, _stats_by_variant(summary)) if claim else ("n/a", "not in the report")
    head = f"## {name}: {claim.title} — report {claim.source}: {claim.verdict}" if claim else f"## {name}"
    diffs = report.variant_differences(variants)
    lines = [f'<a id="{name}"></a>', "", head, "",
             f"![{name}: test accuracy and loss per epoch]({rel / 'test_curves.png'})", ""]
    if diffs:
        lines += ["Variants differ in " + ", ".join(f"`{k}`" for k in diffs) + ".", ""]
    lines += [report.markdown_table(summary, claim.accuracy if claim and claim.accuracy else None), ""]
    reused = report.reuse_notes(summary)
    if reused:
        lines += [f"- {note}" for note in reused] + [""]
    ours = our_ordering(_stats_by_variant(summary), claim.order if claim else ())
    lines += [f"Our ordering: {ours}. Agrees with the report: **{answer}** "
              f"({reason}).", ""]
    lines += [f"More: [table and setup]({rel / 'report.md'}) · [train/validation curves]"
              f"({rel / 'train_val_curves.png'}) · [summary.json]({rel / 'summary.json'})", ""]
    return lines


def _summary_row(name, claim, summary):
    stats = _stats_by_variant(summary) if summary else {}
    answer, _ = judge(claim.order, stats) if claim and summary else ("n/a", "")
    report_acc = " / ".join(f"{v} {a:.2f}" for v, a in claim.accuracy.items()) if claim and claim.accuracy else "–"
    return "| " + " | ".join([
        f"[{name}](#{name})" if summary else f"{name} (not run yet)",
        f"{claim.verdict} ({claim.source})" if claim else "not in the report",
        report_acc,
        _ours_cell(summary) if summary else "–",
        our_ordering(stats, claim.order if claim else ()) if summary else "–",
        f"**{answer}**",
    ]) + " |"


def _marker(root, out):
    """The page's first line: which runs it was made from, relative to the page's folder."""
    return f"<!-- keras-cifar compare: the runs in {Path(os.path.relpath(Path(root).resolve(), out.parent.resolve())).as_posix()} -->"


def check_page(root, out):
    """Refuse to replace a file that `compare` did not write for `root` (a hand-written README, say)."""
    out = Path(out)
    if out.exists() and not out.read_text(errors="replace").startswith(_marker(root, out) + "\n"):
        raise ConfigError(f"{out} exists and was not written by `keras-cifar compare` for {root}; "
                          "pass another --out, or delete that file first")


def write_page(root, out, command, notes=None):
    """Write every recipe's report under `root`, then the comparison page `out`; returns out's path."""
    out = Path(out)
    check_page(root, out)
    recipe_dirs = {d.name: d for d in find_recipes([root])}
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [n for n in REPORT] + [n for n in recipe_dirs if n not in REPORT]
    summaries, all_variants, sections = {}, [], []
    for name in names:
        if name in recipe_dirs:
            summaries[name], variants, _ = report.write_report(recipe_dirs[name])
            all_variants += variants
            sections += _section(name, REPORT.get(name), summaries[name], variants, recipe_dirs[name], out.parent)
    lines = [_marker(root, out), "# Reproducing the report's ResNet-18 study on CIFAR-10", "",
             f"Generated by `{command}` from the run folders in `{root}`: rerun it rather than edit this page.",
             f"The report: *{REPORT_TITLE}*.", "", "## Setup", ""]
    lines += _setup(all_variants, out, command) + ["", "## Summary", ""]
    lines += ["| experiment | report says | report accuracy (%) | ours: final test accuracy (%) | our ordering | "
              "agrees? |", "|---|---|---|---|---|---|"]
    lines += [_summary_row(n, REPORT.get(n), summaries.get(n)) for n in names]
    lines += ["", JUDGING, "", report.TABLE_NOTE, ""] + sections
    if notes:
        lines += ["## Discussion", "", Path(notes).read_text().strip(), ""]
    write_atomic(out, "\n".join(lines))
    return out
