"""Does keras-cifar's default input path (TensorFlow with tf.data) train like its numpy input path and
like plain PyTorch? The baseline recipe at a small scale, many seeds per system, the same split and data.

    python results/parity/parity.py train --data cifar10-jpeg.tar.gz --scale cheap --seeds 0-9
    python results/parity/parity.py train --data cifar10-jpeg.tar.gz --scale confirm --seeds 0-4
    python results/parity/parity.py report --scale cheap     # parity-cheap.json and .png, a table

Systems: `tf_data` and `numpy` are `keras-cifar run recipes/baseline.yaml` on the TensorFlow backend with
`data.pipeline` set so; `pytorch` is keras_cifar/torch_reference.py (the same network and recipe in
plain PyTorch, fp32) on keras_cifar.data.sources's split. Runs go to results/parity/<scale>/<system>/ and
resume: a seed that has finished is not trained again. `report` gives per system the final-epoch test
accuracy's mean, sd, min and max, Welch's test of equal means and the Brown-Forsythe test of equal
spread (Levene's, centred on the median) for each pair of systems, and draws the test accuracy and
training loss per epoch (mean, min-max band).
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RECIPE = REPO / "recipes" / "baseline.yaml"
SCALES = {
    "cheap": {"model.width": 16, "data.subset": 5000, "train.epochs": 6},
    "confirm": {"model.width": 16, "data.subset": 10000, "train.epochs": 10},
}
SYSTEMS = ("tf_data", "numpy", "pytorch")
# The same runs made with keras-cifar before its training order was fixed (commit 673bc04, before
# 9e59db4), kept for the comparison: `report` includes them where their folders exist.
BEFORE = ("tf_data-before-fix", "numpy-before-fix")


def seeds_of(text):
    """'0-9' or '0,1,5' -> a list of seeds."""
    if "-" in text:
        low, high = map(int, text.split("-"))
        return list(range(low, high + 1))
    return [int(s) for s in text.split(",")]


def keras_cifar_run(system, scale, seeds, data):
    out = HERE / scale / system
    sets = [f"{k}={v}" for k, v in SCALES[scale].items()] + [f"data.pipeline={system}"]
    command = [
        sys.executable,
        "-m",
        "keras_cifar",
        "run",
        str(RECIPE),
        "--data",
        data,
        "--out",
        str(out),
        "--seeds",
        ",".join(map(str, seeds)),
    ] + [a for s in sets for a in ("--set", s)]
    subprocess.run(command, check=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"})


def pytorch_run(scale, seeds, data):
    from keras_cifar import config as config
    from keras_cifar.core.files import write_json

    out = HERE / scale / "pytorch"
    out.mkdir(parents=True, exist_ok=True)
    overrides = config.parse_sets([f"{k}={v}" for k, v in SCALES[scale].items()])
    for spec in config.sweep(config.load_recipe(RECIPE), overrides, seeds=seeds):
        result = out / f"seed{spec.seed}.json"
        if result.exists():
            continue
        settings = out / f"seed{spec.seed}.settings.json"
        write_json(
            settings, {"config": spec.config.to_dict(), "data": data, "epochs": spec.config.train.epochs, "modes": ["fp32"]}
        )
        print(f"pytorch seed {spec.seed}", flush=True)
        subprocess.run([sys.executable, "-m", "keras_cifar.tools.torch_reference", str(settings), str(result)], check=True)
        settings.unlink()


def histories(scale, system):
    """{seed: [rows]}: per epoch test_accuracy and loss (training) of each finished run."""
    from keras_cifar.training.runs import RunFolder

    root = HERE / scale / system
    if system == "pytorch":
        return {int(p.stem[4:]): json.loads(p.read_text())["modes"]["fp32"] for p in sorted(root.glob("seed*.json"))}
    out = {}
    for seed_dir in sorted(root.glob("baseline/baseline/seed*")):
        folder = RunFolder(seed_dir)
        if folder.status() == "completed":
            out[int(seed_dir.name[4:])] = [row.to_dict() for row in folder.read_history()]
    return out


def describe(values):
    v = np.asarray(values, float)
    return {
        "n": len(v),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def report(scale):
    from scipy import stats

    systems = [s for s in SYSTEMS + BEFORE if (HERE / scale / s).is_dir()]
    runs = {s: histories(scale, s) for s in systems}
    final = {s: {seed: 100 * rows[-1]["test_accuracy"] for seed, rows in r.items()} for s, r in runs.items()}
    loss = {s: {seed: rows[-1]["loss"] for seed, rows in r.items()} for s, r in runs.items()}
    record = {
        "scale": SCALES[scale],
        "recipe": "recipes/baseline.yaml",
        "data": "CIFAR-10 JPEG copy (lossy)",
        "test_accuracy_percent": final,
        "final_train_loss": loss,
        "summary": {s: describe(list(v.values())) for s, v in final.items() if v},
        "train_loss_summary": {s: describe(list(v.values())) for s, v in loss.items() if v},
        "tests": {},
    }
    for i, a in enumerate(systems):
        for b in systems[i + 1 :]:
            x, y = list(final[a].values()), list(final[b].values())
            if len(x) > 1 and len(y) > 1:
                record["tests"][f"{a} vs {b}"] = {
                    "welch_p": float(stats.ttest_ind(x, y, equal_var=False).pvalue),
                    "brown_forsythe_p": float(stats.levene(x, y, center="median").pvalue),
                    "sd_ratio": float(np.std(x, ddof=1) / np.std(y, ddof=1)),
                    "train_loss_welch_p": float(
                        stats.ttest_ind(list(loss[a].values()), list(loss[b].values()), equal_var=False).pvalue
                    ),
                }
    (HERE / f"parity-{scale}.json").write_text(json.dumps(record, indent=2) + "\n")
    _figure(runs, scale)
    print(table(record))


def table(record):
    lines = [
        "| system | seeds | test accuracy, final epoch (%) | mean ± sd | min | max | final train loss (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for system, s in record["summary"].items():
        values = ", ".join(f"{v:.2f}" for v in record["test_accuracy_percent"][system].values())
        lines.append(
            f"| {system} | {s['n']} | {values} | {s['mean']:.2f} ± {s['sd']:.2f} | {s['min']:.2f} | "
            f"{s['max']:.2f} | {record['train_loss_summary'][system]['mean']:.3f} |"
        )
    lines += [
        "",
        "| pair | Welch p (means) | Brown-Forsythe p (spreads) | sd ratio | Welch p (final train loss) |",
        "|---|---|---|---|---|",
    ]
    for pair, t in record["tests"].items():
        lines.append(
            f"| {pair} | {t['welch_p']:.3f} | {t['brown_forsythe_p']:.3f} | {t['sd_ratio']:.2f} | "
            f"{t['train_loss_welch_p']:.3f} |"
        )
    return "\n".join(lines)


def _figure(runs, scale):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for system, color in zip(runs, ("C0", "C1", "C2", "C3", "C4")):
        if not runs[system]:
            continue
        for ax, key, scale_by in ((axes[0], "test_accuracy", 100), (axes[1], "loss", 1)):
            curves = np.array([[r[key] * scale_by for r in rows] for rows in runs[system].values()])
            epochs = np.arange(1, curves.shape[1] + 1)
            style = "--" if system in BEFORE else "-"
            ax.plot(epochs, curves.mean(0), style, color=color, marker="o", label=f"{system} (n={len(curves)})")
            ax.fill_between(epochs, curves.min(0), curves.max(0), color=color, alpha=0.2)
    s = SCALES[scale]
    for ax, title in zip(axes, ("test accuracy (%)", "training loss")):
        ax.set_xlabel("epoch")
        ax.set_title(f"{title}: mean, min-max band over seeds")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(
        f"Baseline at width {s['model.width']}, {s['data.subset']} training images, "
        f"{s['train.epochs']} epochs, CIFAR-10 JPEG copy"
    )
    fig.tight_layout()
    fig.savefig(HERE / f"parity-{scale}.png", dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("train", "report"))
    parser.add_argument("--scale", choices=tuple(SCALES), default="cheap")
    parser.add_argument("--data", default=os.environ.get("KERAS_CIFAR_DATA"))
    parser.add_argument("--seeds", default="0-9")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    args = parser.parse_args()
    if args.command == "report":
        return report(args.scale)
    if not args.data:
        parser.error("train needs --data (or KERAS_CIFAR_DATA): a local CIFAR-10 copy")
    seeds = seeds_of(args.seeds)
    for system in args.systems.split(","):
        if system == "pytorch":
            pytorch_run(args.scale, seeds, args.data)
        else:
            keras_cifar_run(system, args.scale, seeds, args.data)


if __name__ == "__main__":
    main()
