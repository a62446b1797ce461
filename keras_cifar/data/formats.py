"""Local copies of CIFAR-10, in a folder or a .tar(.gz): the FORMATS registry. A format is a function
``(path, files) -> (x_train, y_train, x_test, y_test)`` that returns None when the file names are not
its layout (`files` maps each name inside the copy to a function returning its bytes). The first
format, in the order registered, that recognises a copy reads it; adding a format is one decorated
function here. Images are uint8 [N, 32, 32, 3], labels int32 [N]; data.load puts them in its one
order (class by class, the official order within a class), so a format returns them in the
official order, or class by class in it.

An image tree is labelled by the names of its class folders, which must be CIFAR-10's (CLASS_NAMES)
or one of CLASS_ALIASES; every image file, there and in ``predict``, is read through ``rgb``."""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from keras_cifar.core.errors import DataError
from keras_cifar.core.registry import Registry

if TYPE_CHECKING:
    from PIL.Image import Image

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # per channel (RGB, in [0, 1]) over the training set
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CLASS_ALIASES = {"plane": "airplane", "aeroplane": "airplane", "car": "automobile"}  # other common folder names
BACKGROUND = (255, 255, 255)  # what transparent pixels are composited over: white, as browsers show them

FORMATS = Registry("local CIFAR-10 format")

Files = dict[str, Callable[[], bytes]]  # each name inside a copy, and what reads its bytes
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


def _by_base(files: Iterable[str]) -> dict[str, str]:
    return {Path(n).name: n for n in files}


def _batches(path: Path, files: Files, kind: str, suffix: str = "") -> list[bytes] | None:
    """The contents of an official copy's six batch files (data_batch_1..5, test_batch), or None when
    `files` has no data_batch_1; a DataError names the files a copy lacks."""
    by_base = _by_base(files)
    names = [f"data_batch_{i}{suffix}" for i in range(1, 6)] + [f"test_batch{suffix}"]
    if names[0] not in by_base:
        return None
    missing = [n for n in names if n not in by_base]
    if missing:
        raise DataError(f"{path}: an incomplete CIFAR-10 {kind} copy: {', '.join(missing)} missing")
    return [files[by_base[n]]() for n in names]


@FORMATS.add("binary", "the official binary version, cifar-10-binary.tar.gz or its folder")
def binary(path: Path, files: Files) -> Arrays | None:
    raw = _batches(path, files, "binary", ".bin")
    return None if raw is None else _concat([_read_binary(b) for b in raw[:5]], [_read_binary(raw[5])])


@FORMATS.add("python", "the official python version, cifar-10-python.tar.gz or its folder (numpy arrays only are unpickled)")
def python(path: Path, files: Files) -> Arrays | None:
    raw = _batches(path, files, "python")
    return None if raw is None else _concat([_read_python(b) for b in raw[:5]], [_read_python(raw[5])])


@FORMATS.add(
    "images",
    f"image files in train/<class>/* and test/<class>/*, <class> one of CIFAR-10's class names (or {', '.join(CLASS_ALIASES)})",
)
def images(path: Path, files: Files) -> Arrays | None:
    entries: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for name in files:
        parts = Path(name).parts
        if len(parts) >= 3 and parts[-3] in entries and name.lower().endswith(IMAGE_SUFFIXES):
            entries[parts[-3]].append((parts[-2], name))
    if not entries["train"] or not entries["test"]:
        return None
    return _read_image_tree(path, files, entries)


def _concat(train: list[tuple[np.ndarray, np.ndarray]], test: list[tuple[np.ndarray, np.ndarray]]) -> Arrays:
    x_train, y_train = (np.concatenate(a) for a in zip(*train))
    x_test, y_test = (np.concatenate(a) for a in zip(*test))
    return x_train, y_train, x_test, y_test


def _read_binary(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    records = np.frombuffer(raw, np.uint8)
    if records.size % 3073:
        raise DataError("binary batch is not a whole number of 3073-byte records (truncated file?)")
    records = records.reshape(-1, 3073)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), records[:, 0].astype(np.int32)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain dicts, lists and numpy arrays only: nothing else in a CIFAR batch is expected."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: not a CIFAR-10 array")


def _read_python(raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError("python batch has no b'data' / b'labels' entries")
    images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(batch[b"labels"], np.int32)


def _read_image_tree(path: Path, files: Files, entries: dict[str, list[tuple[str, str]]]) -> Arrays:
    """`entries`: {split: [(class folder, name)]}. Labels come from the folders' names; each class is
    read in file-name order (numbers in numeric order: 2.png before 10.png)."""
    from PIL import Image, UnidentifiedImageError

    labels = {folder: _label(folder) for folder in {f for split in entries.values() for f, _ in split}}
    unknown = sorted(folder for folder, label in labels.items() if label is None)
    if unknown:
        raise DataError(
            f"{path}: class folders {', '.join(unknown)} are not CIFAR-10 class names; name them "
            f"{', '.join(CLASS_NAMES)} (or {', '.join(f'{a} for {n}' for a, n in CLASS_ALIASES.items())})"
        )
    out: list[np.ndarray] = []
    for split in ("train", "test"):
        images = []
        ordered = sorted(entries[split], key=lambda e: (labels[e[0]], _natural(e[1])))
        for _, name in ordered:
            try:
                with Image.open(io.BytesIO(files[name]())) as im:
                    arr = np.asarray(rgb(im), np.uint8)
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"{path}: {name}: not a readable image ({e})") from None
            if arr.shape != (32, 32, 3):
                raise DataError(f"{path}: {name}: expected a 32x32 image, got {arr.shape[1]}x{arr.shape[0]}")
            images.append(arr)
        out += [np.stack(images), np.asarray([labels[folder] for folder, _ in ordered], np.int32)]
    return cast(Arrays, tuple(out))  # two splits of (images, labels)


def _label(folder: str) -> int | None:
    """The label a class folder's name gives (CLASS_NAMES or CLASS_ALIASES, any case), or None."""
    name = CLASS_ALIASES.get(folder.lower(), folder.lower())
    return CLASS_NAMES.index(name) if name in CLASS_NAMES else None


def _natural(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def rgb(image: Image) -> Image:
    """A PIL image as 8-bit RGB, as both the image-tree loader and ``predict`` read images: 16-bit
    values scaled to 8 bits (PIL's ``convert`` clips them at 255), transparency composited over
    BACKGROUND (``convert`` drops it, showing whatever colour the transparent pixels hold)."""
    from PIL import Image

    if image.mode.startswith("I"):  # 16-bit greyscale PNGs open as I;16 (or I)
        image = Image.fromarray(np.round(np.asarray(image, np.float64) / 257).clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba)
    return image.convert("RGB")
