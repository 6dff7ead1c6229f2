"""Datasets as whole in-memory arrays: Fashion-MNIST, MNIST, CIFAR-10, digits.

Sources are tried in this order, and the first that has the data wins:

1. a directory of IDX files given by ``data_dir=`` or the environment
   variable ``RAINBOW_JAX_DATA_DIR`` (files ``train-images-idx3-ubyte[.gz]``,
   ``train-labels-idx1-ubyte[.gz]``, ``t10k-…``; for several datasets use a
   subdirectory per dataset name);
2. Debian's packages (``apt-get install -y dataset-fashion-mnist`` installs
   ``/usr/share/datasets/fashion-mnist``);
3. `tensorflow-datasets` already prepared under ``tfds_dir`` (default
   ``~/tensorflow_datasets``), read with ``tfds.data_source`` — works without
   TensorFlow. Preparing (downloading) a tfds dataset needs TensorFlow and the
   internet: ``tfds.builder(name).download_and_prepare()`` on Colab;
4. ``digits`` is bundled with scikit-learn (8×8 images, 1 797 examples).

Images come back as float32 ``[N, H, W, C]`` (NHWC, Flax's layout) scaled to
[0, 1] and then standardised with the dataset's train mean/std; labels as
int32 ``[N]``.
"""

from __future__ import annotations

import gzip
import os
import struct
from typing import NamedTuple

import numpy as np

DEBIAN_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist",
               "mnist": "/usr/share/datasets/mnist"}
NAMES = ("fashion_mnist", "mnist", "cifar10", "digits")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4",
               0x0D: ">f4", 0x0E: ">f8"}


