"""`keras-cifar report` and `compare` on fabricated run folders: no training, backend-independent."""

import json
import math
import os
import re
import sys

import pytest

from keras_cifar.study import claims, compare, plots, report, stats
from keras_cifar.training import tracking
from keras_cifar.training.runs import RunFolder, find_recipes
from tests.helpers import REPO, make_run, tiny_recipe


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
    summary, _, paths = report.write_report(bn_runs / "bn")
    bn, no_bn = _row(summary, "bn"), _row(summary, "no_bn")
    mean = (0.60 + 0.62 + 0.67) / 3
    std = math.sqrt(((0.60 - mean) ** 2 + (0.62 - mean) ** 2 + (0.67 - mean) ** 2) / 2)  # sample std, ddof=1
    assert bn["test_accuracy"]["mean"] == pytest.approx(mean) and bn["test_accuracy"]["std"] == pytest.approx(std)
    assert bn["test_accuracy"]["n"] == 3 and bn["status"] == "completed"
    assert bn["test_accuracy"]["ci"] == pytest.approx(
        [mean - 4.302653 * std / math.sqrt(3), mean + 4.302653 * std / math.sqrt(3)]
    )  # t(0.975, 2)
    assert no_bn["test_accuracy"] == {
        "mean": 0.5,
        "std": None,
        "min": 0.5,
        "max": 0.5,
        "n": 1,  # diverged left out
        "ci": None,
        "binomial_se": pytest.approx(math.sqrt(0.25 / 5000)),
    }
    assert no_bn["missing_seeds"] == [2] and [r["status"] for r in no_bn["runs"]] == ["completed", "diverged"]
    assert summary["highest_test_accuracy"] == ["bn"]

    text = (bn_runs / "bn" / "report.md").read_text()
    low, high = (100 * x for x in bn["test_accuracy"]["ci"])
    se = 100 * math.sqrt(mean * (1 - mean) / 5000)
    assert (
        f"| bn | **{100 * mean:.2f} ± {100 * std:.2f}** (n=3) | [{low:.2f}, {high:.2f}] | {se:.2f} | 62.00 | 4 | "
        "completed | 0m32s | 125 |"
    ) in text
    assert "| no_bn | 50.00 (n=1 of 3) | – | 0.71 | 49.00 | 4 | 1 completed; seed1 diverged at epoch 2; seed2 missing |" in text
    assert "- Variants differ in `model.batch_norm`: bn = true, no_bn = false" in text
    assert json.loads((bn_runs / "bn" / "summary.json").read_text()) == summary
    names = {p.name for p in paths}
    assert {f"{stem}.{ext}" for stem in ("test_curves", "train_val_curves") for ext in ("png", "svg")} <= names
    assert "lr.png" not in names  # both variants ran the same schedule
    assert (bn_runs / "bn" / "test_curves.png").read_bytes()[:4] == b"\x89PNG"
    again = {p.name: p.read_bytes() for p in paths}
    report.write_report(bn_runs / "bn")
    assert again == {p.name: p.read_bytes() for p in paths}  # deterministic: committed figures change with data only


def test_unfinished_and_failed_runs_are_shown_not_dropped(tmp_path):
    make_run(tmp_path, "lr", "cosine", 0, 0.6)
    fixed = {"schedule": {"name": "constant"}}
    make_run(tmp_path, "lr", "fixed", 0, 0.5, status="unfinished", epochs_done=2, config=fixed)
    make_run(tmp_path, "lr", "fixed", 1, 0.5, status="failed", epochs_done=3, config=fixed)
    summary, _, paths = report.write_report(tmp_path / "lr")
    fixed = _row(summary, "fixed")
    assert fixed["test_accuracy"] is None
    assert fixed["status"] == "seed0 unfinished, 2/4 epochs; seed1 failed after 3/4 epochs"
    assert _row(summary, "cosine")["status"] == "1 completed; seed1 missing"
    assert (
        "| fixed | – | – | – | – | 4 | seed0 unfinished, 2/4 epochs; seed1 failed after 3/4 epochs |"
        in (tmp_path / "lr" / "report.md").read_text()
    )
    assert {"lr.png", "lr.svg"} <= {p.name for p in paths}  # the learning rates differ


