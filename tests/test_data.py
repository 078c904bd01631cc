"""Data sets: SYN generator vs the published file and a brute-force recount, loaders, split."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from ib_brevitas.experiments import data

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VAR_U = SHARED_DATA / "var_u.mat"
MNIST_TEST = SHARED_DATA / "mnist-test"


def _brute_force_syn_labels() -> list[int]:
    """Labels recomputed in plain Python from the published definition."""
    phi = (1 + math.sqrt(5)) / 2
    vertices = [(0, -1, -phi), (-1, -phi, 0), (0, -1, phi), (1, -phi, 0), (-phi, 0, 1),
                (0, 1, -phi), (-1, phi, 0), (1, phi, 0), (phi, 0, 1), (0, 1, phi),
                (phi, 0, -1), (-phi, 0, -1)]
    unit = [tuple(c / math.sqrt(sum(v * v for v in p)) for c in p) for p in vertices]
    labels = []
    for i in range(4096):
        bits = [int(b) for b in format(i, "012b")]
        s = [sum(b * u[k] for b, u in zip(bits, unit)) for k in range(3)]
        labels.append(int(sum(bits) + math.sqrt(sum(c * c for c in s)) > 7.63))
    return labels


def test_syn_dataset_shapes_and_brute_force_labels():
    x, y = data.syn_dataset()
    assert x.shape == (4096, 12) and x.dtype == np.uint8
    assert y.shape == (4096,) and y.dtype == np.int64
    assert set(np.unique(x)) == {0, 1}
    # counting order, column 0 the most significant bit
    assert [int("".join(map(str, row)), 2) for row in x] == list(range(4096))
    assert int(y.sum()) == 2118
    assert y.tolist() == _brute_force_syn_labels()


@pytest.mark.skipif(not VAR_U.is_file(), reason=f"reference file {VAR_U} not present")
def test_syn_dataset_equals_published_var_u():
    from scipy.io import loadmat

    mat = loadmat(VAR_U)
    x, y = data.syn_dataset()
    np.testing.assert_array_equal(x, mat["F"])
    np.testing.assert_array_equal(y, mat["y"].ravel())
    fx, fy = data.load_var_u(VAR_U)
    assert fx.dtype == np.uint8 and fy.dtype == np.int64
    np.testing.assert_array_equal(fx, x)
    np.testing.assert_array_equal(fy, y)


def test_load_var_u_round_trip_and_errors(tmp_path):
    from scipy.io import savemat

    x, y = data.syn_dataset()
    good = tmp_path / "good.mat"
    savemat(good, {"F": x[:100], "y": y[None, :100].astype(np.uint8)})
    fx, fy = data.load_var_u(good)
    np.testing.assert_array_equal(fx, x[:100])
    np.testing.assert_array_equal(fy, y[:100])

    no_y = tmp_path / "no_y.mat"
    savemat(no_y, {"F": x[:10]})
    with pytest.raises(ValueError, match=r"no_y\.mat.*missing.*'y'"):
        data.load_var_u(no_y)
    mismatch = tmp_path / "mismatch.mat"
    savemat(mismatch, {"F": x[:10], "y": y[None, :9]})
    with pytest.raises(ValueError, match="10 rows but 'y' has 9"):
        data.load_var_u(mismatch)
    matrix_y = tmp_path / "matrix_y.mat"
    savemat(matrix_y, {"F": x[:4], "y": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="vector of labels"):
        data.load_var_u(matrix_y)
    not_mat = tmp_path / "junk.mat"
    not_mat.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(ValueError, match="junk.mat"):
        data.load_var_u(not_mat)
    with pytest.raises(FileNotFoundError, match="absent.mat"):
        data.load_var_u(tmp_path / "absent.mat")


def _write_idx(path: Path, array: np.ndarray, magic: int | None = None, extra: bytes = b""):
    magic = (0x0800 + array.ndim) if magic is None else magic
    raw = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw += array.astype(np.uint8).tobytes() + extra
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(raw)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("split,prefix", [("test", "t10k"), ("train", "train")])
def test_load_mnist_idx_round_trip(tmp_path, suffix, split, prefix):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images)
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    x, y = data.load_mnist_idx(tmp_path, split=split)
    assert x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_idx_errors(tmp_path):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        data.load_mnist_idx(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        data.load_mnist_idx(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split must be"):
        data.load_mnist_idx(tmp_path, split="validation")

    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, dtype=np.uint8))
    with pytest.raises(ValueError, match="3 images but .* 2 labels"):
        data.load_mnist_idx(tmp_path)

    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8), magic=0x0803)
    with pytest.raises(ValueError, match="bad magic number 0x00000803"):
        data.load_mnist_idx(tmp_path)

    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8), extra=b"\0")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.load_mnist_idx(tmp_path)

    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="cannot read"):
        data.load_mnist_idx(tmp_path)


@pytest.mark.skipif(not MNIST_TEST.is_dir(), reason=f"reference folder {MNIST_TEST} not present")
def test_load_real_mnist_test_set():
    x, y = data.load_mnist_idx(MNIST_TEST, split="test")
    assert x.shape == (10000, 28, 28) and y.shape == (10000,)
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_digits_dataset_and_mnist_shaped_version():
    x, y = data.digits_dataset()
    assert x.shape == (1797, 8, 8) and x.dtype == np.uint8 and 0 <= x.min() and x.max() == 16
    assert y.dtype == np.int64 and set(y.tolist()) == set(range(10))
    m, y2 = data.digits_as_mnist()
    np.testing.assert_array_equal(y2, y)
    assert m.shape == (1797, 28, 28) and m.dtype == np.float32
    assert m.min() >= 0.0 and m.max() <= 1.0
    border = np.ones((28, 28), dtype=bool)
    border[4:24, 4:24] = False
    assert not m[:, border].any()
    # bilinear resizing keeps each image's mean intensity close to the original's
    np.testing.assert_allclose(m[:, 4:24, 4:24].mean(axis=(1, 2)), x.mean(axis=(1, 2)) / 16, atol=0.02)


def test_stratified_split_is_stratified_and_deterministic():
    _, y = data.syn_dataset()
    train, test = data.stratified_split(y, test_fraction=0.2, seed=3)
    assert len(train) == 3276 and len(test) == 820  # ceil(0.2 * 4096), as scikit-learn
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(4096))
    for c in (0, 1):
        expected = 820 * np.mean(y == c)
        assert abs(np.sum(y[test] == c) - expected) < 1
    again = data.stratified_split(y, test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(again[1], test)
    other = data.stratified_split(y, test_fraction=0.2, seed=4)
    assert not np.array_equal(other[1], test)


def test_stratified_split_multiclass_and_errors():
    y = np.repeat(np.arange(3), [50, 30, 20])
    train, test = data.stratified_split(y, test_fraction=0.1, seed=0)
    assert np.bincount(y[test]).tolist() == [5, 3, 2]
    assert len(train) == 90
    with pytest.raises(ValueError, match="test_fraction"):
        data.stratified_split(y, test_fraction=1.0)
    with pytest.raises(ValueError, match="1-D"):
        data.stratified_split(y.reshape(10, 10))


def _header(path: Path) -> tuple[int, tuple[int, ...]]:
    """(magic, dims) read straight from an IDX file's first bytes, independently of the loader."""
    import struct

    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        magic, = struct.unpack(">I", f.read(4))
        dims = struct.unpack(f">{magic & 0xFF}I", f.read(4 * (magic & 0xFF)))
    return magic, dims


