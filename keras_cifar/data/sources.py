"""CIFAR-10 sources (local copies, TFDS, synthetic), their content-keyed cache, and the report's 10:1:1 split.

Sources (``--data``, or the ``KERAS_CIFAR_DATA`` environment variable; the TFDS download otherwise):
a local copy in any of formats.FORMATS (a folder or a ``.tar(.gz)``), a prepared TFDS data dir, or
``synthetic[:N]``. A local copy is decoded once and cached as one uint8 ``.npz`` file, so a second
run starts in seconds; the cache is keyed by every file of the copy (name, size, modification and
change times), so replacing any file makes a new one, and a cache that cannot be read is rebuilt.

Every copy of CIFAR-10 gives its images in one order: class by class (CLASS_NAMES' order), each class
in the official order (the binary and python batches' order, TFDS's ``id``; an image tree's file
names, numbers in numeric order). So ``split`` and the class-balanced subsets pick the same images
from TFDS, the official archives and image trees alike.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import pickle
import re
import socket
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar, cast
from urllib.parse import urlsplit

import numpy as np

from keras_cifar.core import backend
from keras_cifar.core.console import say
from keras_cifar.core.errors import DataError
from keras_cifar.data.formats import CLASS_NAMES, FORMATS, IMAGE_SUFFIXES, Arrays, Files  # noqa: F401  (data.CLASS_NAMES: the API)

T = TypeVar("T")
Pair = tuple[np.ndarray, np.ndarray]  # images and labels

SPLIT_SEED = 20201  # fixed: the validation/test split never depends on the training seed
EVAL_BATCH = 1000  # images per evaluation step (5,000 and 10,000 are whole multiples)
TFDS_DOWNLOAD = "tfds:cifar10"  # the source name of the TFDS download
TFDS_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"  # TFDS's, should its builder not say
CACHE_VERSION = 2  # part of every cache's key: 2 since the arrays are stored class by class


DATA_ENV = "KERAS_CIFAR_DATA"  # the source when --data is not given


def accepted() -> str:
    """What --data accepts, in a few words (the format names from the FORMATS registry) and where the
    docs describe each."""
    return f"a CIFAR-10 copy ({FORMATS}), a TFDS data dir or synthetic[:N] (docs/recipes.md#data)"


def source_help(default: str = f"${DATA_ENV}, else the TFDS download (needs internet)") -> str:
    """The help of a command's --data option, whose `default` is said in words."""
    return f"CIFAR-10 source: {accepted()}. Default: {default}."


@dataclass(frozen=True)
class Cifar:
    """The official train and test sets: uint8 images [N, 32, 32, 3] and int32 labels [N]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


@dataclass(frozen=True)
class Splits:
    """The report's split: official train set (or a subset) / half of test as validation / half as test."""

    train: Pair
    val: Pair
    test: Pair


# ----------------------------------------------------------------------------------------- sources


def canonical_source(source: str | Path | None = None) -> str:
    """The name of a ``--data`` value: what ``load`` records as ``Cifar.source`` and a run folder as
    its data_source. A local path must exist; nothing else is read. ``None`` means
    $KERAS_CIFAR_DATA, else the TFDS download."""
    if not source and os.environ.get(DATA_ENV):
        return _from_env(canonical_source)
    source = str(source or "tfds")
    if source in ("tfds", TFDS_DOWNLOAD):
        return TFDS_DOWNLOAD
    if source == "synthetic" or source.startswith("synthetic:"):
        n = source.partition(":")[2] or "2000"
        if not n.isdigit() or int(n) < 10:
            raise DataError(f"{source}: synthetic:N needs a whole number N >= 10 of training images")
        return f"synthetic:{int(n)}"
    path = Path(source.removeprefix("tfds:")).expanduser().resolve()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; --data accepts {accepted()}")
    if path.is_dir() and _prepared_tfds(path):
        return f"tfds:{path}"
    if source.startswith("tfds:"):
        raise DataError(f"{source}: {path} holds no prepared TFDS cifar10/<version>/ folder")
    return str(path)


def _prepared_tfds(path: Path) -> bool:
    """Whether `path` is a TFDS data dir holding a prepared cifar10 (cifar10/<version>/dataset_info.json);
    an image tree under path/cifar10/ is not one."""
    return any((path / "cifar10").glob("*/dataset_info.json"))