def test_a_one_epoch_run_is_a_visible_point_on_whole_epochs_and_has_no_images_per_second(tmp_path):
    make_run(tmp_path, "bn", "bn", 0, 0.3, epochs_done=1, epochs=1)
    fig, ((ax,),) = plots.figure()
    run = RunFolder(tmp_path / "bn" / "bn" / "seed0").load()
    plots.draw_runs(ax, "test_accuracy", "tab:blue", [run], [], "bn")
    plots.epoch_axes(ax, "t", "y", 1)
    (line,) = ax.lines
    assert line.get_marker() == "o" and list(line.get_xdata()) == [1]
    assert ax.get_xlim() == (0.5, 1.5) and [t for t in ax.get_xticks() if 0.5 <= t <= 1.5] == [1]
    summary, _, _ = report.write_report(tmp_path / "bn")
    assert report.markdown_table(summary).splitlines()[-1].endswith("| 0m08s | – |")


def test_find_recipes_in_an_out_root_and_a_clear_error_without_runs(tmp_path, cli):
    make_run(tmp_path / "runs", "bn", "bn", 0, 0.6)
    make_run(tmp_path / "runs", "loss", "cross_entropy", 0, 0.6)
    (tmp_path / "runs" / "notes").mkdir()
    assert find_recipes([tmp_path / "runs"]) == [tmp_path / "runs" / "bn", tmp_path / "runs" / "loss"]
    assert find_recipes([tmp_path / "runs" / "bn"]) == [tmp_path / "runs" / "bn"]

    result = cli("report", tmp_path / "runs" / "notes")
    assert result.exit_code == 2 and "no runs found; expected OUT/<recipe>/<variant>/seed<k>/" in result.output


def test_cli_report_writes_every_recipe_into_out(bn_runs, tmp_path, cli):
    """Two seeds 35 points apart: 77.50 ± 12.706 * 24.75 / sqrt(2) % reaches far past 0 and 100 %, and
    the interval shown is clipped to what an accuracy can be."""
    make_run(bn_runs, "loss", "cross_entropy", 0, 0.6)
    make_run(bn_runs, "loss", "cross_entropy", 1, 0.95)
    result = cli("report", bn_runs, "--out", tmp_path / "figs")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "figs" / "bn" / "test_curves.svg").exists()
    assert (tmp_path / "figs" / "loss" / "report.md").exists()
    assert "| no_bn | 50.00 (n=1 of 3)" in result.output
    assert "| cross_entropy | **77.50 ± 24.75** (n=2) | [0.00, 100.00] |" in result.output
    assert not (bn_runs / "bn" / "report.md").exists()


def test_run_ends_with_the_recipes_report(tmp_path, cli, monkeypatch):
    from keras_cifar.training import sweep

    def fake_sweep(runs, cifar, out_root, restart):  # stands in for training
        for spec in runs:
            make_run(out_root, spec.recipe, spec.variant, spec.seed, 0.5 if spec.variant == "a" else 0.6)
        return [(spec, RunFolder.of(out_root, spec).read_metrics()) for spec in runs]

    monkeypatch.setattr(sweep, "run_sweep", fake_sweep)
    result = cli(
        "run",
        tiny_recipe(tmp_path, "  a: {}\n  b: {model: {width: 16}}\n"),
        "--out",
        tmp_path / "out",
        "--data",
        "synthetic:100",
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "tiny" / "test_curves.png").exists()
    assert "tiny: " in result.output and "| b | **60.00** (n=1)" in result.output


def test_docs_quote_the_committed_bn_report():
    """docs/reports.md's example output of `keras-cifar report results/runs/bn` is the committed runs' table."""
    variants = report.load_variants(REPO / "results" / "runs" / "bn")
    table = report.markdown_table(report.summarize(REPO / "results" / "runs" / "bn", variants))
    page = (REPO / "docs" / "reports.md").read_text()
    quoted = re.search(r"\$ keras-cifar report results/runs/bn\n(.*?)\n\n", page, re.S)
    assert quoted, "docs/reports.md lost its `keras-cifar report results/runs/bn` example"
    assert [line.strip() for line in quoted.group(1).splitlines()[1:]] == table.splitlines()


# ------------------------------------------------------------------------------------------ compare


def _stats(*accs):
    return stats.describe(accs)


