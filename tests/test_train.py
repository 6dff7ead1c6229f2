"""Multi-seed training as one vmapped program, on real (digits) data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rainbow_jax import data, models, train


@pytest.fixture(scope="module")
def digits():
  return data.load("digits")


def _mlp(ds, widths=(32,)):
  return models.make("mlp", ds.x_train.shape[1:], ds.num_classes, widths=widths)


@pytest.mark.parametrize("stack_axis", ["vmap", "map"])
def test_seed_in_a_batch_equals_seed_alone(digits, stack_axis):
  model = _mlp(digits)
  x, y = digits.x_train[:600], digits.y_train[:600]
  batch, _ = train.fit(model, x, y, seeds=[3, 5, 7], epochs=2, batch_size=64,
                       stack_axis=stack_axis, progress=False)
  alone, _ = train.fit(model, x, y, seeds=[5], epochs=2, batch_size=64,
                       progress=False)
  for a, b in zip(jax.tree_util.tree_leaves(train.select(batch.params, 1)),
                  jax.tree_util.tree_leaves(train.select(alone.params, 0))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Different seeds really differ.
  w = [train.select(batch.params, k)["dense_0"]["kernel"] for k in (0, 2)]
  assert float(jnp.max(jnp.abs(w[0] - w[1]))) > 1e-2


def test_training_learns_and_accuracy_matches_numpy(digits):
  model = _mlp(digits, widths=(64,))
  state, hist = train.fit(model, digits.x_train, digits.y_train, digits.x_test,
                          digits.y_test, seeds=[0, 1], epochs=5, batch_size=32,
                          progress=False)
  assert hist.test_accuracy.shape == (5, 2)
  assert np.all(hist.test_accuracy[-1] > 90), hist.test_accuracy
  assert np.all(hist.loss[-1] < hist.loss[0])
  # Independent reference: logits of seed 1 via plain numpy matmuls.
  p = train.select(state.params, 1)
  h = np.maximum(digits.x_test.reshape(len(digits.x_test), -1) @ np.asarray(p["dense_0"]["kernel"]), 0)
  pred = np.argmax(h @ np.asarray(p["dense_1"]["kernel"]), -1)
  ref = 100 * np.mean(pred == digits.y_test)
  assert float(hist.test_accuracy[-1, 1]) == pytest.approx(ref, abs=1e-3)


def test_cnn_trains_one_epoch_vmap_and_map_agree(digits):
  model = models.make("cnn", digits.x_train.shape[1:], 10, widths=[8])
  out = {}
  for axis in ("vmap", "map"):
    out[axis] = train.fit(model, digits.x_train, digits.y_train, digits.x_test,
                          digits.y_test, seeds=[0, 1], epochs=1, batch_size=32,
                          stack_axis=axis, progress=False)
  assert np.all(out["map"][1].test_accuracy[0] > 30)  # chance is 10 %
  for a, b in zip(jax.tree_util.tree_leaves(out["vmap"][0].params),
                  jax.tree_util.tree_leaves(out["map"][0].params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_shared_order_only_changes_the_order(digits):
  model = _mlp(digits)
  x, y = digits.x_train[:300], digits.y_train[:300]
  own, _ = train.fit(model, x, y, seeds=[0, 1], epochs=1, progress=False)
  shared, _ = train.fit(model, x, y, seeds=[0, 1], epochs=1, progress=False,
                        shared_order=True)
  k = lambda s, i: train.select(s.params, i)["dense_0"]["kernel"]
  np.testing.assert_allclose(k(own, 0), k(shared, 0), rtol=1e-6)  # seed 0's order
  assert float(jnp.max(jnp.abs(k(own, 1) - k(shared, 1)))) > 1e-5


def test_bad_inputs(digits):
  model = _mlp(digits)
  x, y = digits.x_train[:100], digits.y_train[:100]
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
    train.fit(model, x, y + 5, progress=False)
  with pytest.raises(ValueError, match="MLP expects 64 input features"):
    train.fit(model, np.zeros((100, 9, 9, 1), np.float32), y, progress=False)
  with pytest.raises(ValueError, match="CNN expects images"):
    train.fit(models.make("cnn", (8, 8, 1), 10), np.zeros((100, 8, 8), np.float32),
              y, progress=False)
  with pytest.raises(ValueError, match=r"non-finite training loss at epoch \d for seed\(s\) \[0, 4\]"):
    train.fit(model, x * 1e30, y, seeds=[0, 4], epochs=3, learning_rate=1e10,
              progress=False)
