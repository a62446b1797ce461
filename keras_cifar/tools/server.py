"""``keras-cifar serve``: an export folder behind TensorFlow Serving's REST API, so that a TF Serving (or
KServe V1) client works against it unchanged.

- ``GET /v1/models/NAME[/versions/N]``: the version status; ``.../metadata``: the signatures;
- ``POST /v1/models/NAME[/versions/N]:predict``: ``{"instances": ...}`` (row format) answered with
  ``{"predictions": ...}``, or ``{"inputs": ...}`` (columnar) with ``{"outputs": ...}``, for the
  ``signature_name`` ``serving_default`` (float32 pixels 0..255, also ``serve``) or ``serve_uint8``;
- ``POST /v1/models/NAME[/versions/N]:classify_image``: a PNG or JPEG body, answered with its top-k
  classes (``?top_k=``), the image read as ``predict`` reads a file.

As TF Serving's default policy does, the latest version is served: a poller looks at the folder every
second and loads a newer version once ``serving.model_path`` finds a model in it (``export`` renames a
whole version folder into place, so a half-written one is never seen); one that fails to load is
reported and the current one kept. Bad input is a 400 with ``{"error": ...}`` (TF Serving's form); a
body is at most MAX_BODY bytes and a request at most MAX_IMAGES images, and uvicorn answers 503 beyond
MAX_CONNECTIONS concurrent connections, which bounds the memory that requests can take.
"""

import io
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from keras_cifar.core.errors import ConfigError, ModelError
from keras_cifar.tools import serving

MAX_BODY = 16 * 1024 * 1024  # bytes: 1,024 float images written as JSON take about 12 MiB
MAX_IMAGES = 1024
MAX_CONNECTIONS = 64
POLL_SECONDS = 1.0
SIGNATURES = {"serving_default": "float32", "serve": "float32", "serve_uint8": "uint8"}
TF_DTYPES = {"float32": "DT_FLOAT", "uint8": "DT_UINT8"}  # TensorFlow's names in a signature_def
OUTPUTS = ("logits", "probabilities")
SHAPE = (serving.IMAGE_SIZE, serving.IMAGE_SIZE, 3)