@pytest.mark.parametrize(
    "bn, no_bn, answer",
    [
        ((0.60, 0.62), (0.50, 0.52), "yes"),  # +10 pt, 95 % CI [+3.9, +16.1] (t(0.975, 2) = 4.303, se 1.41 pt)
        ((0.50, 0.52), (0.60, 0.62), "no"),
        ((0.55, 0.62), (0.50, 0.58), "can't tell"),  # means in order, the interval holds 0
        ((0.60,), (0.50, 0.52), "can't tell"),  # one seed: no interval, whatever the means
    ],
)
def test_judge_pairs(bn, no_bn, answer):
    assert compare.judge(("bn", "no_bn"), {"bn": _stats(*bn), "no_bn": _stats(*no_bn)}).answer == answer


def test_judge_says_why_with_a_planning_range_of_seeds():
    """bn (0.55, 0.62) vs no_bn (0.50, 0.58): +4.5 pt; Welch se = sqrt(0.00245/2 + 0.0032/2) = 5.315 pt at
    df = 1.965, so the interval holds 0. Seeds: 23 at the observed spread, more than 100 at its upper
    bound (tests/test_stats.py computes both): a range, not one exact-looking number."""
    order, data = ("bn", "no_bn"), {"bn": _stats(0.55, 0.62), "no_bn": _stats(0.50, 0.58)}
    verdict = compare.judge(order, data)
    assert verdict.reason.startswith("bn − no_bn = +4.50 pt, 95 % CI [-")
    assert verdict.reason.endswith(", p = 0.49; planning estimate: 23 to more than 100 seeds per variant would resolve it")
    assert compare.judge(order, {"bn": _stats(0.6), "no_bn": _stats(0.5, 0.52)})[:2] == (
        "can't tell",
        "bn has 1 seed: no interval; run 2 seeds or more",
    )


def test_seeds_auto_wants_a_seed_only_where_its_cap_could_decide():
    """Under a plan of 2 to 5 seeds (4 looks at 1.25 %): +4.5 pt at a 5.3 pt spread needs far more than 5
    seeds (no seed wanted); a variant with one completed seed wants one; a decided pair wants none; 0.60,
    0.63 against 0.52, 0.53 (+9 pt, undecided at 2 seeds) could be decided by 5: the cap's 5 seeds are
    within its planning estimate's low end, and the reason says so."""
    plan, order = stats.Rule(2, 5), ("bn", "no_bn")
    assert claims.wants_seed(order, {"bn": _stats(0.55, 0.62), "no_bn": _stats(0.50, 0.58)}, plan) is None
    assert claims.wants_seed(order, {"bn": _stats(0.6), "no_bn": _stats(0.5, 0.6)}, plan) == (
        "bn or no_bn has fewer than 2 completed seeds"
    )
    assert claims.wants_seed(order, {"bn": _stats(0.60, 0.62), "no_bn": _stats(0.40, 0.42)}, plan) is None
    close = {"bn": _stats(0.60, 0.63), "no_bn": _stats(0.52, 0.53)}
    assert claims.judge(order, close, plan).answer == "can't tell"
    assert claims.wants_seed(order, close, plan) == (
        "bn − no_bn is undecided and the planning estimate says 5 seeds could decide it"
    )
    assert "more than the cap of 5" in claims.judge(order, {"bn": _stats(0.55, 0.62), "no_bn": _stats(0.50, 0.58)}, plan).reason


def test_judge_every_pair_of_an_ordering():
    """The issue's A > B > C with A = 60, 61, 62, B = 58, 64, 70, C = 66, 67, 68 (%): the neighbours A − B
    and B − C are undecided (B spreads 6 pt), but A − C = -6 pt, 95 % CI [-8.27, -3.73]: the claim is
    contradicted, and that pair is the reason."""
    data = {"A": _stats(0.60, 0.61, 0.62), "B": _stats(0.58, 0.64, 0.70), "C": _stats(0.66, 0.67, 0.68)}
    verdict = compare.judge(("A", "B", "C"), data)
    assert verdict[:2] == ("no", "A − C = -6.00 pt, 95 % CI [-8.27, -3.73], p = 0.0018")
    assert [(p.better, p.worse, p.verdict) for p in verdict.pairs] == [
        ("A", "B", "can't tell"),
        ("A", "C", "no"),
        ("B", "C", "can't tell"),
    ]
    assert compare.our_ordering(data, ("A", "B", "C")) == "A ≈ B; C > A; B ≈ C"


