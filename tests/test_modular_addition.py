"""Modular addition: the generated task, the decoder-only transformer on
token ids, and the Fourier structure of its embedding (Nanda et al. 2023):
frequency power against analytic tables, and the known solution's
concentration on a few key frequencies after training."""

import jax
import numpy as np
import optax
import pytest

from rainbow_jax import data
from rainbow_jax import fourier
from rainbow_jax import models
from rainbow_jax import network
from rainbow_jax import train


def test_the_task_is_every_pair_once_with_its_sum():
  ds = data.modular_addition(7, train_fraction=0.4, seed=3)
  x = np.concatenate([ds.x_train, ds.x_test])
  y = np.concatenate([ds.y_train, ds.y_test])
  assert x.dtype == np.int32 and x.shape == (49, 3) and ds.num_classes == 7
  assert len(ds.x_train) == round(0.4 * 49)
  assert len({(a, b) for a, b, _ in x}) == 49 and set(x[:, 2]) == {7}
  np.testing.assert_array_equal(y, (x[:, 0] + x[:, 1]) % 7)
  with pytest.raises(ValueError, match="train_fraction"):
    data.modular_addition(7, train_fraction=1.0)


@pytest.mark.parametrize("p", [13, 16])
def test_frequency_power_of_analytic_tables(p):
  basis = fourier.fourier_basis(p)
  np.testing.assert_allclose(basis @ basis.T, np.eye(p), atol=1e-12)  # orthonormal
  t = np.arange(p)
  table = np.stack([3 * np.cos(2 * np.pi * 2 * t / p + 0.3), np.sin(2 * np.pi * 5 * t / p),
                    np.full(p, 0.5)], axis=1)
  fp = fourier.frequency_power(np.concatenate([table, np.ones((1, 3))]), p)  # an "=" row
  want = np.zeros(p // 2 + 1)
  want[0], want[2], want[5] = 0.25 * p, 9 * p / 2, p / 2  # Parseval
  np.testing.assert_allclose(fp.power, want / want.sum(), rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(fourier.key_frequencies(fp, 0.85), [2])
  np.testing.assert_array_equal(fourier.key_frequencies(fp, 1.0), [2, 5])
  # White noise spreads evenly: about 2/p per frequency.
  noise = np.random.default_rng(0).normal(size=(p, 4000))
  share = np.asarray(fourier.frequency_power(noise).power)[1:(p - 1) // 2 + 1]
  np.testing.assert_allclose(share, 2 / p, rtol=0.1)
  with pytest.raises(ValueError, match="p = 40"):
    fourier.frequency_power(table, 40)


@pytest.mark.slow
def test_a_trained_embedding_concentrates_on_few_frequencies():
  # Grokking's timing varies from seed to seed (900 to over 1 500 steps
  # here), so three seeds train as one program: one must generalise, and
  # every embedding must have moved its power onto a few frequencies (weight
  # decay drives that before the test accuracy jumps). About 40 s on 2 CPU
  # cores, so in the slow set.
  p = 23
  ds = data.modular_addition(p, train_fraction=0.6, seed=0)
  model = models.Transformer(vocab=p + 1, num_classes=p, width=48, heads=4)
  tx = optax.adamw(3e-3, b1=0.9, b2=0.98, weight_decay=1.0)
  state, _ = train.fit(model, ds.x_train, ds.y_train, seeds=[0, 1, 2], epochs=1500,
                       batch_size=len(ds.x_train), tx=tx, progress=False)
  params = [train.select(state.params, k) for k in range(3)]
  net = network.from_linen(model, params[0], ds.x_train[:2])
  assert net.kinds[0] == "embedding" and net.layers[0].kernel_shape == (p + 1, 48)
  fit = np.asarray(train.accuracy(state.params, ds.x_train, ds.y_train, model=model))
  test = np.asarray(train.accuracy(state.params, ds.x_test, ds.y_test, model=model))
  assert np.all(fit > 99.9) and test.max() > 90, (fit, test)
  top = lambda fp: float(np.sort(np.asarray(fp.power)[1:])[-4:].sum())
  for k, v in enumerate(params):
    init = model.init(jax.random.key(k), ds.x_train[:2])["params"]
    before = top(fourier.frequency_power(net.kernels(init)[0], p))
    after = fourier.frequency_power(net.kernels(v)[0], p)
    # 4 of the 11 frequencies hold about 4/11 of the power at init.
    assert before < 0.55 and top(after) > before + 0.25, (k, before, top(after))
  best = fourier.frequency_power(net.kernels(params[int(np.argmax(test))])[0], p)
  assert top(best) > 0.85 and len(fourier.key_frequencies(best, 0.8)) <= 4
