"""Data sets for the information-plane experiments, all available offline.

- `syn_dataset()` regenerates the SYN set of Shwartz-Ziv & Tishby (2017) bit for
  bit, so the paper's main experiment needs no downloaded file.
- `load_var_u(path)` reads their published `var_u.mat` (or any file shaped like it).
- `load_mnist_idx(directory)` reads MNIST IDX files the user already has;
  `load_idx_dir(directory)` reads all of them (train + test when both are there).
- `fashion_mnist()` reads Fashion-MNIST at full size (70,000 images) from
  Debian's `dataset-fashion-mnist`; `image_set(name)` is the one entry point
  for `--dataset mnist|fashion-mnist|digits`, as network inputs.
- `digits_dataset()` / `digits_as_mnist()` give scikit-learn's embedded 8x8 digits,
  the latter resized to 28x28 for MNIST-shaped models such as bnn_pynq's TFC.
- `stratified_split(y)` is the paper's 80/20 stratified train/test split.

Everything returns numpy arrays: images and patterns as uint8 (or float32 in
[0, 1] where resized), labels as int64.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

SYN_BITS = 12
SYN_THRESHOLD = 7.63
_PHI = (1.0 + math.sqrt(5.0)) / 2.0
# Icosahedron vertices p_1..p_12 in the column order of var_u.mat.
_SYN_VERTICES = (
    (0, -1, -_PHI), (-1, -_PHI, 0), (0, -1, _PHI), (1, -_PHI, 0),
    (-_PHI, 0, 1), (0, 1, -_PHI), (-1, _PHI, 0), (1, _PHI, 0),
    (_PHI, 0, 1), (0, 1, _PHI), (_PHI, 0, -1), (-_PHI, 0, -1),
)


def syn_patterns() -> np.ndarray:
    """All 4096 12-bit patterns in counting order, column 0 the most significant bit."""
    shifts = np.arange(SYN_BITS - 1, -1, -1)
    return ((np.arange(2**SYN_BITS)[:, None] >> shifts) & 1).astype(np.uint8)


def syn_dataset() -> tuple[np.ndarray, np.ndarray]:
    """The SYN data set exactly as in Shwartz-Ziv & Tishby's var_u.mat.

    x: (4096, 12) uint8 in {0, 1}; y: (4096,) int64 with 2118 ones, where
    y = [sum_i x_i + ||sum_i x_i p_i|| > 7.63] and p_i are the unit vectors of the
    icosahedron's vertices (the closest score lies 0.067 from the threshold, so
    float rounding cannot flip a label).
    """
    x = syn_patterns()
    p = np.asarray(_SYN_VERTICES, dtype=np.float64)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    score = x.sum(axis=1) + np.linalg.norm(x @ p, axis=1)
    return x, (score > SYN_THRESHOLD).astype(np.int64)


def load_var_u(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Load a var_u.mat-style MATLAB file: `F` (N x d patterns) and `y` (N labels).

    Returns x as uint8 (N, d) and y as int64 (N,), the layout of `syn_dataset()`.
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; pass the path of a var_u.mat-style file")
    try:
        mat = loadmat(path)
    except Exception as exc:  # scipy raises several types for non-MAT input
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({exc})") from exc
    missing = [k for k in ("F", "y") if k not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(
            f"{path}: missing variable(s) {missing}; a var_u.mat-style file holds "
            f"'F' (N x d patterns) and 'y' (N labels), found {found}"
        )
    x, y = np.asarray(mat["F"]), np.asarray(mat["y"])
    if x.ndim != 2:
        raise ValueError(f"{path}: 'F' must be 2-D (N x d), got shape {x.shape}")
    if y.ndim > 2 or (y.ndim == 2 and 1 not in y.shape):
        raise ValueError(f"{path}: 'y' must be a vector of labels, got shape {y.shape}")
    y = y.reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{path}: 'F' has {x.shape[0]} rows but 'y' has {y.shape[0]} labels; they must match"
        )
    if x.size and (x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x))):
        raise ValueError(f"{path}: 'F' must hold small non-negative integers (0..255)")
    if y.size and not np.array_equal(y, np.round(y)):
        raise ValueError(f"{path}: 'y' must hold integer class labels")
    return x.astype(np.uint8), y.astype(np.int64)


_IDX_NAMES = {
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
}
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned-byte data, 3 or 1 dimensions


def _find_idx(directory: Path, stem: str) -> Path:
    # MNIST mirrors spell the names with '-idx' or '.idx', gzipped or not.
    candidates = [stem, stem.replace("-idx", ".idx")]
    for name in candidates:
        for suffix in ("", ".gz"):
            path = directory / (name + suffix)
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"{directory}: no MNIST file {stem}[.gz]; point `directory` at the folder holding "
        f"the IDX files (e.g. t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz)"
    )


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as exc:  # e.g. a .gz file that is not gzip
        raise ValueError(f"{path}: cannot read ({exc})") from exc
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise ValueError(
            f"{path}: bad magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x} "
            f"(unsigned-byte IDX with {ndim} dimension(s)); is this the right file?"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header announces {dims} = {expected} bytes of data but the file holds "
            f"{len(raw) - header}; the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist_idx(directory: str | Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST from IDX files (gzip or plain) in `directory`.

    split "test" reads t10k-*, "train" reads train-*. Returns images (N, 28, 28)
    uint8 and labels (N,) int64.
    """
    if split not in _IDX_NAMES:
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory; pass the folder holding MNIST IDX files")
    image_stem, label_stem = _IDX_NAMES[split]
    image_path, label_path = _find_idx(directory, image_stem), _find_idx(directory, label_stem)
    images, labels = _read_idx(image_path, 3), _read_idx(label_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{image_path} holds {images.shape[0]} images but {label_path} holds "
            f"{labels.shape[0]} labels; use files of the same split"
        )
    return images.copy(), labels.astype(np.int64)