def test_a_verdict_from_equal_scores_is_bounded_by_the_test_set():
    """Two seeds at 55 % against two at 54 % on 5,000 test images: not "yes" (CI [+1.00, +1.00] before),
    since one test set's SE (0.70 pt) bounds each spread; without a test-set size, refused with a reason."""
    same = {"a": stats.describe([0.55, 0.55], 5000), "b": stats.describe([0.54, 0.54], 5000)}
    answer, reason = compare.judge(("a", "b"), same)[:2]
    assert answer == "can't tell" and reason.startswith("a − b = +1.00 pt, 95 % CI [-2.03, +4.03], p = 0.29;")
    bare = {"a": _stats(0.55, 0.55), "b": _stats(0.54, 0.54)}
    assert compare.judge(("a", "b"), bare)[:2] == (
        "can't tell",
        "a and b each scored the same on every seed, and no test-set size bounds that measurement's noise: no interval",
    )


def test_judge_three_way_worst_pair_decides_and_missing_data():
    data = {"relu": _stats(0.7, 0.72), "tanh": _stats(0.6, 0.62), "sigmoid": _stats(0.61, 0.65)}
    order = ("relu", "tanh", "sigmoid")
    verdict = compare.judge(order, data)
    assert verdict.answer == "can't tell" and [p.why.split(" = ")[0] for p in verdict.pairs if p.verdict == "can't tell"] == [
        "relu − sigmoid",  # +8 pt, df 1.5: the interval holds 0
        "tanh − sigmoid",
    ]
    assert verdict.reason.count(" − ") == 2
    assert compare.our_ordering(data) == "relu ≈ sigmoid ≈ tanh"
    assert compare.our_ordering(data, order) == "relu > tanh; relu ≈ sigmoid; tanh ≈ sigmoid"  # the pairs judged
    assert compare.judge(order, {**data, "sigmoid": None}).answer == "no data"
    assert compare.judge((), data).answer == "n/a"


def test_ordering_shows_the_pair_that_decided_a_no():
    """The report says 128 > 256 > 64. 128 vs 256 is undecided (+6 pt, df 2.25), and so is 128 vs 64;
    256 vs 64 is -9 pt with a Welch interval of ±2.27 pt (se 0.816 pt, df 4, t 2.776): against the report."""
    data = {"batch64": _stats(0.64, 0.65, 0.66), "batch128": _stats(0.58, 0.62, 0.66), "batch256": _stats(0.55, 0.56, 0.57)}
    order = ("batch128", "batch256", "batch64")
    assert compare.judge(order, data)[:2] == ("no", "batch256 − batch64 = -9.00 pt, 95 % CI [-11.27, -6.73], p = 0.00039")
    assert compare.our_ordering(data, order) == "batch128 ≈ batch256; batch128 ≈ batch64; batch64 > batch256"


def test_holm_steps_down_from_the_smallest_p_value():
    """m = 4 at 5 %: 0.01 <= 0.05 / 4, then 0.015 <= 0.05 / 3, then 0.03 > 0.05 / 2 stops, so 0.04 is not
    rejected either, though it is below 5 % on its own."""
    assert claims.holm([0.03, 0.01, 0.04, 0.015]) == [False, True, False, True]
    assert claims.holm([0.001, 0.5]) == [True, False] and claims.holm([]) == []


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
    assert summary["| [bn](#bn)"].endswith("| no_bn > bn | **no** | **no** |")
    assert summary["| [activation](#activation)"].endswith(
        "| relu > tanh; relu > sigmoid; tanh > sigmoid | **yes** | **yes** |"
    )
    assert "relu 95.48 / tanh 92.37 / sigmoid 87.63" in summary["| [activation](#activation)"]
    assert summary["| momentum (not run yet)"].endswith("| **n/a** | **n/a** |")  # claims come from recipes/
    assert "| relu | 95.48 | **70.50 ± 0.71** (n=2) |" in page  # the report's number beside ours
    assert "![bn: test accuracy and loss per epoch](runs/bn/test_curves.png)" in page
    assert (runs / "bn" / "test_curves.png").exists()
    for fact in (
        "width (Channel1) 8",
        "epochs 4",
        "seeds 0, 1",
        "training subset 1,000 images",
        "JPEG copy of CIFAR-10: lossy",
        "gpu: Test GPU",
        f"keras-cifar compare {runs} --out {out}",
        "## Discussion\n\nAt 4 epochs BN loses.",
    ):
        assert fact in page
    assert cli("compare", runs, "--out", out).exit_code == 0  # its own page: replaced