def load(source: str | Path | None = None, cache_dir: str | Path | None = None) -> Cifar:
    """Load CIFAR-10 from `source` (see module doc and ``canonical_source``)."""
    if not source and os.environ.get(DATA_ENV):
        return _from_env(load, cache_dir)
    name = canonical_source(source)
    if name == TFDS_DOWNLOAD:
        return _load_tfds(None)
    if name.startswith("tfds:"):
        return _load_tfds(Path(name.partition(":")[2]))
    if name.startswith("synthetic:"):
        return synthetic(int(name.partition(":")[2]))
    path = Path(name)
    cache = _cache_file(path, cache_dir)
    cached = _read_cache(cache, name)
    if cached is not None:
        return cached
    said = f"decoding {path} once into {cache.parent}/ (all of CIFAR-10: seconds, 185 MB); later loads take a second"
    data = _read_path(path, lambda: say(said, err=True))
    _check(data, path)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    os.replace(tmp, cache)
    _remove_stale(cache)
    return data


def _from_env(function: Callable[..., T], *args: Any) -> T:
    """`function` of $KERAS_CIFAR_DATA's value; an error about that value names the variable, which the
    user may have set long ago."""
    value = os.environ[DATA_ENV]
    try:
        return function(value, *args)
    except DataError as e:
        raise DataError(f"{DATA_ENV}={value}: {e}") from None


def _cache_file(path: Path, cache_dir: str | Path | None) -> Path:
    """``<name>-<path key>-<content key>.npz``: the content key covers CACHE_VERSION and every file of the
    copy (its name, size, modification and change times: a file replaced or rewritten anywhere in a
    folder changes it)."""
    content = hashlib.sha256(f"{CACHE_VERSION}".encode())
    for name, stat in _file_stats(path):
        content.update(f"\n{name}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}".encode())
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return Path(cache_dir or backend.cache_root()) / f"{path.name}-{where}-{content.hexdigest()[:16]}.npz"


def _file_stats(path: Path) -> list[tuple[str, os.stat_result]]:
    """[(name inside the copy, os.stat of it)] of every file of a folder, by name; a file: [("", its stat)].
    (os.walk: a third of Path.rglob's time on the 60,000 files of the JPEG copy.)"""
    if not path.is_dir():
        return [("", path.stat())]
    found = []
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with contextlib.suppress(OSError):  # a broken link, as the decoder skips it
                found.append((os.path.relpath(full, path), os.stat(full)))
    return sorted(found, key=lambda entry: entry[0])


def _remove_stale(cache: Path) -> None:
    """Delete the other caches of the same copy (same name and path key, another content key)."""
    prefix = cache.name[: -len("0123456789abcdef.npz")]
    for old in cache.parent.glob("*.npz"):
        if old != cache and old.name.startswith(prefix) and re.fullmatch(r"[0-9a-f]{16}\.npz", old.name[len(prefix) :]):
            old.unlink(missing_ok=True)


def _read_cache(cache: Path, name: str) -> Cifar | None:
    """The cached copy, or None when there is none or it cannot be read whole (then it is deleted)."""
    if not cache.exists():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            data = Cifar(z["x_train"], z["y_train"], z["x_test"], z["y_test"], source=name)
        _check(data, cache)
        return data
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, DataError):
        cache.unlink(missing_ok=True)  # rebuilt from the source, never trusted
        return None


def fingerprint(cifar: Cifar) -> str:
    """A hash of the images and labels, not of where they came from: every source of the same pixels
    gives the same one (they are in one order)."""
    digest = hashlib.sha256()
    for array in (cifar.x_train, cifar.y_train, cifar.x_test, cifar.y_test):
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:16]


def _check(data: Cifar, path: Path) -> None:
    for name, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if (
            not len(x)
            or x.shape[1:] != (32, 32, 3)
            or x.dtype != np.uint8
            or y.shape != (len(x),)
            or not np.isin(y, np.arange(len(CLASS_NAMES))).all()
        ):
            raise DataError(f"{path}: found no usable {name} images (shape {x.shape}); --data accepts {accepted()}")