class BadRequest(Exception):
    """A request the server refuses: its HTTP status and one-line message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------------- the versions


def version_of(folder: Path) -> tuple[int, Path] | None:
    """(version, where) of the highest version folder of `folder` holding a model, or None."""
    try:
        kind, where = serving.model_path(folder)
    except ModelError:
        return None
    version_dir = where if kind == "saved_model" else where.parent
    return (int(version_dir.name), version_dir) if version_dir.name.isdigit() else None


class Versions:
    """The served version of an export folder: the latest one that loaded, as (version, classifier),
    replaced whole so that a request never sees one's number with another's model."""

    def __init__(self, folder: Path, load: Callable[[Path], serving.Classifier] = serving.load_classifier) -> None:
        self.folder, self.load = folder, load
        self.tried = 0  # the newest version tried: one that failed to load is not tried again
        self.served: tuple[int, serving.Classifier] | None = None
        self.poll()
        if self.served is None:
            raise ModelError(f"{folder}: no version folder holds a model that loads (an export folder: DIR/<version>/)")

    def poll(self) -> None:
        """Load the latest version if it is newer than any tried; a failed load keeps the one served."""
        found = version_of(self.folder)
        if found is None or found[0] <= self.tried:
            return
        (version, where), self.tried = found, found[0]
        try:
            self.served = version, self.load(where)
        except ModelError as e:
            still = f"still serving version {self.served[0]}" if self.served else "serving none"
            print(f"version {version} not loaded, {still}: {e}", file=sys.stderr, flush=True)
            return
        print(f"serving version {version} ({where})", flush=True)

    def watch(self) -> None:
        """Poll the folder every POLL_SECONDS, in a daemon thread."""

        def loop() -> None:
            while True:
                time.sleep(POLL_SECONDS)
                self.poll()

        threading.Thread(target=loop, daemon=True, name="versions").start()

    def get(self, name: str, model: str, version: int | None) -> tuple[int, serving.Classifier]:
        """(version, classifier) that a request for `model` (at `version`, else the latest) goes to, or a 404."""
        served = self.served
        if model != name or served is None or version not in (None, served[0]):
            wanted = f"Specific({model}, {version})" if version is not None else f"Latest({model})"
            raise BadRequest(f"Servable not found for request: {wanted}", 404)
        return served


# ------------------------------------------------------------------------------ TF Serving's JSON


def status(version: int) -> dict[str, Any]:
    """GET /v1/models/NAME: TF Serving's model status."""
    return {
        "model_version_status": [
            {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }


def metadata(name: str, version: int) -> dict[str, Any]:
    """GET /v1/models/NAME/metadata: TF Serving's signature_def map of the served signatures."""

    def tensor(dtype: str, *dims: int) -> dict[str, Any]:
        return {"dtype": dtype, "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}}

    outputs = {key: {**tensor("DT_FLOAT", -1, 10), "name": key} for key in OUTPUTS}
    signatures = {
        key: {
            "inputs": {"images": {**tensor(TF_DTYPES[dtype], -1, *SHAPE), "name": "images"}},
            "outputs": outputs,
            "method_name": "tensorflow/serving/predict",
        }
        for key, dtype in SIGNATURES.items()
    }
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": signatures}},
    }


def predict(classifier: serving.Classifier, body: bytes) -> dict[str, Any]:
    """POST :predict: the row ("instances") or columnar ("inputs") request, answered in the same form."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not JSON ({e})") from None
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise BadRequest('the body must be a JSON object with "instances" or "inputs" (TF Serving\'s predict request)')
    signature = request.get("signature_name", "serving_default")
    if signature not in SIGNATURES:
        raise BadRequest(f"signature_name {signature!r} is not served; use one of {', '.join(SIGNATURES)}")
    rows = "instances" in request
    value = request["instances"] if rows else request["inputs"]
    if rows and isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        value = [_named(v) for v in value]
    elif not rows and isinstance(value, dict):
        value = _named(value)
    logits = classifier.logits(images(value, SIGNATURES[signature]))
    outputs = {"logits": logits, "probabilities": serving.probabilities(logits)}
    if rows:
        return {"predictions": [{key: outputs[key][i].tolist() for key in OUTPUTS} for i in range(len(logits))]}
    return {"outputs": {key: outputs[key].tolist() for key in OUTPUTS}}


def _named(value: dict[str, Any]) -> Any:
    if set(value) != {"images"}:
        raise BadRequest(f"the one input is named 'images'; got {', '.join(map(repr, value)) or 'none'}")
    return value["images"]


def images(value: Any, dtype: str) -> np.ndarray:
    """The images [N, 32, 32, 3] of a request, checked: numbers (integers 0..255 for uint8), 1 to MAX_IMAGES."""
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nesting
        raise BadRequest(f"images must be [N, {', '.join(map(str, SHAPE))}] numbers; got ragged lists") from None
    if array.ndim != 4 or array.shape[1:] != SHAPE or not 1 <= len(array) <= MAX_IMAGES:
        raise BadRequest(
            f"images must be [N, {', '.join(map(str, SHAPE))}] with N from 1 to {MAX_IMAGES}; got shape {list(array.shape)}"
        )
    if array.dtype.kind not in "iuf":
        raise BadRequest(f"images must be numbers; got {'booleans' if array.dtype.kind == 'b' else 'strings or objects'}")
    if dtype == "uint8" and (array.dtype.kind == "f" or array.min() < 0 or array.max() > 255):
        raise BadRequest("signature serve_uint8 takes integers 0..255")
    return array.astype(np.float32)


def classify_image(classifier: serving.Classifier, body: bytes, top_k: int) -> dict[str, Any]:
    """POST :classify_image: the top-k classes of one PNG or JPEG image, as `predict --json` gives a file's."""
    if not 1 <= top_k <= len(classifier.class_names):
        raise BadRequest(f"top_k must be 1 to {len(classifier.class_names)}; got {top_k}")
    pixels, _, unreadable = serving.read_images([io.BytesIO(body)])
    if unreadable:
        raise BadRequest(f"the body is {unreadable[0][1]}; send a PNG or JPEG file")
    (result,) = serving.predict(classifier, pixels, ["body"], top_k)
    return {"top": result["top"]}


# -------------------------------------------------------------------------------------- the server


def app(versions: Versions, name: str) -> Any:
    """The FastAPI application: TF Serving's REST routes on `versions`, served as model `name`."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    api = FastAPI(title=f"keras-cifar serve {name}", docs_url=None, redoc_url=None, openapi_url=None)

    @api.exception_handler(BadRequest)
    async def refused(request: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:  # a version or top_k not a number
        where = ", ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": f"bad request ({where})"}, status_code=400)

    def routes(suffix: str) -> list[str]:
        return [f"/v1/models/{{model}}{suffix}", f"/v1/models/{{model}}/versions/{{version}}{suffix}"]

    for path in routes(""):

        @api.get(path)
        async def model_status(model: str, version: int | None = None) -> dict[str, Any]:
            return status(versions.get(name, model, version)[0])

    for path in routes("/metadata"):

        @api.get(path)
        async def model_metadata(model: str, version: int | None = None) -> dict[str, Any]:
            return metadata(name, versions.get(name, model, version)[0])

    for path in routes(":predict"):

        @api.post(path)
        async def model_predict(request: Request, model: str, version: int | None = None) -> dict[str, Any]:
            _, classifier = versions.get(name, model, version)
            return await run_in_threadpool(predict, classifier, await _body(request))

    for path in routes(":classify_image"):

        @api.post(path)
        async def model_classify(request: Request, model: str, version: int | None = None, top_k: int = 3) -> dict[str, Any]:
            served, classifier = versions.get(name, model, version)
            return {**await run_in_threadpool(classify_image, classifier, await _body(request), top_k), "model_version": served}

    return api


async def _body(request: Any) -> bytes:
    """The request's body, refused once it passes MAX_BODY bytes (whatever Content-Length says)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise BadRequest(f"the body is {int(declared)} bytes, over the limit of {MAX_BODY}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest(f"the body is over the limit of {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def serve(folder: str | Path, name: str, host: str, port: int) -> None:
    """Serve the export `folder` as model `name` on host:port (0: a free port) until interrupted."""
    import uvicorn

    versions = Versions(Path(folder))
    versions.watch()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host") from None
    sock.listen(MAX_CONNECTIONS)  # from here connections wait in the backlog until uvicorn accepts them
    config = uvicorn.Config(app(versions, name), log_level="warning", limit_concurrency=MAX_CONNECTIONS)
    print(f"serving {name} at http://{host}:{sock.getsockname()[1]}/v1/models/{name}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
