"""The pieces of the seeds' findings (experiments/svcca_findings.py):
random labels, compression onto SVCCA directions, and the SVR's pruning
without data (experiments/svr_vgg.py)."""

import importlib.util
import os

import jax
import numpy as np
import optax
import pytest

from rainbow_jax import data, evaluate, models, network, svr, train

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
  start = train.init(model, sgd, [0, 1], x.shape[1:])
  # dense_0 frozen from the start, against optax's own partitioning with
  # set_to_zero for it: the same trajectory for every other layer.
  ours = train.fit(model, x, y, seeds=[0, 1], epochs=2, tx=sgd, state=start,
                   frozen=["dense_0"], progress=False)[0]
  labels = lambda p: {k: "frozen" if k == "dense_0" else "train" for k in p}
  theirs = train.fit(model, x, y, seeds=[0, 1], epochs=2, progress=False,
                     tx=optax.multi_transform({"train": sgd, "frozen": optax.set_to_zero()},
                                              labels))[0]
  np.testing.assert_array_equal(ours.params["dense_0"]["kernel"],
                                start.params["dense_0"]["kernel"])  # unchanged
  for k in ("dense_1", "dense_2"):
    np.testing.assert_allclose(ours.params[k]["kernel"], theirs.params[k]["kernel"],
                               rtol=1e-6, atol=1e-7)
    assert not np.allclose(ours.params[k]["kernel"], start.params[k]["kernel"])
  with pytest.raises(ValueError, match="no parameter under"):
    train.fit(model, x, y, seeds=[0], epochs=1, frozen=["conv_9"], progress=False)


def test_frozen_bottom_layers_skip_their_backward_pass():
  """A step of the MLP has 3 forward products and 5 backward ones (the
  weight gradients of the 3 layers, the input gradients of the upper 2).
  Freezing dense_0 removes its weight gradient and the gradient of
  dense_1's input, which only dense_0 needed (2 products); freezing dense_0
  and dense_1 removes 4, leaving the classifier's weight gradient."""
  ds = data.load("digits")
  x, y = jax.numpy.asarray(ds.x_train[:256]), jax.numpy.asarray(ds.y_train[:256])
  model = models.make("mlp", x.shape[1:], 10, widths=[32, 16])
  tx = train.sgd()
  state = train.init(model, tx, [0], x.shape[1:])

  def products(frozen):
    jaxpr = jax.make_jaxpr(lambda s: train.train_epoch(
        s, x, y, model=model, tx=tx, frozen=frozen))(state)
    return str(jaxpr).count("dot_general")

  assert products(()) == 8
  assert products(("dense_0",)) == 6
  assert products(("dense_0", "dense_1")) == 4


def test_svr_pruning_without_data_keeps_the_logits_and_random_pruning_does_not():
  """Section 5.2.2: Adam with an L2 penalty (Mehta et al. 2019's setting)
  sparsifies a digits MLP; the neurons `svr.neuron_gains` puts in the
  near-kernel (gain < 1e-2) are removed without looking at any data. The
  logits move by less than the bound measured here (relative change
  ≤ 1e-3; measured 2e-6…9e-5 over three seeds), while removing as many
  random neurons from the same layers moves them by more than 0.1
  (measured 0.37…0.47). The data-free bound of each layer's output change,
  ‖ΔW x‖ ≤ √n · rtol · s_0 · ‖x‖ for n neurons removed, holds on the test
  images (float64 numpy)."""
  ds = data.load("digits", normalize=True)
  model = models.MLP(dims=(64, 128, 128, 10))
  tx = optax.chain(optax.add_decayed_weights(1e-2), optax.adam(1e-2))
  state, _ = train.fit(model, ds.x_train, ds.y_train, seeds=[0], epochs=20, tx=tx,
                       progress=False, batch_size=64)
  params = train.select(state.params, 0)
  x = np.asarray(ds.x_test.reshape(len(ds.x_test), -1), np.float64)
  logits = np.asarray(model.apply({"params": params}, ds.x_test), np.float64)
  rng = np.random.default_rng(0)
  pruned, random_pruned, count = dict(params), dict(params), 0
  h = x
  for name in ("dense_0", "dense_1"):
    kernel = np.asarray(params[name]["kernel"], np.float64)  # [in, out]
    gains = np.asarray(svr.neuron_gains(kernel.T.astype(np.float32)))
    flag = gains < 1e-2
    count += int(flag.sum())
    s0 = np.linalg.svd(kernel, compute_uv=False)[0]
    np.testing.assert_allclose(gains, np.linalg.norm(kernel, axis=0) / s0, rtol=1e-3, atol=1e-6)
    change = np.linalg.norm(h @ (kernel * flag[None]), axis=1)
    bound = np.sqrt(flag.sum()) * 1e-2 * s0 * np.linalg.norm(h, axis=1)  # ‖ΔW‖_F ‖x‖
    assert np.all(change <= bound + 1e-9)
    h = np.maximum(h @ kernel, 0.0)
    pruned[name] = {"kernel": params[name]["kernel"] * (~flag)[None]}
    drop = np.ones(flag.shape, bool)
    drop[rng.choice(flag.size, int(flag.sum()), replace=False)] = False
    random_pruned[name] = {"kernel": params[name]["kernel"] * drop[None]}
  assert count >= 20, f"only {count} neurons sparsified"
  rel = lambda p: float(np.linalg.norm(np.asarray(model.apply({"params": p}, ds.x_test))
                                       - logits) / np.linalg.norm(logits))
  assert rel(pruned) <= 1e-3
  assert rel(random_pruned) > 0.1
