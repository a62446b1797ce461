"""Load any saved form of a trained classifier, predict image files, evaluate (export.py writes the forms).

A MODEL is one of: a run folder (holding ``model.keras``), a ``.keras``, ``.onnx`` or ``.tflite`` file,
or an export folder (``DIR/<version>/`` as ``export`` writes it, or ``DIR`` itself, whose highest version
holding a model is used: an empty or unfinished version folder is passed over). ONNX models run in ONNX
Runtime, LiteRT models in the LiteRT interpreter (the ``onnx`` and ``litert`` extras), never in Keras.

``export`` writes ``DIR/<version>/`` atomically, the layout TensorFlow Serving polls:
``saved_model.pb`` + ``variables/`` (or ``model.keras``, ``model.onnx``, ``model.tflite`` with
``--format keras|onnx|litert``) and ``labels.txt``.
The exported model is the inference model: normalization inside, training augmentation out. It is
found by role, whatever network (networks.MODELS) the classifier holds: the classifier's layers in
order, its augmentation layer (augment.RandomCropFlip) left out. With test-time augmentation (``--tta``,
by default the run's eval.tta) the exported model is augment.with_tta around it, in every format, and
``tta.txt`` beside ``labels.txt`` names the mode, so that loading the export never applies it twice.
``predict`` and ``evaluate`` apply a mode to a model without one around its runtime, in numpy (tta.view).
SavedModel signatures, all returning ``probabilities`` (softmax) and ``logits`` [N, 10]:
``serving_default`` / ``serve`` take float32 images [N, 32, 32, 3] with pixel values 0..255,
``serve_uint8`` takes uint8 images; ``class_names`` takes nothing and returns the 10 names. The ONNX
and LiteRT files have one signature, float32 ``images`` in and ``logits`` and ``probabilities`` out,
written by Keras's own exporters (``model.export``: tf2onnx, TensorFlow's LiteRT converter).

A SavedModel, ONNX or LiteRT file is always written by Keras's TensorFlow backend, so it holds the same
graph whichever backend trained the model. The ``.keras`` file is backend-agnostic: under JAX or PyTorch,
export loads it in a subprocess with ``KERAS_BACKEND=tensorflow`` (TensorFlow must be installed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from keras_cifar.core import extras
from keras_cifar.core.errors import ModelError
from keras_cifar.data.formats import rgb
from keras_cifar.data.sources import CLASS_NAMES, IMAGE_SUFFIXES, has_tensorflow
from keras_cifar.data.tta import TTA_VIEWS, view
from keras_cifar.training.runs import MODEL_FILE, RunFolder

if TYPE_CHECKING:  # Keras is imported when a model is loaded
    import keras

EXPORT_FORMATS = ("saved_model", "keras", "onnx", "litert")
ImageFile = Path | str | IO[bytes]  # an image file by name, or an open one (serve's request body)
# What marks a folder as holding a model of each format (a SavedModel is the folder itself)
MODEL_FILES = {"saved_model": "saved_model.pb", "keras": MODEL_FILE, "onnx": "model.onnx", "litert": "model.tflite"}
SUFFIXES = {".keras": "keras", ".onnx": "onnx", ".tflite": "litert"}
# The extra and modules each format needs: to be written by export, and to be loaded
WRITERS = {"onnx": ("onnx", ("tf2onnx", "onnx"))}
RUNTIMES = {"onnx": ("onnx", ("onnxruntime",)), "litert": ("litert", ("ai_edge_litert",))}
LABELS_FILE = "labels.txt"
TTA_FILE = "tta.txt"  # in an export with test-time augmentation (export --tta): the mode its model computes
BATCH = 256
IMAGE_SIZE = 32
INFERENCE_NAME = "inference"  # the exported Keras model's name


# ------------------------------------------------------------------------------------ loading models


def load_keras(path: Path | str) -> keras.Model:
    """A saved keras-cifar model, loaded with ``safe_mode=True`` (no code from the file is run)."""
    from keras_cifar.nn import custom_objects

    try:
        return custom_objects.load(path, compile=False)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ModelError(f"{path}: cannot load the Keras model ({type(e).__name__}: {_first_line(e)})") from None


def inference_model(model: keras.Model) -> keras.Model:
    """float32 images (0..255) -> normalize -> the network's logits: the trained classifier (a chain,
    models.build_classifier) without its augmentation layer, sharing its weights, whatever the
    network. The layers are told apart by class, not by name. An inference model, with
    test-time augmentation or without (an export), passes through unchanged."""
    import keras

    from keras_cifar.data.augment import Normalize, RandomCropFlip, WeightedMean

    if model.name == INFERENCE_NAME or any(isinstance(layer, WeightedMean) for layer in model.layers):
        return model
    layers = [layer for layer in model.layers if not isinstance(layer, (keras.layers.InputLayer, RandomCropFlip))]
    if not layers or not isinstance(layers[0], Normalize):
        raise ModelError(f"model {model.name!r} is not a keras-cifar classifier (no Normalize layer after its input)")
    x = images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), dtype="float32", name="images")
    for layer in layers:
        x = layer(x)
    return keras.Model(images, x, name=INFERENCE_NAME)


def model_path(path: str | Path) -> tuple[str, Path]:
    """(kind, file or folder) for a MODEL path: ("saved_model", version dir) or (kind, its file), kind
    one of EXPORT_FORMATS."""
    path = Path(path)
    if path.is_file() and path.suffix in SUFFIXES:
        return SUFFIXES[path.suffix], path
    if path.is_dir():
        found = _model_in(path)
        versions = sorted((int(p.name), p) for p in path.iterdir() if p.is_dir() and p.name.isdigit())
        for _, version in reversed(versions):  # the highest that holds a model
            found = found or _model_in(version)
        if found:
            return found
    status = _run_status(path)
    raise ModelError(f"{path}: not a run folder, model file or export folder (found no model.keras or saved_model.pb{status})")


def _model_in(folder: Path) -> tuple[str, Path] | None:
    for kind, name in MODEL_FILES.items():
        if (folder / name).is_file():
            return kind, folder if kind == "saved_model" else folder / name
    return None


def loadable(path: str | Path) -> tuple[str, Path]:
    """model_path(path), once the runtime its format needs is known to be installed (before Keras starts)."""
    kind, where = model_path(path)
    if kind in RUNTIMES:
        extra, modules = RUNTIMES[kind]
        extras.require(extra, *modules, purpose=f"running a {kind} model ({where})")
    return kind, where


def _run_status(path: Path) -> str:
    metrics = RunFolder(path).read_metrics()
    return f"; the run's status is {metrics.status}" if metrics else ""


def resolve_tta(path: str | Path, requested: str | None = None) -> tuple[str, bool]:
    """(mode, inside): the test-time augmentation (a key of tta.TTA_VIEWS) of MODEL `path`: `requested`
    (--tta), else the mode an export's model computes (export --tta), else a run folder's eval.tta (the
    config.yaml beside the model), else none; `inside`: the model computes it itself. Any other mode
    than the one inside is a ModelError: a model's test-time augmentation cannot be taken out."""
    kind, where = model_path(path)
    folder = where if kind == "saved_model" else where.parent
    file = folder / TTA_FILE
    inside = file.read_text().strip() if file.is_file() else "none"
    if inside not in TTA_VIEWS:
        raise ModelError(f"{file}: names no test-time augmentation ({inside!r}); use one of {', '.join(TTA_VIEWS)}")
    config = RunFolder(folder).read_config()[2]
    mode = requested or (inside if inside != "none" else config.eval.tta if config else "none")
    if inside != "none" and mode != inside:
        raise ModelError(
            f"{where}: its model computes test-time augmentation {inside} (export --tta {inside}), which "
            f"cannot be taken out for --tta {mode}; use the run folder, or an export with --tta {mode}"
        )
    return mode, inside != "none"


