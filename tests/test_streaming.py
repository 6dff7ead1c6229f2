"""Streaming data larger than memory: ArrayRecord files written from real
data read back exactly, statistics and training over a stream equal the
in-memory ones, tfds data sources (mocked) read in batches, the host memory
of a pass stays flat as the dataset grows, and bad inputs fail clearly."""

import gc
import tracemalloc

import jax
import numpy as np
import pytest

from conftest import FASHION_DIR, HAS_FASHION
from rainbow_jax import data, models, moments, streaming, train


def _digits_uint8():
  from sklearn.datasets import load_digits
  d = load_digits()
  return np.round(d.images / 16.0 * 255.0).astype(np.uint8)[..., None], d.target


@pytest.fixture(scope="module", params=["digits", "fashion_mnist"])
def records(request, tmp_path_factory):
  """uint8 images and labels of a real dataset, and their ArrayRecord file."""
  if request.param == "fashion_mnist":
    if not HAS_FASHION:
      pytest.skip("apt-get install -y dataset-fashion-mnist")
    x = data.read_idx(f"{FASHION_DIR}/t10k-images-idx3-ubyte.gz")[:3000, :, :, None]
    y = data.read_idx(f"{FASHION_DIR}/t10k-labels-idx1-ubyte.gz")[:3000]
  else:
    x, y = _digits_uint8()
  path = tmp_path_factory.mktemp(request.param) / "train.array_record"
  return x, y, streaming.write_array_record(str(path), x, y, chunk=500)


def test_array_record_round_trip_and_batches(records):
  x, y, path = records
  src = streaming.ArrayRecordSource(path)
  assert len(src) == len(x)
  idx = np.random.default_rng(0).permutation(len(x))[:333]
  got_x, got_y = src.read(idx)
  np.testing.assert_array_equal(got_x, x[idx])
  np.testing.assert_array_equal(got_y, y[idx])
  # Every example once, in order; float32 pixels in [0, 1]; ragged last batch.
  seen = list(streaming.batches(src, 256))
  assert [len(b[1]) for b in seen[:-1]] == [256] * (len(seen) - 1)
  assert len(seen) == streaming.num_batches(src, 256)
  np.testing.assert_array_equal(np.concatenate([np.asarray(b[1]) for b in seen]), y)
  xs = np.concatenate([np.asarray(b[0]) for b in seen])
  assert xs.dtype == np.float32
  np.testing.assert_allclose(xs, x.astype(np.float32) / np.float32(255), rtol=3e-7)
  # A seeded shuffle is a permutation; drop_remainder keeps full batches only.
  ys = np.concatenate([np.asarray(b[1]) for b in streaming.batches(src, 256, shuffle_seed=3,
                                                                   drop_remainder=True)])
  assert len(ys) == len(y) // 256 * 256
  assert not np.array_equal(ys, y[:len(ys)])
  np.testing.assert_array_equal(np.bincount(ys, minlength=10)
                                <= np.bincount(y, minlength=10), True)


def test_moments_over_a_stream_equal_numpy(records):
  x, y, path = records
  src = streaming.ArrayRecordSource(path)
  stream = streaming.batches(src, 500, shuffle_seed=1, labels=False, progress=False)
  state = moments.accumulate(stream, lambda b: b.reshape(b.shape[0], -1))
  flat = x.reshape(len(x), -1).astype(np.float64) / 255
  assert int(state.count[0]) == len(x)
  np.testing.assert_allclose(moments.covariance(state, 0, 0, centered=True),
                             np.cov(flat, rowvar=False, bias=True), atol=2e-6)


@pytest.fixture(scope="module")
def digits_records(tmp_path_factory):
  x, y = _digits_uint8()
  path = tmp_path_factory.mktemp("digits") / "train.array_record"
  return x, y, streaming.write_array_record(str(path), x, y)


