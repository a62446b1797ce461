"""Data sources (each format on fixtures written here, and a slice of the real JPEG copy) and the split."""

import functools
import http.server
import io
import pickle
import tarfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from keras_cifar.core.errors import DataError
from keras_cifar.data import sources as data
from tests.conftest import REAL_DATA


def _fake_cifar(n_train=50, n_test=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n_train + n_test, 32, 32, 3), dtype=np.uint8)
    y = (np.arange(n_train + n_test) % 10).astype(np.int32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _write_binary(folder, x_tr, y_tr, x_te, y_te):
    folder.mkdir(parents=True)

    def records(x, y):
        return np.concatenate([y[:, None].astype(np.uint8), x.transpose(0, 3, 1, 2).reshape(len(x), -1)], 1).tobytes()

    for i, part in enumerate(np.array_split(np.arange(len(y_tr)), 5), start=1):
        (folder / f"data_batch_{i}.bin").write_bytes(records(x_tr[part], y_tr[part]))
    (folder / "test_batch.bin").write_bytes(records(x_te, y_te))


def _write_python(folder, x_tr, y_tr, x_te, y_te):
    folder.mkdir(parents=True)

    def dump(x, y):
        return pickle.dumps({b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), b"labels": y.tolist()})

    for i, part in enumerate(np.array_split(np.arange(len(y_tr)), 5), start=1):
        (folder / f"data_batch_{i}").write_bytes(dump(x_tr[part], y_tr[part]))
    (folder / "test_batch").write_bytes(dump(x_te, y_te))


def _write_tree(folder, x_tr, y_tr, x_te, y_te, names=data.CLASS_NAMES):
    """PNG files in train/<class>/NNNN.png and test/<class>/NNNN.png, numbered within each class in
    the arrays' order (as CIFAR-10's image trees are), `names` naming the class folders."""
    for split, xs, ys in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        for label in np.unique(ys):
            (folder / split / names[label]).mkdir(parents=True)
            for i, img in enumerate(xs[ys == label]):
                Image.fromarray(img).save(folder / split / names[label] / f"{i:04d}.png")


def _class_major(x_tr, y_tr, x_te, y_te):
    """The arrays in data.load's one order: class by class, the given order within a class."""
    out = []
    for x, y in ((x_tr, y_tr), (x_te, y_te)):
        order = np.argsort(y, kind="stable")
        out += [x[order], y[order]]
    return tuple(out)


def _tar(folder, out):
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out


@pytest.mark.parametrize("writer, name", [(_write_binary, "cifar-10-batches-bin"), (_write_python, "cifar-10-batches-py")])
@pytest.mark.parametrize("as_tar", [False, True])
def test_official_archives_round_trip(tmp_path, writer, name, as_tar):
    arrays = _fake_cifar()
    writer(tmp_path / name, *arrays)
    source = _tar(tmp_path / name, tmp_path / f"{name}.tar.gz") if as_tar else tmp_path / name
    got = data.load(source)
    for want, have in zip(_class_major(*arrays), (got.x_train, got.y_train, got.x_test, got.y_test)):
        np.testing.assert_array_equal(want, have)


@pytest.mark.parametrize(
    "writer, name, gone", [(_write_binary, "bin", "data_batch_2.bin"), (_write_python, "py", "test_batch")]
)
def test_an_incomplete_official_archive_names_what_it_lacks(tmp_path, writer, name, gone):
    writer(tmp_path / name, *_fake_cifar())
    (tmp_path / name / gone).unlink()
    source = _tar(tmp_path / name, tmp_path / f"{name}.tar.gz") if name == "bin" else tmp_path / name
    with pytest.raises(DataError, match=f"^{source}: an incomplete CIFAR-10 .* copy: {gone} missing$"):
        data.load(source)


def test_python_archive_refuses_foreign_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_python(folder, *_fake_cifar())
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": __import__("collections").OrderedDict(), b"labels": []}))
    with pytest.raises(data.DataError, match="refusing to unpickle collections.OrderedDict"):
        data.load(folder)