def _present_splits(directory: Path) -> list[str]:
    splits = []
    for split in ("train", "test"):
        try:
            _find_idx(directory, _IDX_NAMES[split][0])
        except FileNotFoundError:
            continue
        splits.append(split)
    return splits


def idx_split_sizes(directory: str | Path) -> dict[str, int]:
    """{"train": n, "test": m} for the sets `load_idx_dir` reads, in its order (train rows come first).

    Read from the image files' headers only, e.g. to train on the first n rows
    and measure all of them.
    """
    directory = Path(directory)
    sizes = {}
    for split in _present_splits(directory) if directory.is_dir() else []:
        path = _find_idx(directory, _IDX_NAMES[split][0])
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            header = f.read(8)
        if len(header) < 8:
            raise ValueError(f"{path}: too short for an IDX header ({len(header)} bytes)")
        sizes[split] = int.from_bytes(header[4:8], "big")
    return sizes


def load_idx_dir(directory: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """All MNIST-format IDX images in `directory`: train then test when both are there, else the one set.

    gzip or plain files, either spelling (see `load_mnist_idx`). Returns images
    (N, rows, cols) uint8 and labels (N,) int64; N = 70,000 for full MNIST or
    Fashion-MNIST, 10,000 for a test set alone. Every count and shape comes from
    the files' own headers and is checked against their contents.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory; pass the folder holding MNIST IDX files")
    splits = _present_splits(directory)
    if not splits:
        raise FileNotFoundError(
            f"{directory}: no MNIST IDX images (train-images-idx3-ubyte[.gz] or t10k-images-idx3-ubyte[.gz]); "
            "point the data directory at the folder holding them"
        )
    parts = [load_mnist_idx(directory, split) for split in splits]
    if len(parts) == 2 and parts[0][0].shape[1:] != parts[1][0].shape[1:]:
        raise ValueError(
            f"{directory}: train images are {parts[0][0].shape[1:]} but test images {parts[1][0].shape[1:]}; "
            "the two sets must come from the same data set"
        )
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_INSTALL = "sudo apt-get install dataset-fashion-mnist"


def fashion_mnist(directory: str | Path = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST, train + test (70,000 x 28 x 28 uint8, labels int64 0..9), from Debian's package."""
    directory = Path(directory)
    if not directory.is_dir() or not _present_splits(directory):
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {directory}; install it with `{FASHION_MNIST_INSTALL}` (or `make fashion-mnist`)"
        )
    return load_idx_dir(directory)