def test_compare_page_judges_the_family_under_each_experiments_rule(tmp_path, cli):
    """Four experiments, 6 pairs. bn is reversed (p 0.0022). activation was gathered by `--seeds auto`
    from 2 to 5 seeds (its recorded plan): 4 looks at 1.25 %, so its intervals are 98.75 % ones and its
    p-values 4 times Welch's: relu − tanh 0.020, relu − sigmoid 0.0022, tanh − sigmoid 0.0050. momentum
    and loss: +7 pt at 1.41 pt spreads, p 0.038 each. Each verdict alone stands (every p <= 5 %); Holm over
    the 6 pairs keeps 0.0022 <= 5/6 %, 0.0022 <= 5/5 % and 0.0050 <= 5/4 %, then 0.020 > 5/3 % stops
    it: the page-wide column keeps bn's *no* and reads *can't tell* for the three others. bn's bn,
    momentum's momentum, activation's relu and loss's cross_entropy are one configuration: the page says
    which verdicts rest on those runs together."""
    runs = tmp_path / "runs"
    for seed in (0, 1):
        make_run(runs, "bn", "bn", seed, 0.40 + seed / 100)
        make_run(runs, "bn", "no_bn", seed, 0.55 + seed / 100, config={"model": {"batch_norm": False}})
        for variant, acc in (("relu", 0.7), ("tanh", 0.6), ("sigmoid", 0.4)):
            make_run(runs, "activation", variant, seed, acc + seed / 100, config={"model": {"activation": variant}})
        for recipe, better, worse, change in (
            ("momentum", "momentum", "no_momentum", {"optimizer": {"momentum": 0.0}}),
            ("loss", "cross_entropy", "multi_margin", {"loss": "multi_margin"}),
        ):
            make_run(runs, recipe, better, seed, 0.60 + seed / 50)
            make_run(runs, recipe, worse, seed, 0.53 + seed / 50, config=change)
    claims.record_plan(runs / "activation", stats.Rule(2, 5))
    assert cli("compare", runs).exit_code == 0
    page = (runs / "comparison.md").read_text()
    rows = {line.split(" | ")[0][2:]: line for line in page.splitlines() if line.startswith("| [")}
    assert rows["[bn](#bn)"].endswith("| **no** | **no** |")
    for name in ("momentum", "activation", "loss"):
        assert rows[f"[{name}](#{name})"].endswith("| **yes** | **can't tell** |")
    assert (
        "Intervals: `--seeds auto`, a look at every number of seeds from 2 to 5: 98.75 % intervals at each of "
        "its 4 looks, 95 % over all." in page
    )
    assert "relu − tanh = +10.00 pt, 98.75 % CI [+3.73, +16.27], p = 0.02;" in page  # t(0.99375, 2) = 8.860
    assert "| relu | 95.48 | **70.50 ± 0.71** (n=2) | [45.04, 95.96] |" in page  # t(0.99375, 1) = 50.92
    assert "Intervals: seeds fixed in advance: one look, 95 % intervals." in page
    assert "Its verdicts rest on 6 pairs." in page and "can reach 30 % (5 % × 6, the union bound)" in page
    assert (
        "- One configuration, seeds 0, 1: the same runs are bn's bn, momentum's momentum, activation's relu, "
        "loss's cross_entropy. The verdicts of bn, momentum, activation, loss rest on them together" in page
    )
    assert "Page-wide (Holm): **can't tell**." in page


def test_compare_writes_beside_the_runs_and_never_replaces_a_page_it_did_not_write(tmp_path, cli):
    runs = tmp_path / "results" / "runs"
    make_run(runs, "bn", "bn", 0, 0.6)
    readme = tmp_path / "results" / "README.md"
    readme.write_text("# Our results, written by hand\n")
    result = cli("compare", runs, "--out", readme)
    assert result.exit_code == 2 and "was not written by `keras-cifar compare`" in result.output
    assert readme.read_text() == "# Our results, written by hand\n"
    assert cli("compare", runs).exit_code == 0
    assert (runs / "comparison.md").read_text().splitlines()[1] == "# Reproducing the report's ResNet-18 study on CIFAR-10"
    other = tmp_path / "other"
    make_run(other, "bn", "bn", 0, 0.6)
    result = cli("compare", other, "--out", runs / "comparison.md")  # a page made for other runs
    assert result.exit_code == 2


