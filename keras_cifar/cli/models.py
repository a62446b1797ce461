"""The commands that use a trained model: ``keras-cifar export|predict|evaluate|serve`` (added to the group
in cli/__init__.py). Like every command, each checks its input before Keras starts."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from keras_cifar.cli import options
from keras_cifar.core import backend
from keras_cifar.core.console import count, say
from keras_cifar.core.errors import DataError
from keras_cifar.data import sources as data_lib
from keras_cifar.training.runs import RunFolder

FORMAT_NAMES = {"saved_model": "SavedModel", "keras": ".keras model", "onnx": "ONNX model", "litert": "LiteRT model"}
TTA_VIEWS_HELP = (
    "flip: the mean of the logits of each image and its mirror (2 forward passes an image); flip_translate: "
    "airbench's, those two and both moved one pixel up-left and down-right (6 passes); none: the image alone."
)
TTA_HELP = (
    f"Test-time augmentation. {TTA_VIEWS_HELP} An export made with --tta has it inside and keeps it.  "
    "[default: the model's own: an export's, a run folder's eval.tta (its config.yaml), else none]"
)


@click.command("export")
@click.argument("run_dir", type=click.Path(exists=True))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Export folder; each export adds the next version OUT/<n>/.  [default: RUN_DIR/export]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["saved_model", "keras", "onnx", "litert"]),
    default="saved_model",
    show_default=True,
    help="saved_model: TensorFlow SavedModel for TF Serving or any TF runtime. keras: an inference-only "
    ".keras file (no optimizer state). onnx: model.onnx for ONNX Runtime (the onnx extra). litert: "
    "model.tflite for the LiteRT interpreter (phones, microcontrollers).",
)
@options.tta(
    "Test-time augmentation inside the exported model, in every format: its logits are the weighted mean "
    f"over each image's views. {TTA_VIEWS_HELP} Recorded in tta.txt beside labels.txt, so that predict, "
    "evaluate and serve do not apply it again.  [default: the run's eval.tta (its config.yaml), else none]"
)
def export_cmd(run_dir: str, out: str | None, fmt: str, tta: str | None) -> None:
    """Export a trained model: SavedModel, .keras, ONNX or LiteRT.

    RUN_DIR is a run folder or a .keras file.
    Writes OUT/<version>/ (saved_model.pb + variables/, or model.keras, model.onnx, model.tflite) and
    labels.txt, the layout TensorFlow Serving watches. The exported model has normalization inside and
    no augmentation. Its SavedModel signatures return `probabilities` and `logits` for images
    [N, 32, 32, 3] with pixel values 0..255: `serving_default` (float32), `serve_uint8` (uint8);
    `class_names` returns the class names. The ONNX and LiteRT files take float32 `images` and return
    `logits` and `probabilities`. With test-time augmentation (--tta, by default the run's eval.tta)
    every signature and file computes it.

    Models trained on any backend export: all but .keras are written by Keras's TensorFlow backend (in a
    subprocess when the current backend is JAX or PyTorch), so TensorFlow must be installed. Exit code 2
    when RUN_DIR holds no trained model or the format's extra is not installed. Example:

        keras-cifar export runs/baseline/baseline/seed0 --out models/cifar
    """
    from keras_cifar.tools import export, serving

    export.check_format(fmt)
    mode = serving.resolve_tta(export.exportable(run_dir), tta)[0]
    backend.start()
    version_dir = export.export(run_dir, out, fmt, mode)
    say(f"exported {FORMAT_NAMES[fmt]} to {version_dir}" + (f" (test-time augmentation: {mode})" if mode != "none" else ""))


IMAGES_WANTED = "give PNG, JPEG, BMP, GIF or WebP files or folders"


@click.command("predict")
@click.argument("model", type=click.Path(exists=True))
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", "-k", default=3, show_default=True, type=click.IntRange(1, 10), help="Classes shown per image.")
@options.tta(TTA_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: predictions, errors and the TTA used.")
def predict_cmd(model: str, images: tuple[str, ...], top_k: int, tta: str | None, as_json: bool) -> None:
    """Classify image files with a trained model.

    MODEL is an export folder (any format), a .keras, .onnx or .tflite file, or a run folder.
    IMAGES are PNG/JPEG files of any size (centre-cropped to a square, resized to 32x32 RGB) or folders,
    searched recursively for image files. A file that cannot be read is reported by name and skipped.
    Exit code: 0 if every file was predicted, 1 if any failed, 2 for a MODEL that cannot be loaded or
    no readable image at all (both found before Keras starts). Example:

        keras-cifar predict models/cifar photos/ cat.png
    """
    import json

    from keras_cifar.tools import serving

    files = serving.image_files(images)
    if not files:
        raise DataError(f"no image files in {', '.join(images)}; {IMAGES_WANTED}")
    serving.loadable(model)
    serving.resolve_tta(model, tta)
    pixels, readable, unreadable = serving.read_images(files)
    if not readable:
        (file, why), *others = unreadable
        also = f" and {count(len(others), 'other file')}" if others else ""
        raise DataError(f"{file}{also}: {why}; {IMAGES_WANTED}")
    backend.start()
    classifier = serving.load_classifier(model, tta)
    results = serving.predict(classifier, pixels, readable, top_k)
    errors = [{"file": str(f), "error": why} for f, why in unreadable]
    if as_json:
        answer = {"model": classifier.source, "tta": classifier.tta, "predictions": results, "errors": errors}
        say(json.dumps(answer, indent=2))
    elif results:
        say(serving.prediction_table(results))
    for e in errors:
        say(f"error: {e['file']}: {e['error']}", err=True)
    if errors:
        sys.exit(1)


@click.command("evaluate")
@click.argument("model", type=click.Path(exists=True))
@options.data(data_lib.source_help("the data the run was trained on (its config.yaml), else $KERAS_CIFAR_DATA, else TFDS"))
@click.option(
    "--eval-subset",
    type=click.IntRange(min=1),
    help="Evaluate N class-balanced images of the test split (as data.eval_subset in a recipe).",
)
@click.option(
    "--figure",
    type=click.Path(dir_okay=False),
    help="Where to save the confusion-matrix figure.  [default: confusion_matrix.png in the model's folder]",
)
@options.tta(TTA_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers and the confusion matrix as JSON.")
def evaluate_cmd(
    model: str, data_source: str | None, eval_subset: int | None, figure: str | None, tta: str | None, as_json: bool
) -> None:
    """Test-split accuracy and cross-entropy of a trained model.

    MODEL is an export folder (any format), a .keras, .onnx or .tflite file, or a run folder.
    The test split is the project's: the fixed half of the official test set that `run` reports on.
    The loss is the cross-entropy of the model's softmax whatever loss it was trained with. Under
    test-time augmentation (--tta; a run folder's own eval.tta by default) the scores are the
    augmentation's, with the model's plain scores beside them (as `run` records both). Example:

        keras-cifar evaluate models/cifar --data cifar10-jpeg.tar.gz
    """
    import json

    from keras_cifar.data.tta import TTA_VIEWS
    from keras_cifar.study import plots
    from keras_cifar.tools import serving

    kind, where = serving.loadable(model)
    serving.resolve_tta(model, tta)
    folder = where if kind == "saved_model" else where.parent  # the run folder, the .keras file's, or the export's
    cifar = _test_data(data_source, folder)
    figure = figure or str(folder / "confusion_matrix.png")
    backend.start()
    classifier = serving.load_classifier(model, tta)
    x, y = data_lib.split(cifar, eval_subset=eval_subset).test
    result = serving.evaluate(classifier, x, y)
    under = f", TTA {classifier.tta}" if classifier.tta != "none" else ""
    title = f"{model}\ntest accuracy {result['accuracy']:.2%} ({result['images']} images{under})"
    plots.confusion(figure, result["confusion"], classifier.class_names, title)
    if as_json:
        say(
            json.dumps(
                {
                    "model": classifier.source,
                    "data": cifar.source,
                    **result,
                    "confusion": result["confusion"].tolist(),
                    "figure": figure,
                }
            )
        )
        return
    lines = [f"model: {classifier.source}", f"data: {cifar.source}, test split, {result['images']} images"]
    if classifier.tta != "none":
        passes = len(TTA_VIEWS[classifier.tta])
        inside = ", inside the exported model" if classifier.tta_inside else ""
        lines.append(f"test-time augmentation: {classifier.tta} ({passes} forward passes an image{inside})")
    lines.append(f"accuracy {result['accuracy']:.2%}  cross-entropy {result['cross_entropy']:.4f}")
    if "plain_accuracy" in result:
        plain = f"accuracy {result['plain_accuracy']:.2%}  cross-entropy {result['plain_cross_entropy']:.4f}"
        lines.append(f"without test-time augmentation: {plain}")
    say("\n".join([*lines, f"confusion matrix: {figure}"]))


@click.command("serve")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--name", help="The model's name in the URLs (/v1/models/NAME).  [default: MODEL_DIR's folder name]")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 listens on every interface.")
def serve_cmd(model_dir: str, name: str | None, port: int, host: str) -> None:
    """Serve an export folder over TensorFlow Serving's REST API.

    MODEL_DIR is an export folder (MODEL_DIR/<version>/ as `export` writes it, any format). Its latest
    version is served, and a newer one is loaded as soon as `export` writes it, without a restart. Any TF
    Serving or KServe V1 client works unchanged: GET /v1/models/NAME (status) and /v1/models/NAME/metadata,
    POST /v1/models/NAME[/versions/N]:predict with {"instances": ...} or {"inputs": ...} (images
    [N, 32, 32, 3], pixel values 0..255; signature_name serving_default or serve_uint8); and POST
    /v1/models/NAME:classify_image?top_k=3 with a PNG or JPEG body. Bad input is a 400 with a JSON error.
    Needs the serve extra. Stop it with Ctrl-C. Example:

    \b
        keras-cifar serve models/cifar
        curl -s -X POST --data-binary @cat.png localhost:8501/v1/models/cifar:classify_image
    """
    from keras_cifar.core import extras
    from keras_cifar.tools import serving

    extras.require("serve", "fastapi", "uvicorn", purpose="keras-cifar serve")
    serving.loadable(model_dir)
    backend.start()
    from keras_cifar.tools import server

    server.serve(model_dir, name or Path(model_dir).resolve().name, host, port)


def _test_data(data_source: str | None, folder: Path) -> data_lib.Cifar:
    """CIFAR-10 from --data, else from the data_source the run in `folder` recorded (its config.yaml), else
    from KERAS_CIFAR_DATA or TFDS; a recorded source that cannot be read says where it came from."""
    recorded = None if data_source else RunFolder(folder).read_config()[1]
    try:
        return data_lib.load(data_source or recorded)
    except DataError as e:
        if not recorded:
            raise
        raise DataError(f"{e} (the data {folder}/config.yaml records; pass --data PATH)") from None