def image_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, rows, cols) -> float32 network inputs (N, rows * cols) in [0, 1] (value / 255)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"images must be uint8 (N, rows, cols), got {images.dtype} {images.shape}")
    return (images.reshape(images.shape[0], -1) / np.float32(255)).astype(np.float32)


IMAGE_SETS = ("mnist", "fashion-mnist", "digits")


def image_set(name: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 28x28 image set `name` as network inputs: x (N, 784) float32 in [0, 1], y (N,) int64.

    "mnist": every IDX set in `data_dir` (`load_idx_dir`; required);
    "fashion-mnist": `fashion_mnist(data_dir or FASHION_MNIST_DIR)`, 70,000 images;
    "digits": `digits_as_mnist()` (1,797 images, offline).
    """
    if name == "mnist":
        if data_dir is None:
            raise ValueError("dataset 'mnist' needs a data directory holding its IDX files (--data-dir DIR)")
        images, labels = load_idx_dir(data_dir)
    elif name == "fashion-mnist":
        images, labels = fashion_mnist(FASHION_MNIST_DIR if data_dir is None else data_dir)
    elif name == "digits":
        x, y = digits_as_mnist()
        return x.reshape(x.shape[0], -1), y
    else:
        raise ValueError(f"unknown image set {name!r}; choose one of {', '.join(IMAGE_SETS)}")
    return image_inputs(images), labels


def digits_dataset() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's embedded handwritten digits: x (1797, 8, 8) uint8 in 0..16, y int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.uint8), digits.target.astype(np.int64)


def digits_as_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The digits set shaped like MNIST, for 28x28-input models (bnn_pynq TFC/SFC/LFC).

    Each 8x8 image is scaled to [0, 1], resized bilinearly to 20x20 and centred
    in a 28x28 frame with a 4-pixel border, as MNIST centres its digits.
    Returns x (1797, 28, 28) float32 in [0, 1] and y int64.
    """
    import torch
    import torch.nn.functional as F

    x, y = digits_dataset()
    t = torch.from_numpy(x.astype(np.float32) / 16.0)[:, None]
    t = F.interpolate(t, size=(20, 20), mode="bilinear", align_corners=False)
    t = F.pad(t, (4, 4, 4, 4)).clamp_(0.0, 1.0)
    return t[:, 0].numpy(), y


def stratified_split(
    y, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified shuffled train/test split: returns (train_idx, test_idx), each sorted.

    The test set gets ceil(test_fraction * N) samples (as scikit-learn's
    train_test_split, which the paper used), shared out over the classes in
    proportion to their sizes (largest remainder), so class ratios are kept.
    Deterministic for a given seed.
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.size < 2:
        raise ValueError(f"y must be a 1-D array of at least 2 labels, got shape {y.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    n = y.size
    n_test = math.ceil(test_fraction * n)
    if n_test >= n:
        raise ValueError(f"test_fraction={test_fraction} leaves no training sample out of {n}")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    quota = counts * n_test / n
    per_class = np.floor(quota).astype(np.int64)
    remainder_order = np.argsort(-(quota - per_class), kind="stable")
    per_class[remainder_order[: n_test - per_class.sum()]] += 1
    rng = np.random.default_rng(seed)
    test = []
    for c in range(classes.size):
        members = np.flatnonzero(inverse == c)
        test.append(rng.permutation(members)[: per_class[c]])
    test_idx = np.sort(np.concatenate(test))
    train_mask = np.ones(n, dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask), test_idx
