"""How closely each export agrees with the Keras model it came from, on the test split (docs/serving.md).

Each export runs in its own runtime (TensorFlow for a SavedModel, ONNX Runtime, the LiteRT interpreter),
the Keras model on the current backend; prints a Markdown table: the model file, its size, top-1
agreement with Keras, the largest logit difference, and the accuracy. Usage:

    python benchmarks/formats.py RUN_DIR_OR_KERAS_FILE EXPORT_DIR... [--data PATH]
"""

import argparse
from pathlib import Path

import numpy as np

from keras_cifar.core import backend
from keras_cifar.data import sources as data_lib
from keras_cifar.tools import serving


def size(path: Path) -> int:
    """Bytes of a model file, or of a SavedModel folder's files."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the run folder or .keras file that was exported")
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--data", help="as keras-cifar evaluate --data; default: the run's own data")
    args = parser.parse_args()
    backend.start()
    x, y = data_lib.split(data_lib.load(args.data)).test
    images = x.astype(np.float32)
    expected = serving.load_classifier(args.model).logits(images)
    print(f"Keras ({backend.selected()}): accuracy {(expected.argmax(-1) == y).mean():.2%} on {len(y)} test images\n")
    print("| format | file | size | top-1 agreement with Keras | largest logit difference | accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for export in args.exports:
        kind, where = serving.model_path(export)
        logits = serving.load_classifier(export).logits(images)
        same = (logits.argmax(-1) == expected.argmax(-1)).sum()
        print(
            f"| {kind} | {where.name} | {size(where) / 1024:.0f} KiB | {same} of {len(y)} | "
            f"{np.abs(logits - expected).max():.1e} | {(logits.argmax(-1) == y).mean():.2%} |"
        )


if __name__ == "__main__":
    main()