def _check_against_headers(directory: Path, x: np.ndarray, y: np.ndarray, splits) -> None:
    n = 0
    for prefix in splits:
        (img,) = directory.glob(f"{prefix}-images*")
        (lab,) = directory.glob(f"{prefix}-labels*")
        (im_magic, im_dims), (lab_magic, lab_dims) = _header(img), _header(lab)
        assert (im_magic, lab_magic) == (0x803, 0x801)
        assert im_dims[0] == lab_dims[0]
        assert x.shape[1:] == tuple(im_dims[1:])
        n += im_dims[0]
    assert x.shape[0] == y.shape[0] == n
    assert x.dtype == np.uint8 and y.dtype == np.int64
    assert y.min() >= 0 and y.max() <= 9


@pytest.mark.parametrize("present", [("train", "t10k"), ("t10k",), ("train",)])
def test_load_idx_dir_reads_what_is_there_train_first(tmp_path, present):
    rng = np.random.default_rng(1)
    sets = {}
    for prefix, n, suffix in (("train", 6, ".gz"), ("t10k", 4, "")):
        if prefix in present:
            sets[prefix] = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8))
            _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", sets[prefix][0])
            _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", sets[prefix][1])
    x, y = data.load_idx_dir(tmp_path)
    _check_against_headers(tmp_path, x, y, present)
    assert data.idx_split_sizes(tmp_path) == {{"train": "train", "t10k": "test"}[p]: len(sets[p][1]) for p in present}
    assert list(data.idx_split_sizes(tmp_path).values()) == [len(sets[p][1]) for p in present]  # load order
    np.testing.assert_array_equal(x, np.concatenate([sets[p][0] for p in present]))
    np.testing.assert_array_equal(y, np.concatenate([sets[p][1] for p in present]))


