"""Local copies of CIFAR-10, in a folder or a .tar(.gz): the FORMATS registry. A format is a function
``(path, files) -> (x_train, y_train, x_test, y_test)`` that returns None when the file names are not
its layout (`files` maps each name inside the copy to a function returning its bytes). The first
format, in the order registered, that recognises a copy reads it; adding a format is one decorated
function here. Images are uint8 [N, 32, 32, 3], labels int32 [N]."""

import io
import pickle
from pathlib import Path

import numpy as np

from keras_cifar.errors import DataError
from keras_cifar.registry import Registry

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # per channel (RGB, in [0, 1]) over the training set
CIFAR_STD = (0.2470, 0.2435, 0.2616)

FORMATS = Registry("local CIFAR-10 format")


def _by_base(files):
    return {Path(n).name: n for n in files}


@FORMATS.add("binary", "the official binary version, cifar-10-binary.tar.gz or its folder")
def binary(path, files):
    by_base = _by_base(files)
    if "data_batch_1.bin" not in by_base:
        return None
    train = [_read_binary(files[by_base[f"data_batch_{i}.bin"]]()) for i in range(1, 6)]
    return _concat(train, [_read_binary(files[by_base["test_batch.bin"]]())])


@FORMATS.add("python", "the official python version, cifar-10-python.tar.gz or its folder (numpy arrays only are unpickled)")
def python(path, files):
    by_base = _by_base(files)
    if "data_batch_1" not in by_base or "test_batch" not in by_base:
        return None
    train = [_read_python(files[by_base[f"data_batch_{i}"]]()) for i in range(1, 6)]
    return _concat(train, [_read_python(files[by_base["test_batch"]]())])


@FORMATS.add("images", "image files in train/<class>/* and test/<class>/* (class = folder name)")
def images(path, files):
    entries = {"train": [], "test": []}
    for name in files:
        parts = Path(name).parts
        if len(parts) >= 3 and parts[-3] in entries and name.lower().endswith(IMAGE_SUFFIXES):
            entries[parts[-3]].append((parts[-2], name))
    if not entries["train"] or not entries["test"]:
        return None
    return _read_image_tree(path, files, entries)


def _concat(train, test):
    x_train, y_train = (np.concatenate(a) for a in zip(*train))
    x_test, y_test = (np.concatenate(a) for a in zip(*test))
    return x_train, y_train, x_test, y_test


def _read_binary(raw):
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

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: not a CIFAR-10 array")


def _read_python(raw):
    batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError("python batch has no b'data' / b'labels' entries")
    images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(batch[b"labels"], np.int32)


def _read_image_tree(path, files, entries):
    """`entries`: {split: [(class, name)]}; classes are CLASS_NAMES when the folders use those names."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted({c for c, _ in entries["train"]})
    if set(classes) <= set(CLASS_NAMES):
        classes = list(CLASS_NAMES)
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for split in ("train", "test"):
        images, labels = [], []
        for cls, name in sorted(entries[split]):
            if cls not in index:
                raise DataError(f"{path}: {name}: class '{cls}' is not among the training classes")
            try:
                with Image.open(io.BytesIO(files[name]())) as im:
                    arr = np.asarray(im.convert("RGB"), np.uint8)
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"{path}: {name}: not a readable image ({e})") from None
            if arr.shape != (32, 32, 3):
                raise DataError(f"{path}: {name}: expected a 32x32 image, got {arr.shape[1]}x{arr.shape[0]}")
            images.append(arr)
            labels.append(index[cls])
        out += [np.stack(images), np.asarray(labels, np.int32)]
    return tuple(out)