@dataclass
class Classifier:
    """A loaded MODEL of any kind: ``logits(images)`` on uint8 or float images [N, 32, 32, 3] under the
    test-time augmentation ``tta``: the weighted mean of ``logits_fn``'s logits on each view of
    tta.TTA_VIEWS[tta], unless ``tta_inside`` (an export whose model computes it)."""

    logits_fn: Callable[[np.ndarray], np.ndarray]
    class_names: tuple[str, ...]
    source: str
    tta: str = "none"
    tta_inside: bool = False

    def logits(self, images: Any) -> np.ndarray:
        return self.scores(images)[0]

    def scores(self, images: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits under ``tta``, the logits of the images alone: the first view's; None where the model
        computes its test-time augmentation inside)."""
        images = np.asarray(images, np.float32)
        views = TTA_VIEWS["none" if self.tta_inside else self.tta]
        logits = [self._batched(view(images, mirrored, shift)) for _, mirrored, shift in views]
        mean = np.sum([w * x for (w, _, _), x in zip(views, logits)], axis=0)
        return mean, None if self.tta_inside else logits[0]

    def _batched(self, images: np.ndarray) -> np.ndarray:
        if not len(images):
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate([self.logits_fn(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])


def load_classifier(path: str | Path, tta: str | None = None) -> Classifier:
    """Load a MODEL (run folder, model file or export folder) for prediction, each format in its own
    runtime, under test-time augmentation `tta` (resolve_tta: by default the model's own)."""
    kind, where = loadable(path)
    mode, inside = resolve_tta(path, tta)
    if kind != "saved_model":
        labels = where.parent / LABELS_FILE
        names = tuple(_read_labels(labels)) if labels.is_file() else CLASS_NAMES
        return Classifier(_RUNTIMES[kind](where), names, str(where), mode, inside)
    if not has_tensorflow():
        raise ModelError(f"{where}: reading a SavedModel needs TensorFlow (pip install tensorflow)")
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(where))
        names = tuple(n.decode() for n in loaded.class_names()["class_names"].numpy())
    except (OSError, ValueError, AttributeError, tf.errors.OpError) as e:
        raise ModelError(
            f"{where}: not a SavedModel written by keras-cifar export ({type(e).__name__}: {_first_line(e)})"
        ) from None
    return Classifier(lambda x: loaded.serve(x)["logits"].numpy(), names, str(where), mode, inside)