def test_load_idx_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MNIST IDX images"):
        data.load_idx_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        data.load_idx_dir(tmp_path / "nowhere")
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), dtype=np.uint8))
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(2, dtype=np.uint8))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 8, 8), dtype=np.uint8))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"train images are \(28, 28\) but test images \(8, 8\)"):
        data.load_idx_dir(tmp_path)


@pytest.mark.skipif(not MNIST_TEST.is_dir(), reason=f"reference folder {MNIST_TEST} not present")
def test_load_idx_dir_real_mnist_test_set_against_its_headers():
    x, y = data.load_idx_dir(MNIST_TEST)
    _check_against_headers(MNIST_TEST, x, y, ["t10k"])
    assert x.shape == (10000, 28, 28)
    np.testing.assert_array_equal(x, data.load_mnist_idx(MNIST_TEST)[0])


@pytest.mark.skipif(not data.FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_full_size_against_its_headers():
    x, y = data.fashion_mnist()
    _check_against_headers(data.FASHION_MNIST_DIR, x, y, ["train", "t10k"])
    assert data.idx_split_sizes(data.FASHION_MNIST_DIR) == {"train": 60000, "test": 10000}
    assert x.shape == (70000, 28, 28)
    assert np.bincount(y).tolist() == [7000] * 10  # Fashion-MNIST is balanced in both sets
    inputs, labels = data.image_set("fashion-mnist")
    assert inputs.shape == (70000, 784) and inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs[123], x[123].reshape(-1) / np.float32(255))
    np.testing.assert_array_equal(labels, y)


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    for where in (tmp_path / "absent", tmp_path):
        with pytest.raises(FileNotFoundError, match=r"install it with `sudo apt-get install dataset-fashion-mnist`"):
            data.fashion_mnist(where)


def test_image_set_and_inputs(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.int64).reshape(2, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 9]))
    x, y = data.image_set("mnist", tmp_path)
    assert x.shape == (2, 784) and x.dtype == np.float32 and y.tolist() == [3, 9]
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x * 255, images.reshape(2, -1))
    d, dy = data.image_set("digits")
    assert d.shape == (1797, 784) and dy.shape == (1797,)
    with pytest.raises(ValueError, match="--data-dir"):
        data.image_set("mnist")
    with pytest.raises(ValueError, match="unknown image set 'cifar'"):
        data.image_set("cifar")
    with pytest.raises(ValueError, match="uint8"):
        data.image_inputs(images)