def test_class_folder_tree_png_and_jpeg(tmp_path):
    x_tr, y_tr, x_te, y_te = _fake_cifar(20, 10)
    for split, xs, ys, fmt in (("train", x_tr, y_tr, "PNG"), ("test", x_te, y_te, "JPEG")):
        for i, (img, label) in enumerate(zip(xs, ys)):
            folder = tmp_path / "tree" / split / data.CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:04d}.{fmt.lower()}", fmt)
    got = data.load(tmp_path / "tree")
    order = np.lexsort((np.arange(20), y_tr))  # read back sorted by class, then file name
    np.testing.assert_array_equal(got.x_train, x_tr[order])  # PNG is lossless
    np.testing.assert_array_equal(got.y_train, y_tr[order])
    assert got.x_test.shape == (10, 32, 32, 3) and sorted(got.y_test) == sorted(y_te)


def test_image_tree_is_labelled_by_class_name_not_folder_order(tmp_path):
    """Folders with the common short names (plane, car) get CIFAR-10's labels, in any case; unknown
    names are one error naming them, not labels in sorted-folder order."""
    arrays = _fake_cifar(20, 10)
    aliased = ("plane", "car", *data.CLASS_NAMES[2:7], "HORSE", *data.CLASS_NAMES[8:])
    _write_tree(tmp_path / "aliased", *arrays, names=aliased)
    got = data.load(tmp_path / "aliased")
    for want, have in zip(_class_major(*arrays), (got.x_train, got.y_train, got.x_test, got.y_test)):
        np.testing.assert_array_equal(want, have)
    _write_tree(tmp_path / "other", *arrays, names=("boat", *data.CLASS_NAMES[1:9], "lorry"))
    with pytest.raises(DataError, match=r"other: class folders boat, lorry are not CIFAR-10 class names; name them airplane, "):
        data.load(tmp_path / "other")


def test_image_tree_under_a_cifar10_folder_is_not_a_tfds_data_dir(tmp_path):
    """The layout of the JPEG copy's archive, extracted: X/cifar10/train/<class>/..."""
    arrays = _fake_cifar(20, 10)
    _write_tree(tmp_path / "x" / "cifar10", *arrays)
    assert data.canonical_source(tmp_path / "x") == str(tmp_path / "x")
    np.testing.assert_array_equal(data.load(tmp_path / "x").x_train, _class_major(*arrays)[0])


def test_16_bit_and_transparent_images_are_scaled_and_composited_alike_in_trees_and_predict(tmp_path):
    from keras_cifar.tools import serving

    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0..65472
    half_red = np.zeros((32, 32, 4), np.uint8)
    half_red[..., 0], half_red[..., 3] = 255, 128  # red at half opacity
    _write_tree(tmp_path / "t", *_fake_cifar(10, 10))
    Image.fromarray(ramp).save(tmp_path / "t" / "train" / "airplane" / "0000.png")  # a 16-bit greyscale PNG
    Image.fromarray(half_red).save(tmp_path / "t" / "test" / "airplane" / "0000.png")
    got = data.load(tmp_path / "t")
    want_ramp = np.round(ramp / 257).astype(np.uint8)[..., None].repeat(3, -1)
    want_red = np.broadcast_to(np.array([255, 127, 127], np.uint8), (32, 32, 3))  # over white
    np.testing.assert_allclose(got.x_train[0], want_ramp, atol=0)
    np.testing.assert_allclose(got.x_test[0], want_red, atol=1)
    np.testing.assert_array_equal(serving.read_image(tmp_path / "t" / "train" / "airplane" / "0000.png"), got.x_train[0])
    np.testing.assert_array_equal(serving.read_image(tmp_path / "t" / "test" / "airplane" / "0000.png"), got.x_test[0])


def test_jpeg_tree_laid_out_like_the_cifar10_jpeg_copy(jpeg_tree):
    path, arrays = jpeg_tree
    got = data.load(path)
    assert got.x_train.shape == (640, 32, 32, 3) and got.x_test.shape == (160, 32, 32, 3)
    assert np.bincount(got.y_train).tolist() == [64] * 10 and got.x_train.dtype == np.uint8
    for want, have in zip(arrays, (got.x_train, got.y_train, got.x_test, got.y_test)):
        np.testing.assert_array_equal(want, have)  # each JPEG decoded as PIL decodes it


@pytest.mark.real_data
def test_real_cifar10_copy():
    """Opt-in (KERAS_CIFAR_DATA=path): the whole data set loads, with the official sizes and classes."""
    got = data.load(REAL_DATA)
    assert got.x_train.shape == (50000, 32, 32, 3) and got.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(got.y_train).tolist() == [5000] * 10 and np.bincount(got.y_test).tolist() == [1000] * 10
    assert 100 < got.x_train.mean() < 140  # natural pictures (CIFAR-10's mean is about 121), not blank