def class_major(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    source: str,
    official: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
) -> Cifar:
    """A Cifar in the one order of every source: class by class, each class in the official order
    (`official`: per split, keys that sort into it, such as TFDS's ids; None: the order given)."""
    arrays: list[np.ndarray] = []
    for x, y, key in ((x_train, y_train, official[0]), (x_test, y_test, official[1])):
        order = np.lexsort((np.arange(len(y)) if key is None else key, y))
        arrays += [x[order], np.asarray(y, np.int32)[order]]
    train_x, train_y, test_x, test_y = arrays
    return Cifar(train_x, train_y, test_x, test_y, source=source)


# ------------------------------------------------------------------------------------------- TFDS


def _load_tfds(data_dir: Path | None) -> Cifar:
    """CIFAR-10 from a prepared TFDS data dir, or (`data_dir` None) downloaded and prepared by TFDS
    in $TFDS_DATA_DIR or ~/tensorflow_datasets. Offline, the download fails at once, before TFDS
    creates any folder; a download that fails later leaves no empty folders behind."""
    offline = f"Without internet pass --data PATH (or set {DATA_ENV}) to a local copy: {accepted()}"
    backend.start()  # TFDS reads with TensorFlow, which must come after the backend's library
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"the default CIFAR-10 source is TFDS, which cannot be imported ({e}); pip install tensorflow-datasets. {offline}"
        ) from None
    download = data_dir is None
    if data_dir is None:
        data_dir = Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")
        url = _tfds_url(tfds, data_dir)
        problem = _unreachable(url)
        if problem:
            raise DataError(f"the TFDS download of CIFAR-10 cannot reach {url} ({problem}): no internet? {offline}")
    before = _folders(data_dir)
    where = "the TFDS download of CIFAR-10" if download else f"TFDS data dir {data_dir}"
    try:
        train, test = tfds.as_numpy(
            tfds.load("cifar10", split=["train", "test"], batch_size=-1, data_dir=str(data_dir), download=download)
        )
    except ImportError as e:  # a library TFDS needs but did not declare
        raise DataError(
            f"{where} failed: a library it needs is missing ({e}); pip install {getattr(e, 'name', None) or 'it'} and try again"
        ) from None
    except Exception as e:  # network, missing files, corrupt records: all end here
        _remove_new_empty_folders(data_dir, before)
        raise DataError(f"{where} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. {offline}") from None
    return class_major(  # TFDS stores its records shuffled; their ids (train_00000, ...) give the official order
        train["image"],
        train["label"],
        test["image"],
        test["label"],
        source=TFDS_DOWNLOAD if download else f"tfds:{data_dir}",
        official=(train["id"], test["id"]),
    )


def _tfds_url(tfds: Any, data_dir: Path) -> str:
    """Where TFDS's cifar10 builder downloads from (a private attribute: TFDS_URL should it change)."""
    try:
        return tfds.builder("cifar10", data_dir=str(data_dir))._cifar_info.url
    except Exception:  # noqa: BLE001 - any change inside TFDS
        return TFDS_URL


def _unreachable(url: str, timeout: float = 10.0) -> str | None:
    """Why `url`'s host cannot be reached (name lookup or connection, bounded by `timeout`), or None.
    Behind a proxy (*_PROXY set) the download goes through it, so nothing is checked."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    parts = urlsplit(url)
    outcome: list[str | None] = ["timed out"]

    def probe() -> None:
        try:
            socket.create_connection(
                (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout=timeout
            ).close()
            outcome[0] = None
        except OSError as e:
            outcome[0] = f"{type(e).__name__}: {e}"

    thread = threading.Thread(target=probe, daemon=True)  # a name lookup ignores socket timeouts
    thread.start()
    thread.join(timeout)
    return outcome[0]


def _folders(root: Path | str) -> set[Path]:
    root = Path(root)
    return {p for p in root.rglob("*") if p.is_dir()} | {root} if root.exists() else set()


def _remove_new_empty_folders(root: Path, before: set[Path]) -> None:
    """Delete the folders under `root` (and `root`) that did not exist in `before` and are empty."""
    for folder in sorted(_folders(root) - before, key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def _read_path(path: Path, starting: Callable[[], None] = lambda: None) -> Cifar:
    """Decode a local copy: a tar archive or a folder, in any of the accepted layouts. `starting()` is
    called once, when a format has recognised the copy and reads its first file."""
    try:
        if path.is_dir():
            files = {str(p.relative_to(path)): p for p in path.rglob("*") if p.is_file()}
            return _decode(path, {k: p.read_bytes for k, p in files.items()}, starting)
        try:
            tar = tarfile.open(path, "r:*")
        except tarfile.ReadError:
            raise DataError(f"{path}: not a folder or a .tar(.gz) archive; --data accepts {accepted()}") from None
        with tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            return _decode(path, {m.name: functools.partial(_member_bytes, tar, m) for m in members}, starting)
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "no message"
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {first}); --data accepts {accepted()}") from None


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A file member's bytes (extractfile gives None only for members that are not files)."""
    return cast(IO[bytes], tar.extractfile(member)).read()