def _keras_logits(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    model = inference_model(load_keras(path))
    return lambda x: np.asarray(model.predict_on_batch(x))


def _onnx_logits(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own classes, not exported under one name
        raise ModelError(f"{path}: ONNX Runtime cannot load it ({type(e).__name__}: {_first_line(e)})") from None
    return lambda x: session.run(["logits"], {"images": x})[0]


def _litert_logits(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The LiteRT interpreter's signature runner; an interpreter runs one call at a time (a lock)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        runner = Interpreter(model_path=str(path)).get_signature_runner()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: the LiteRT interpreter cannot load it ({type(e).__name__}: {_first_line(e)})") from None
    lock = threading.Lock()

    def logits(x: np.ndarray) -> np.ndarray:
        with lock:
            return runner(images=x)["logits"]

    return logits


_RUNTIMES = {"keras": _keras_logits, "onnx": _onnx_logits, "litert": _litert_logits}


# ------------------------------------------------------------------------------------------ predict


def image_files(paths: Iterable[Path | str]) -> list[Path]:
    """Files to predict: named files as given, folders searched recursively for image files."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        else:
            files.append(p)
    return files


def read_image(path: ImageFile) -> np.ndarray:
    """An image file of any size as uint8 RGB [32, 32, 3] (read as the image-tree loader reads one,
    formats.rgb), centre square crop, then resize."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = rgb(ImageOps.exif_transpose(im))
    side = min(im.size)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    im = im.crop((left, top, left + side, top + side))
    if side != IMAGE_SIZE:
        im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    return np.asarray(im, np.uint8)


def read_images(files: Sequence[ImageFile]) -> tuple[np.ndarray, list[ImageFile], list[tuple[ImageFile, str]]]:
    """(images [N, 32, 32, 3] uint8, files read, [(file, error message)] for the rest)."""
    from PIL import Image

    images: list[np.ndarray] = []
    ok: list[ImageFile] = []
    errors: list[tuple[ImageFile, str]] = []
    for f in files:
        try:
            images.append(read_image(f))
            ok.append(f)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            errors.append((f, f"not a readable image ({type(e).__name__}: {_first_line(e)})"))
    stacked = np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    return stacked, ok, errors


def predict(classifier: Classifier, images: np.ndarray, files: Sequence[object], top_k: int = 3) -> list[dict[str, Any]]:
    """[{"file", "top": [{"class", "probability"}]}] for `images` as read_images read them from `files`."""
    probs = probabilities(classifier.logits(images))
    top_k = min(top_k, probs.shape[1])
    results = []
    for f, p in zip(files, probs):
        best = np.argsort(-p)[:top_k]
        results.append(
            {"file": str(f), "top": [{"class": classifier.class_names[i], "probability": float(p[i])} for i in best]}
        )
    return results


def prediction_table(results: list[dict[str, Any]]) -> str:
    """Aligned text: one row per image, its top-k classes with probabilities."""
    if not results:
        return ""
    k = len(results[0]["top"])
    width = max(len("image"), *(len(r["file"]) for r in results))
    cols = [f"{'image':<{width}}"] + [f"{f'top-{i + 1}':<17}" for i in range(k)]
    lines = ["  ".join(cols).rstrip()]
    for r in results:
        cells = [f"{t['class']:<10} {t['probability']:>6.1%}" for t in r["top"]]
        lines.append("  ".join([f"{r['file']:<{width}}"] + cells))
    return "\n".join(lines)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """The softmax of `logits` [N, classes]."""
    return np.exp(_log_softmax(logits))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# ----------------------------------------------------------------------------------------- evaluate


def evaluate(classifier: Classifier, images: np.ndarray, labels: Any) -> dict[str, Any]:
    """Accuracy, mean cross-entropy and the confusion matrix (rows: true class, columns: predicted) under
    the classifier's test-time augmentation, named by "tta"; where it applies one itself, also the
    model's plain_accuracy and plain_cross_entropy without it (the study's plain scores)."""
    logits, plain = classifier.scores(images)
    labels = np.asarray(labels)
    result = {"tta": classifier.tta, **_scores(logits, labels, len(classifier.class_names))}
    if classifier.tta != "none" and plain is not None:
        without = _scores(plain, labels, len(classifier.class_names))
        result.update(plain_accuracy=without["accuracy"], plain_cross_entropy=without["cross_entropy"])
    return result


def _scores(logits: np.ndarray, labels: np.ndarray, n: int) -> dict[str, Any]:
    log_probs = _log_softmax(logits.astype(np.float64))
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (labels, logits.argmax(axis=-1)), 1)
    return {
        "accuracy": float(np.trace(confusion) / len(labels)),
        "cross_entropy": float(-log_probs[np.arange(len(labels)), labels].mean()),
        "images": len(labels),
        "confusion": confusion,
    }


def _read_labels(path: Path | str) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"