class Dataset(NamedTuple):
  """A dataset held in memory.

  Attributes:
    x_train: ``[N_train, H, W, C]`` float32 images.
    y_train: ``[N_train]`` int32 labels.
    x_test: ``[N_test, H, W, C]`` float32 images.
    y_test: ``[N_test]`` int32 labels.
    num_classes: number of classes.
    name: dataset name.
    source: where it was read from.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str
  source: str


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (optionally gzipped) into a numpy array."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{path} is not an IDX file (bad magic number).")
  ndim = raw[3]
  shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
  data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
  if data.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header says {shape}, file holds {data.size}.")
  return data.reshape(shape)


def _find(directory: str, stem: str) -> str | None:
  for suffix in ("", ".gz"):
    path = os.path.join(directory, stem + suffix)
    if os.path.exists(path):
      return path
  return None


def _idx_dir_candidates(name: str, data_dir: str | None) -> list[str]:
  dirs = []
  for base in (data_dir, os.environ.get("RAINBOW_JAX_DATA_DIR")):
    if base:
      dirs += [os.path.join(base, name), os.path.join(base, name.replace("_", "-")), base]
  if name in DEBIAN_DIRS:
    dirs.append(DEBIAN_DIRS[name])
  return dirs


def _idx_files(d: str) -> list[str | None]:
  """The four IDX files `load` needs in directory `d` (None where missing)."""
  return [_find(d, f"{split}-{kind}-idx{k}-ubyte")
          for split in ("train", "t10k") for kind, k in (("images", 3), ("labels", 1))]


def _load_idx(name: str, data_dir: str | None):
  for d in _idx_dir_candidates(name, data_dir):
    files = _idx_files(d)
    if all(files):
      arrays = [read_idx(f) for f in files]
      return arrays, f"idx:{d}"
  return None


def read_records(src, indices) -> list:
  """Records `indices` of a tfds data source: one batched read (~15× faster
  than per-item reads), per item where a source lacks it (tfds' mock sources)."""
  idx = [int(i) for i in indices]
  try:
    return list(src.__getitems__(idx))
  except (AttributeError, TypeError):
    return [src[i] for i in idx]


def _read_all(src) -> list:
  """All records of a tfds data source."""
  return read_records(src, range(len(src)))


def _has_tfds() -> bool:
  try:
    import tensorflow_datasets  # noqa: F401  (already imported by `_load_tfds` if present)
  except ImportError:
    return False
  return True


def _load_tfds(name: str, tfds_dir: str | None):
  """Reads a prepared tfds dataset with `tfds.data_source` (no TensorFlow, no
  download: ``download=False``); None when it is not there."""
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    return None
  data_dir = tfds_dir or os.path.expanduser("~/tensorflow_datasets")
  arrays = []
  try:
    for split in ("train", "test"):
      src = tfds.data_source(name, data_dir=data_dir, split=split, download=False)
      items = _read_all(src)
      arrays.append(np.stack([np.asarray(it["image"]) for it in items]))
      arrays.append(np.asarray([int(it["label"]) for it in items]))
  except Exception as e:  # tfds raises assorted errors for a missing dataset.
    if isinstance(e, (ImportError, KeyboardInterrupt)):
      raise
    return None
  return arrays, f"tfds:{data_dir}"


def _load_digits():
  from sklearn.datasets import load_digits
  d = load_digits()
  x = (d.images / 16.0 * 255.0).astype(np.uint8)
  y = d.target
  # Fixed split: every 5th example is test (sklearn orders by writer).
  test = np.arange(len(y)) % 5 == 0
  return [x[~test], y[~test], x[test], y[test]], "sklearn:digits"


def load(
    name: str,
    *,
    data_dir: str | None = None,
    tfds_dir: str | None = None,
    grayscale: bool = False,
    normalize: bool | str = True,
) -> Dataset:
  """Loads a whole dataset into memory.

  Args:
    name: one of ``fashion_mnist``, ``mnist``, ``cifar10``, ``digits``.
    data_dir: directory of IDX files (see the module docstring).
    tfds_dir: tensorflow-datasets data directory with the prepared dataset.
    grayscale: convert RGB to one channel (ITU-R 601 luma), as the tutorial
      does for CIFAR-10.
    normalize: True standardises with the train set's per-channel mean and
      std (after any grayscale conversion); ``'tutorial'`` applies the
      tutorial's transform instead — ImageNet mean (0.485, 0.456, 0.406) and
      std (0.229, 0.224, 0.225) per RGB channel, *then* grayscale; False
      leaves pixels in [0, 1].

  Returns:
    A `Dataset` with ``[N, H, W, C]`` float32 images.

  Raises:
    ValueError: unknown name, or the data is nowhere to be found (the message
      says how to get it).
  """
  if name not in NAMES:
    raise ValueError(f"unknown dataset {name!r}; choose from {NAMES}.")
  found = None
  if name == "digits":
    found = _load_digits()
  elif name != "cifar10":
    found = _load_idx(name, data_dir)
  if found is None:
    found = _load_tfds(name, tfds_dir)
  if found is None:
    missing = ("" if _has_tfds() else " (not read: tensorflow-datasets is not installed;"
               " pip install 'rainbow-jax[data]')")
    hint = {
        "fashion_mnist": "apt-get install -y dataset-fashion-mnist",
        "mnist": "put the four IDX files in $RAINBOW_JAX_DATA_DIR/mnist",
        "cifar10": "prepare it online with tensorflow-datasets",
    }[name]
    raise ValueError(
        f"dataset {name!r} not found. Looked for IDX files in"
        f" {_idx_dir_candidates(name, data_dir)} and a prepared"
        f" tensorflow-datasets copy in {tfds_dir or '~/tensorflow_datasets'}{missing}."
        f" To get it: {hint}, or with TensorFlow installed and online:"
        f" `tfds.builder({name!r}).download_and_prepare()`."
    )
  (xtr, ytr, xte, yte), source = found
  xtr = _as_nhwc(xtr).astype(np.float32) / 255.0
  xte = _as_nhwc(xte).astype(np.float32) / 255.0
  if normalize == "tutorial":
    if xtr.shape[-1] == 3:
      mean = np.array([0.485, 0.456, 0.406], np.float32)
      std = np.array([0.229, 0.224, 0.225], np.float32)
    else:  # torchvision would fail on one channel; use the luma-weighted values
      mean = np.array([0.449], np.float32)
      std = np.array([0.226], np.float32)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
  elif normalize not in (True, False):
    raise ValueError(f"normalize must be True, False or 'tutorial', got {normalize!r}.")
  if grayscale and xtr.shape[-1] == 3:
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    xtr = (xtr @ luma)[..., None]
    xte = (xte @ luma)[..., None]
  if normalize is True:
    mu = xtr.mean(axis=(0, 1, 2), keepdims=True)
    sd = xtr.std(axis=(0, 1, 2), keepdims=True)
    xtr = (xtr - mu) / sd
    xte = (xte - mu) / sd
  ytr = np.asarray(ytr, np.int32)
  yte = np.asarray(yte, np.int32)
  return Dataset(xtr, ytr, xte, yte, int(max(ytr.max(), yte.max()) + 1), name,
                 source)


def shuffle_labels(y, seed: int = 0) -> np.ndarray:
  """The labels `y` ``[N]`` randomly permuted: every class keeps its count,
  and the link between images and labels is gone (Zhang et al. 2017's
  random labels; Morcos et al. 2018 compare networks that memorise them
  with networks that generalise)."""
  y = np.asarray(y)
  if y.ndim != 1 or y.size == 0:
    raise ValueError(f"y: labels must be a non-empty [N] array, got shape {y.shape}.")
  return y[np.random.default_rng(seed).permutation(y.size)]


def modular_addition(p: int = 113, *, train_fraction: float = 0.3, seed: int = 0) -> Dataset:
  """The grokking task of Power et al. (2022) and Nanda et al. (2023),
  generated in code: every pair ``(a, b)`` of ``0…p−1`` as the token ids
  ``[a, b, p]`` (``p`` is the "=" token; vocabulary p + 1), labelled
  ``(a + b) mod p``, split at random into `train_fraction` of the p² pairs
  for training and the rest for testing.

  Returns:
    A `Dataset` with ``x`` ``[N, 3]`` int32 and ``num_classes = p``.
  """
  if p < 3:
    raise ValueError(f"p must be at least 3, got {p}.")
  if not 0 < train_fraction < 1:
    raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}.")
  a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
  x = np.stack([a.ravel(), b.ravel(), np.full(p * p, p)], axis=1).astype(np.int32)
  y = ((a + b) % p).ravel().astype(np.int32)
  order = np.random.default_rng(seed).permutation(p * p)
  n = int(round(train_fraction * p * p))
  tr, te = order[:n], order[n:]
  return Dataset(x[tr], y[tr], x[te], y[te], p, f"modular_addition_{p}",
                 f"generated: (a + b) mod {p}, {train_fraction:.0%} of the pairs for training"
                 f" (split seed {seed})")


def _as_nhwc(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == 3:
    return x[..., None]
  if x.ndim == 4:
    return x
  raise ValueError(f"images must be [N, H, W] or [N, H, W, C], got {x.shape}.")


def available(name: str, *, data_dir: str | None = None) -> bool:
  """Whether `load(name)` would find local data (without reading it)."""
  if name == "digits":
    return True
  return name != "cifar10" and any(
      all(_idx_files(d)) for d in _idx_dir_candidates(name, data_dir)
  ) or os.path.isdir(os.path.expanduser(f"~/tensorflow_datasets/{name}"))


__all__ = ["Dataset", "load", "read_idx", "read_records", "available", "modular_addition",
           "shuffle_labels", "NAMES"]
