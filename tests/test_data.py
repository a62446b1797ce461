"""Data sources (each format on fixtures written here, and a slice of the real JPEG copy) and the split."""

import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from keras_cifar import data


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
    for want, have in zip(arrays, (got.x_train, got.y_train, got.x_test, got.y_test)):
        np.testing.assert_array_equal(want, have)


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


def test_slice_of_the_real_jpeg_copy(jpeg_slice):
    got = data.load(jpeg_slice)
    assert got.x_train.shape == (300, 32, 32, 3) and got.x_test.shape == (100, 32, 32, 3)
    assert np.bincount(got.y_train).tolist() == [30] * 10
    assert got.x_train.dtype == np.uint8 and 40 < got.x_train.mean() < 200  # real pictures, not blank


def test_second_load_comes_from_the_cache(jpeg_slice, tmp_path):
    first = data.load(jpeg_slice, cache_dir=tmp_path)
    cached = list(tmp_path.glob("*.npz"))
    assert len(cached) == 1
    cached[0].write_bytes(b"garbage")  # a corrupt cache is rebuilt, not trusted
    again = data.load(jpeg_slice, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(np.load(cached[0])["x_train"], first.x_train)


@pytest.mark.parametrize("content, message", [
    (b"not a tar at all", "cannot read"),
    (None, "found no train/<class>/* and test/<class>/* images"),
])
def test_corrupt_or_unrecognised_data_is_named(tmp_path, content, message):
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


def test_tfds_failure_says_how_to_pass_data(monkeypatch):
    import tensorflow_datasets as tfds

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(data.DataError, match="TFDS download of CIFAR-10 .*failed.*pass --data PATH"):
        data.load()