def _decode(path: Path, files: Files, starting: Callable[[], None]) -> Cifar:
    """Read the copy with the first registered format that recognises its file names (`starting()` before
    the first file is read)."""
    announce = functools.cache(starting)  # takes no argument: called once

    def reading(read: Callable[[], bytes]) -> bytes:
        announce()
        return read()

    files = {name: functools.partial(reading, read) for name, read in files.items()}
    for read in (entry.factory for entry in FORMATS.entries.values()):
        arrays: Arrays | None = read(path, files)
        if arrays is not None:
            return class_major(*arrays, source=str(path))
    raise DataError(f"{path}: no CIFAR-10 copy found in it; --data accepts {accepted()}")


def synthetic(n_train: int = 2000, n_test: int | None = None, seed: int = 0) -> Cifar:
    """A learnable stand-in for tests: each class is a fixed coarse colour pattern plus noise."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (10, 4, 4, 3)).repeat(8, axis=1).repeat(8, axis=2)

    def draw(n: int) -> Pair:
        y = np.arange(n, dtype=np.int32) % 10
        rng.shuffle(y)
        x = templates[y] + rng.normal(0, 40, (n, 32, 32, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y

    return Cifar(*draw(n_train), *draw(n_test or max(n_train // 5, 20)), source=f"synthetic:{n_train}")


# ------------------------------------------------------------------------------------------ splits


def stratified_take(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of `n` items drawn class-balanced (proportionally) and deterministically; sorted."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    want = np.floor(counts * n / len(labels)).astype(int)
    want[: n - want.sum()] += 1  # hand out the remainder, one per class
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, want)]
    return np.sort(np.concatenate(picked))


def split(data: Cifar, subset: int | None = None, eval_subset: int | None = None) -> Splits:
    """The report's 10:1:1 split: train = official train set; the official test set is split in two
    halves, stratified and fixed (SPLIT_SEED), into validation and test. `subset` and `eval_subset`
    shrink the training set and each evaluation half, class-balanced."""
    val_idx = stratified_take(data.y_test, len(data.y_test) // 2, SPLIT_SEED)
    test_idx = np.setdiff1d(np.arange(len(data.y_test)), val_idx)
    train = (data.x_train, data.y_train)
    if subset and subset < len(data.y_train):
        keep = stratified_take(data.y_train, subset, SPLIT_SEED)
        train = (data.x_train[keep], data.y_train[keep])
    halves = []
    for idx in (val_idx, test_idx):
        if eval_subset and eval_subset < len(idx):
            idx = idx[stratified_take(data.y_test[idx], eval_subset, SPLIT_SEED)]
        halves.append((data.x_test[idx], data.y_test[idx]))
    return Splits(train, *halves)


def shard(splits: Splits, index: int, count: int) -> Splits:
    """Process `index` of `count`'s share of each split: every count-th image from the index-th, the
    same number in every process (up to count - 1 images of a split are left out). Alone: `splits`."""
    if count == 1:
        return splits

    def part(x: np.ndarray, y: np.ndarray) -> Pair:
        n = len(y) // count
        return x[index::count][:n], y[index::count][:n]

    return Splits(part(*splits.train), part(*splits.val), part(*splits.test))


# --------------------------------------------------------------------------------------- pipelines


def has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None