def test_compare_reads_the_claims_of_the_recipes_it_is_given(tmp_path, cli):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        make_run(runs, "width", "wide", seed, 0.6 + seed / 100)
        make_run(runs, "width", "narrow", seed, 0.5 + seed / 100, config={"model": {"width": 4}})
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "width.yaml").write_text(
        "name: width\nreport: {title: Width, source: Fig. 2, claim: narrow is enough, order: [narrow, wide]}\n"
        "variants: {wide: {}, narrow: {model: {width: 4}}}\n"
    )
    assert cli("compare", runs, "--recipes", recipes).exit_code == 0
    row = next(line for line in (runs / "comparison.md").read_text().splitlines() if line.startswith("| [width]"))
    assert row == (
        "| [width](#width) | narrow is enough (Fig. 2) | – | narrow 50.50 ± 0.71 (n=2)<br>"
        "wide 60.50 ± 0.71 (n=2) | wide > narrow | **no** | **no** |"
    )


def test_report_logs_finished_runs_to_mlflow_once(tmp_path, cli, monkeypatch):
    """`report --track mlflow` into the SQLite store beside the runs' root, read back through MLflow's own
    client as `mlflow ui` reads it, with no MLFLOW_ALLOW_FILE_STORE: one MLflow run per finished run folder
    (the unfinished one waits), its config as params, its history as per-epoch metrics, its files and the
    recipe's figures as artifacts in mlartifacts/ beside the database. Again: nothing new to log."""
    import mlflow

    runs = tmp_path / "runs"
    for seed in (0, 1):
        make_run(runs, "bn", "bn", seed, 0.6 + seed / 100)
    make_run(runs, "bn", "no_bn", 0, 0.5, config={"model": {"batch_norm": False}})
    make_run(runs, "bn", "no_bn", 1, 0.5, status="unfinished", epochs_done=2, config={"model": {"batch_norm": False}})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    result = cli("report", runs / "bn", "--track", "mlflow")
    assert result.exit_code == 0, result.output
    store = tracking.store(runs)
    assert store == f"sqlite:///{tmp_path}/mlflow.db" and (tmp_path / "mlflow.db").is_file()
    assert f"bn: 3 runs logged to MLflow at {store}" in result.output
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ and not (tmp_path / "mlruns").exists()
    client = mlflow.MlflowClient(store)
    found = client.search_runs([client.get_experiment_by_name("bn").experiment_id])
    by_name = {r.info.run_name: r for r in found}
    assert sorted(by_name) == ["bn/seed0", "bn/seed1", "no_bn/seed0"]
    logged = by_name["no_bn/seed0"]
    assert logged.data.params["model.batch_norm"] == "False" and logged.data.params["seed"] == "0"
    assert logged.data.tags["keras_cifar.run"] == "bn/no_bn/seed0"
    assert logged.info.artifact_uri.startswith((tmp_path / "mlartifacts" / "bn").as_uri())
    history = client.get_metric_history(logged.info.run_id, "test_accuracy")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.value for m in history] == pytest.approx([0.5 * e / 4 for e in range(1, 5)])
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)} | {
        a.path for a in client.list_artifacts(logged.info.run_id, "figures")
    }
    assert {"metrics.json", "history.csv", "config.yaml", "figures/test_curves.png"} <= artifacts
    again = cli("report", runs / "bn", "--track", "mlflow")
    assert "bn: 0 runs logged to MLflow" in again.output


def test_track_mlflow_without_mlflow_is_one_line_naming_the_install(tmp_path, cli, monkeypatch):
    make_run(tmp_path / "runs", "bn", "bn", 0, 0.6)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # importlib.util.find_spec("mlflow") is None: not installed
    result = cli("report", tmp_path / "runs", "--track", "mlflow")
    assert result.exit_code == 2 and 'pip install -e ".[mlflow]"' in result.output
    assert not (tmp_path / "runs" / "bn" / "report.md").exists()  # refused before writing anything
