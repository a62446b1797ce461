"""Export a trained classifier for serving: ``DIR/<version>/`` in one of serving.EXPORT_FORMATS, written
atomically, the layout TensorFlow Serving polls (serving.py's doc says what each format holds; serving.py
loads them back)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_cifar.core import extras
from keras_cifar.core.errors import ModelError
from keras_cifar.data.sources import CLASS_NAMES, has_tensorflow
from keras_cifar.tools.serving import (
    EXPORT_FORMATS,
    IMAGE_SIZE,
    LABELS_FILE,
    MODEL_FILES,
    TTA_FILE,
    WRITERS,
    inference_model,
    load_keras,
    model_path,
    resolve_tta,
)

if TYPE_CHECKING:  # Keras is imported when a model is written
    import keras


def exportable(source: Path | str) -> Path:
    """The .keras file that `source` (a run folder or a .keras file) exports, or a ModelError."""
    kind, keras_file = model_path(source)
    if kind != "keras":
        raise ModelError(f"{source}: is already an exported SavedModel; export a run folder or a .keras file")
    return keras_file


def check_format(fmt: str) -> None:
    """Refuse an unknown format, or one whose writer's extra is not installed (before Keras starts)."""
    if fmt not in EXPORT_FORMATS:
        raise ModelError(f"unknown format {fmt!r}; use {', '.join(EXPORT_FORMATS)}")
    if fmt in WRITERS:
        extra, modules = WRITERS[fmt]
        extras.require(extra, *modules, purpose=f"export --format {fmt}")


def export(source: str | Path, out: str | Path | None = None, fmt: str = "saved_model", tta: str | None = None) -> Path:
    """Write the inference model of `source` (a run folder or .keras file) to ``out/<version>/``, the
    next free version number (1 for a new folder), under test-time augmentation `tta` (resolve_tta: by
    default the run's eval.tta); returns that folder. ``out`` defaults to ``<run folder>/export``."""
    import keras

    check_format(fmt)
    keras_file = exportable(source)
    mode = resolve_tta(keras_file, tta)[0]
    out = Path(out) if out else keras_file.parent / "export"
    version_dir = out / str(_next_version(out))
    if fmt == "keras" or keras.backend.backend() == "tensorflow":
        write_version(keras_file, version_dir, fmt, mode)
    else:
        _write_in_tensorflow(keras_file, version_dir, fmt, mode)
    return version_dir


def _next_version(out: Path) -> int:
    existing = [int(p.name) for p in out.iterdir() if p.name.isdigit()] if out.is_dir() else []
    return 1 + max(existing, default=0)


def write_version(keras_file: str | Path, version_dir: str | Path, fmt: str, tta: str = "none") -> None:
    """Load `keras_file` and write its inference model in `fmt` to `version_dir`, which appears whole
    or not at all (TensorFlow Serving may be watching the parent folder); with test-time augmentation
    `tta` (resolve_tta's mode for `keras_file`), augment.with_tta around it and TTA_FILE naming it."""
    from keras_cifar.data.augment import with_tta

    version_dir = Path(version_dir)
    tmp = version_dir.with_name(f".{version_dir.name}.tmp{os.getpid()}")
    model = inference_model(load_keras(keras_file))
    if not resolve_tta(keras_file, tta)[1]:  # not inside the model already (a .keras export of export --tta)
        model = with_tta(model, tta)
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "saved_model":
            _write_saved_model(model, tmp)
        else:
            tmp.mkdir()
            _write_file(model, tmp / MODEL_FILES[fmt], fmt)
        (tmp / LABELS_FILE).write_text("\n".join(CLASS_NAMES) + "\n")
        if tta != "none":
            (tmp / TTA_FILE).write_text(tta + "\n")
        os.replace(tmp, version_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_saved_model(model: keras.Model, path: Path) -> None:
    import keras
    import tensorflow as tf

    def outputs(images: Any) -> dict[str, Any]:
        logits = model(keras.ops.cast(images, "float32"), training=False)
        return {"probabilities": keras.ops.softmax(logits), "logits": logits}

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, dtype in (("serve", "float32"), ("serve_uint8", "uint8")):  # the first is serving_default
        spec = keras.InputSpec(shape=(None, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=dtype, name="images")
        archive.add_endpoint(name, outputs, input_signature=[spec])
    archive.add_endpoint("class_names", lambda: {"class_names": tf.constant(CLASS_NAMES)}, input_signature=[])
    archive.write_out(str(path), verbose=False)


def _write_file(model: Any, path: Path, fmt: str) -> None:
    """The inference model as one file through Keras's exporter for `fmt` (keras, onnx, litert); the
    exported formats take float32 images and give logits and probabilities by name, as the SavedModel."""
    import keras

    if fmt == "keras":
        model.save(path)
        return
    logits = model.output
    named = keras.Model(model.input, {"logits": logits, "probabilities": keras.layers.Softmax(name="probabilities")(logits)})
    spec = keras.InputSpec(shape=(None, IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name="images")
    with warnings.catch_warnings():  # Keras's numpy-2 patch of tf2onnx asks numpy for np.object
        warnings.filterwarnings("ignore", category=FutureWarning, module="keras.src.export")
        named.export(str(path), format=fmt, input_signature=[spec], verbose=False)


def _write_in_tensorflow(keras_file: str | Path, version_dir: str | Path, fmt: str, tta: str = "none") -> None:
    """Run `write_version` in a subprocess on Keras's TensorFlow backend. Keras's own routes on the other
    backends differ per format (its PyTorch SavedModel exporter needs torch_xla, its LiteRT exporter has
    no JAX route and needs litert-torch on PyTorch, its ONNX exporter needs jax2onnx on JAX and fixes the
    batch size on PyTorch); one writer for all backends gives the same graph whoever trained the model."""
    if not has_tensorflow():
        raise ModelError(f"{fmt} export needs TensorFlow installed (pip install tensorflow); --format keras works without it")
    package_root = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
    }
    code = (
        "import sys\nfrom keras_cifar.core.errors import ModelError\nfrom keras_cifar.tools.export import write_version\n"
        "try: write_version(*sys.argv[1:])\n"
        "except ModelError as e:\n    print(e, file=sys.stderr)\n    sys.exit(2)\n"
    )
    args = [sys.executable, "-c", code, str(keras_file), str(version_dir), fmt, tta]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    if done.returncode == 2:  # an ModelError: its message says it all
        raise ModelError(last)
    if done.returncode:
        raise ModelError(f"{fmt} export under the TensorFlow backend failed: {last}")