def test_second_load_comes_from_the_cache(jpeg_tree, tmp_path, capsys):
    jpeg_slice = jpeg_tree[0]
    first = data.load(jpeg_slice, cache_dir=tmp_path)
    assert capsys.readouterr().err.startswith(f"decoding {jpeg_slice} once into {tmp_path}/")  # the wait is said
    data.load(jpeg_slice, cache_dir=tmp_path)
    assert capsys.readouterr().err == ""  # once
    cached = list(tmp_path.glob("*.npz"))
    assert len(cached) == 1
    whole = cached[0].read_bytes()
    for broken in (b"garbage", whole[: len(whole) // 2]):  # a corrupt or truncated cache is rebuilt, not trusted
        cached[0].write_bytes(broken)
        again = data.load(jpeg_slice, cache_dir=tmp_path)
        np.testing.assert_array_equal(first.x_train, again.x_train)
        np.testing.assert_array_equal(np.load(cached[0])["x_train"], first.x_train)


def test_a_folders_cache_follows_a_file_replaced_deep_inside(tmp_path):
    x_tr, y_tr, x_te, y_te = _fake_cifar(20, 10)
    _write_tree(tmp_path / "tree", x_tr, y_tr, x_te, y_te)
    first = data.load(tmp_path / "tree", cache_dir=tmp_path / "cache")
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(tmp_path / "tree" / "train" / "bird" / "0000.png")
    again = data.load(tmp_path / "tree", cache_dir=tmp_path / "cache")
    bird = np.flatnonzero(again.y_train == 2)[0]
    assert (again.x_train[bird] == 7).all() and not (first.x_train[bird] == 7).all()
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # the stale cache is gone


@pytest.mark.parametrize(
    "content, message", [(b"not a tar at all", "not a folder or a .tar(.gz) archive"), (None, "no CIFAR-10 copy found in it")]
)
def test_corrupt_or_unrecognised_data_is_named(tmp_path, content, message, capsys):
    path = tmp_path / "data.tar.gz"
    if content is None:
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo("readme.txt")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    else:
        path.write_bytes(content)
    with pytest.raises(data.DataError) as err:
        data.load(path)
    assert str(path) in str(err.value) and message in str(err.value) and "--data accepts" in str(err.value)
    assert capsys.readouterr().err == ""  # no decoding was started: the error is the one line


def test_missing_path_and_broken_image(tmp_path):
    with pytest.raises(data.DataError, match="nope: no such file or folder; --data accepts"):
        data.load(tmp_path / "nope")
    for split in ("train", "test"):
        (tmp_path / "t" / split / "cat").mkdir(parents=True)
        (tmp_path / "t" / split / "cat" / "0.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(data.DataError, match=r"0.png: not a readable image"):
        data.load(tmp_path / "t")


def test_split_is_10_1_1_stratified_disjoint_and_fixed():
    cifar = data.synthetic(1000, 1000, seed=3)
    s = data.split(cifar)
    assert len(s.train[1]) == 1000 and len(s.val[1]) == len(s.test[1]) == 500
    assert np.bincount(s.val[1]).tolist() == np.bincount(s.test[1]).tolist() == [50] * 10
    # disjoint halves that together are the official test set
    rows = {r.tobytes() for r in cifar.x_test}
    val_rows = {r.tobytes() for r in s.val[0]}
    test_rows = {r.tobytes() for r in s.test[0]}
    assert not val_rows & test_rows and val_rows | test_rows == rows
    again = data.split(cifar)
    np.testing.assert_array_equal(s.val[0], again.val[0])
    small = data.split(cifar, subset=200, eval_subset=100)
    assert np.bincount(small.train[1]).tolist() == [20] * 10 and len(small.test[1]) == 100
    assert {r.tobytes() for r in small.test[0]} <= test_rows  # the small test set stays inside the test half


def test_source_names_are_checked_without_reading(tmp_path):
    assert data.canonical_source() == "tfds:cifar10" and data.canonical_source("synthetic") == "synthetic:2000"
    assert data.canonical_source(tmp_path) == str(tmp_path.resolve())
    (tmp_path / "cifar10" / "3.0.2").mkdir(parents=True)
    (tmp_path / "cifar10" / "3.0.2" / "dataset_info.json").write_text("{}")
    for name in ("tfds:cifar10", "synthetic:300", str(tmp_path), f"tfds:{tmp_path.resolve()}"):
        assert data.canonical_source(data.canonical_source(name)) == data.canonical_source(name)  # a fixed point
    with pytest.raises(DataError, match="synthetic:N needs a whole number"):
        data.canonical_source("synthetic:many")
    with pytest.raises(DataError, match="no such file or folder"):
        data.canonical_source(tmp_path / "nope.tar.gz")


# --------------------------------------------------------------------------------------------- TFDS


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def tfds_cifar10(tmp_path, monkeypatch):
    """TFDS's own cifar10 builder, downloading a tiny CIFAR-10 binary archive served on 127.0.0.1,
    preparing into TFDS_DATA_DIR=tmp_path/tfds. Yields (the archive's arrays, a function that points
    the builder at another URL)."""
    from tensorflow_datasets.image_classification import cifar

    arrays = _fake_cifar(50, 20)
    folder = tmp_path / "srv" / "cifar-10-batches-bin"
    _write_binary(folder, *arrays)
    (folder / "batches.meta.txt").write_text("\n".join(data.CLASS_NAMES) + "\n")
    _tar(folder, tmp_path / "srv" / "cifar-10-binary.tar.gz")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path / "srv"))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    original = cifar.Cifar10._cifar_info

    def serve_from(url):
        monkeypatch.setattr(cifar.Cifar10, "_cifar_info", property(lambda self: original.fget(self)._replace(url=url)))

    serve_from(f"http://127.0.0.1:{server.server_address[1]}/cifar-10-binary.tar.gz")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    yield arrays, serve_from
    server.shutdown()


def test_every_source_gives_the_same_images_in_the_same_order_and_split(tfds_cifar10, tmp_path):
    """One archive through TFDS's own download and preparation (which needs the importlib_resources
    that TFDS 4.9 does not declare), the binary and python archives and a PNG tree, each as a folder
    and as a .tar.gz: the same arrays, so the same validation and test halves and subsets, image by
    image. (TFDS stores its records shuffled.)"""
    arrays, _ = tfds_cifar10
    tfds = data.load(data.canonical_source())  # as the command line does
    assert tfds.source == "tfds:cifar10" and (tmp_path / "tfds" / "cifar10" / "3.0.2").is_dir()
    sources = [tfds]
    for writer, name in ((_write_binary, "bin"), (_write_python, "py"), (_write_tree, "tree")):
        writer(tmp_path / name / "copy", *arrays)
        sources += [data.load(tmp_path / name / "copy"), data.load(_tar(tmp_path / name / "copy", tmp_path / f"{name}.tar.gz"))]
    for got in sources:
        for want, have in zip(_class_major(*arrays), (got.x_train, got.y_train, got.x_test, got.y_test)):
            np.testing.assert_array_equal(want, have)
    for subset, eval_subset in ((None, None), (20, 10)):
        a, b = data.split(tfds, subset, eval_subset), data.split(sources[-1], subset, eval_subset)
        for part in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(a, part)[0], getattr(b, part)[0])
            np.testing.assert_array_equal(getattr(a, part)[1], getattr(b, part)[1])


def test_tfds_offline_fails_at_once_naming_data_and_leaves_no_folders(tfds_cifar10, tmp_path):
    _, serve_from = tfds_cifar10
    serve_from("http://127.0.0.1:9/cifar-10-binary.tar.gz")  # nothing listens on the discard port
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"cannot reach http://127.0.0.1:9/.*no internet\? Without internet pass --data"):
        data.load()
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "tfds").exists()


def test_tfds_failures_say_what_is_missing(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(data, "_unreachable", lambda url: None)  # as if online
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))

    def fail(error):
        def load(*args, **kwargs):
            (tmp_path / "tfds" / "cifar10" / "incomplete.X").mkdir(parents=True)  # what TFDS leaves when it fails
            raise error

        return load

    monkeypatch.setattr(tfds, "load", fail(ConnectionError("connection reset")))
    with pytest.raises(DataError, match="TFDS download of CIFAR-10 failed: ConnectionError: connection reset.*--data PATH"):
        data.load()
    assert not (tmp_path / "tfds").exists()  # the empty folders it created are gone
    monkeypatch.setattr(
        tfds, "load", fail(ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources"))
    )
    with pytest.raises(DataError, match="a library it needs is missing .*pip install importlib_resources"):
        data.load()
