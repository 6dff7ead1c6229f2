"""The pieces of the seeds' findings (experiments/svcca_findings.py):
random labels, and compression onto SVCCA directions."""

import importlib.util
import os

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
