"""The pieces of the seeds' findings (experiments/svcca_findings.py):
random labels, and compression onto SVCCA directions."""

import importlib.util
import os

import jax
import numpy as np
import optax
import pytest

from rainbow_jax import data, evaluate, models, network, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _findings():
  spec = importlib.util.spec_from_file_location(
      "svcca_findings", os.path.join(ROOT, "experiments", "svcca_findings.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_shuffled_labels_are_a_permutation_that_a_network_memorises():
  ds = data.load("digits")
  y = ds.y_train[:600]
  shuffled = data.shuffle_labels(y, seed=1)
  np.testing.assert_array_equal(np.bincount(shuffled, minlength=10),
                                np.bincount(y, minlength=10))  # class counts kept
  # The images–labels link is gone: agreement with the true labels is at
  # chance, Σ p_c² ≈ 0.1 for ten balanced classes (binomial sd ≈ 0.012).
  chance = float(np.sum((np.bincount(y) / len(y)) ** 2))
  assert abs(np.mean(shuffled == y) - chance) < 0.05
  model = models.make("mlp", ds.x_train.shape[1:], 10, widths=[256, 128])
  _, hist = train.fit(model, ds.x_train[:600], shuffled, seeds=[0, 1], epochs=60,
                      tx=optax.adam(3e-3), batch_size=100, progress=False)
  assert np.all(hist.train_accuracy[-1] > 99)  # fitted: memorised
  with pytest.raises(ValueError, match="non-empty"):
    data.shuffle_labels(np.zeros((0,), np.int32))


def test_compression_at_full_width_is_the_unprojected_network():
  f = _findings()
  ds = data.load("digits")
  model = models.make("mlp", ds.x_train.shape[1:], 10, widths=[32, 16])
  state, _ = train.fit(model, ds.x_train, ds.y_train, seeds=[0, 1], epochs=3,
                       tx=optax.adam(3e-3), progress=False)
  v = [train.select(state.variables, k) for k in range(2)]
  net = network.from_linen(model, v[0], ds.x_train[:2])
  h, g = (np.asarray(net.layer_inputs(w, ds.x_train, upto=1)[1]) for w in v)
  basis = f.svcca_basis(h, g)
  np.testing.assert_allclose(basis @ basis.T, np.eye(32), atol=1e-10)  # orthonormal rows
  full = evaluate.accuracy(net, v[0], ds.x_test, ds.y_test)
  acc = f.projected_accuracy(net, v[0], 1, basis, h.mean(0), [0, 8, 32], ds.x_test, ds.y_test)
  assert acc[2] == pytest.approx(float(full), abs=1e-3)  # the same number of correct images
  assert acc[0] < acc[1] <= acc[2] + 1  # fewer directions, less accuracy
  pca = f.pca_basis(h)
  assert f.projected_accuracy(net, v[0], 1, pca, h.mean(0), [32], ds.x_test, ds.y_test)[0] \
      == pytest.approx(float(full), abs=1e-3)  # the same number of correct images


def test_freezing_matches_optax_partition_and_leaves_frozen_weights_alone():
  ds = data.load("digits")
  x, y = ds.x_train[:512], ds.y_train[:512]
  model = models.make("mlp", x.shape[1:], 10, widths=[32, 16])
  sgd = train.sgd(0.05, 0.9)
  fit = lambda tx, state=None, epochs=2: train.fit(
      model, x, y, seeds=[0, 1], epochs=epochs, tx=tx, state=state, progress=False)[0]
  # Nothing frozen: exactly the wrapped optimiser.
  plain, wrapped = fit(sgd), fit(train.freezable(sgd))
  for a, b in zip(jax.tree_util.tree_leaves(plain.params),
                  jax.tree_util.tree_leaves(wrapped.params)):
    np.testing.assert_array_equal(a, b)
  # dense_0 frozen from the start, against optax's own partitioning with
  # set_to_zero for it: the same trajectory for every other layer.
  tx = train.freezable(sgd)
  start = train.freeze(train.init(model, tx, [0, 1], x.shape[1:]), ["dense_0"])
  ours = fit(tx, start)
  labels = lambda p: {k: "frozen" if k == "dense_0" else "train" for k in p}
  theirs = fit(optax.multi_transform({"train": sgd, "frozen": optax.set_to_zero()}, labels))
  np.testing.assert_array_equal(ours.params["dense_0"]["kernel"],
                                start.params["dense_0"]["kernel"])  # unchanged
  for k in ("dense_1", "dense_2"):
    np.testing.assert_allclose(ours.params[k]["kernel"], theirs.params[k]["kernel"],
                               rtol=1e-6, atol=1e-7)
    assert not np.allclose(ours.params[k]["kernel"], start.params[k]["kernel"])
  with pytest.raises(ValueError, match="no parameter under"):
    train.freeze(start, ["conv_9"])