def test_training_on_a_stream_equals_training_in_memory(digits_records):
  """One epoch of 2 seeds streamed from the ArrayRecord file, in the order
  `fit` draws with shared_order, gives `fit`'s parameters; a few epochs
  learn the data."""
  x, y, path = digits_records
  xf = x.astype(np.float32) / 255
  model = models.make("mlp", x.shape[1:], 10, widths=[32])
  state0 = train.init(model, train.sgd(), (0, 1), x.shape[1:])
  ref, ref_hist = train.fit(model, xf, y, seeds=(0, 1), epochs=1, state=state0,
                            shared_order=True, progress=False)
  order = np.asarray(jax.random.permutation(
      jax.random.fold_in(state0.data_key[0], 0), len(x)))
  src = streaming.ArrayRecordSource(path)
  got, hist = train.fit_stream(model, lambda e: streaming.batches(src, 128, indices=order),
                               seeds=(0, 1), epochs=1, state=state0, progress=False)
  for a, b in zip(jax.tree_util.tree_leaves(got.params), jax.tree_util.tree_leaves(ref.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(hist.loss, ref_hist.loss, rtol=1e-4)
  np.testing.assert_allclose(hist.train_accuracy, ref_hist.train_accuracy, atol=0.1)
  # Streaming on, a new shuffle per epoch, 500 images held out: it learns.
  rest = np.arange(500, len(x))
  more, hist = train.fit_stream(
      model, lambda e: streaming.batches(src, 32, indices=rest, shuffle_seed=e),
      seeds=(0, 1), epochs=3, state=got, x_test=xf[:500], y_test=y[:500],
      learning_rate=0.05, progress=False)
  assert hist.loss.shape == (2, 2) and int(np.asarray(more.epoch)[0]) == 3
  assert np.all(hist.test_accuracy[-1] > 70), hist.test_accuracy


def test_tfds_data_source_read_in_batches():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=300, policy=tfds.testing.MockPolicy.USE_CODE):
    raw = tfds.data_source("fashion_mnist", split="train")
    src = streaming.TfdsSource(raw)
    idx = np.arange(0, 300, 7)
    got_x, got_y = src.read(idx)
    want = [raw[int(i)] for i in idx]  # tfds' own per-item reads
    np.testing.assert_array_equal(got_x, np.stack([r["image"] for r in want]))
    np.testing.assert_array_equal(got_y, [r["label"] for r in want])
    state = moments.accumulate(streaming.batches(src, 64, labels=False),
                               lambda b: b.reshape(b.shape[0], -1))
  assert int(state.count[0]) == 300


def _peak_host_bytes(source, batch_size):
  gc.collect()
  tracemalloc.start()
  moments.accumulate(streaming.batches(source, batch_size, labels=False),
                     lambda b: b.reshape(b.shape[0], -1))
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  return peak


def test_host_memory_of_a_pass_does_not_grow_with_the_dataset(tmp_path):
  """Host allocations (numpy buffers, traced by tracemalloc) of a streamed
  pass over 4 000 and 32 000 records of 32 × 32 pixels: a few batches in
  flight, not the data (the whole float32 array would be 131 MB)."""
  x = np.kron(_digits_uint8()[0], np.ones((1, 4, 4, 1), np.uint8))
  big = np.concatenate([x] * 18)[:32000]
  labels = np.zeros(len(big), np.int64)
  small_src = streaming.ArrayRecordSource(
      streaming.write_array_record(str(tmp_path / "s"), big[:4000], labels[:4000]))
  big_src = streaming.ArrayRecordSource(
      streaming.write_array_record(str(tmp_path / "b"), big, labels))
  _peak_host_bytes(small_src, 500)  # compile first
  batch_bytes = 500 * big[0].size  # one uint8 batch: 0.5 MB
  for src in (small_src, big_src):
    peak = _peak_host_bytes(src, 500)
    assert peak < 16 * batch_bytes, (len(src), peak)


def test_bad_inputs(tmp_path):
  x = np.zeros((10, 4, 4, 1), np.uint8)
  with pytest.raises(ValueError, match="rows"):
    streaming.write_array_record(str(tmp_path / "a"), x, np.zeros(9))
  with pytest.raises(ValueError, match="no examples"):
    streaming.write_array_record(str(tmp_path / "a"), x[:0], np.zeros(0))
  with pytest.raises(FileNotFoundError, match="write_array_record"):
    streaming.ArrayRecordSource(str(tmp_path / "missing"))
  with pytest.raises(TypeError, match="read"):
    next(streaming.batches([1, 2, 3], 2))
  with pytest.raises(ValueError, match="batch_size"):
    next(streaming.batches((x, np.zeros(10)), 0))
  with pytest.raises(ValueError, match=r"indices must lie in \[0, 10\)"):
    next(streaming.batches((x, np.zeros(10)), 2, indices=[0, 10]))
  with pytest.raises(ValueError, match="no full batch"):
    next(streaming.batches((x, np.zeros(10)), 20, drop_remainder=True))

  class Broken:
    def __len__(self):
      return 10

    def read(self, idx):
      raise OSError("disk on fire")
  with pytest.raises(OSError, match="disk on fire"):  # raised where the batches are used
    list(streaming.batches(Broken(), 2))
  model = models.make("mlp", (4, 4, 1), 10, widths=[8])
  y = np.full(10, 12)
  with pytest.raises(ValueError, match=r"outside \[0, 10\)|must lie in \[0, 10\)"):
    train.fit_stream(model, lambda e: streaming.batches((x, y), 5), progress=False)
  y = np.arange(10) % 10
  y[7] = 11  # only the second batch is bad: caught by the compiled step's count
  with pytest.raises(ValueError, match=r"1 label\(s\) of epoch 1 lie outside \[0, 10\)"):
    train.fit_stream(model, lambda e: streaming.batches((x, y), 5), progress=False)
  with pytest.raises(ValueError, match="empty"):
    train.fit_stream(model, lambda e: iter(()), progress=False)
  with pytest.raises(ValueError, match="stack_axis"):
    train.fit_stream(model, lambda e: iter(()), stack_axis="pmap", progress=False)
