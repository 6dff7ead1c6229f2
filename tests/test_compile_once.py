"""Programs compiled once without LLVM optimisation (`_compile.once`) give
the numbers of ordinarily compiled ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rainbow_jax import _compile, data, models, network, rainbow, train


def test_seed_init_equals_model_init_under_plain_jit():
  model = models.make("mlp", (8, 8, 1), 10)
  state = train.init(model, train.sgd(), [0, 3], (8, 8, 1))
  for k, seed in enumerate((0, 3)):
    init_key, data_key = jax.random.split(jax.random.key(seed))
    want = jax.jit(model.init)(init_key, jnp.zeros((1, 8, 8, 1)))["params"]
    for a, b in zip(jax.tree_util.tree_leaves(train.select(state.params, k)),
                    jax.tree_util.tree_leaves(want)):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.key_data(state.data_key[k]),
                                  jax.random.key_data(data_key))


def test_once_matches_jit_and_keeps_static_arguments():
  f = lambda x, n: jnp.sum(jnp.sin(x) ** n)
  x = jnp.linspace(0.0, 3.0, 1000)
  np.testing.assert_allclose(_compile.once(f, static_argnums=1)(x, 3), jax.jit(
      f, static_argnums=1)(x, 3), rtol=1e-6)


@pytest.mark.parametrize("layer", [0, 1])
def test_generated_layer_is_sample_kernel_with_the_layer_keys(layer):
  """`generate` draws every layer's normals in one program. Sampling one
  layer j alone (its input is the reference's, so its realignment is the
  identity), sample k is `sample_kernel` with key
  ``split(fold_in(key, j), S)[k]`` and the given factor."""
  ds = data.load("digits")
  model = models.make("mlp", ds.x_train.shape[1:], 10, widths=[16, 12])
  params = train.select(train.init(model, train.sgd(), [0], ds.x_train.shape[1:]).params, 0)
  net = network.from_linen(model, params, ds.x_train[:2])
  factors = rainbow.reference_factors([net.kernels(params)])
  key = jax.random.key(7)
  gen = rainbow.generate(key, net, params, ds.x_train[:300], num_samples=3, factors=factors,
                         layers=[layer], progress=False)
  keys = jax.random.split(jax.random.fold_in(key, layer), 3)
  drawn = jax.vmap(net.kernels)(gen.params)[layer]
  for k in range(3):
    want = rainbow.sample_kernel(keys[k], factors[layer], net.kernels(params)[layer].shape)
    np.testing.assert_allclose(drawn[k], want, rtol=1e-4, atol=1e-5)


def test_once_inside_another_jit_is_traced_into_it():
  inner = _compile.once(lambda x: jnp.cos(x) * 2.0)
  outer = jax.jit(lambda x: inner(x) + 1.0)
  np.testing.assert_allclose(outer(jnp.ones(4)), jnp.cos(1.0) * 2.0 + 1.0, rtol=1e-6)


def test_an_option_xla_no_longer_knows_is_dropped(monkeypatch):
  """A later XLA may remove an option of `_compile.QUICK`: `once` then
  compiles without it instead of failing."""
  monkeypatch.setattr(_compile, "QUICK", dict(_compile.QUICK, xla_cpu_no_such_option=True))
  monkeypatch.setattr(_compile, "_refused", set())
  f = _compile.once(lambda x: jnp.tanh(x) * 3.0)
  np.testing.assert_allclose(f(jnp.ones(5)), np.tanh(1.0) * 3.0, rtol=1e-6)
  if jax.default_backend() == "cpu":
    assert _compile._refused == {"xla_cpu_no_such_option"}
