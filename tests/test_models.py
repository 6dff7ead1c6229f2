"""Tutorial architectures: shapes, initialisation, layer order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rainbow_jax import models, network, train


def test_mlp_through_the_network_adapter():
  m = models.make("mlp", (28, 28, 1), 10)
  p = m.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  net = network.from_linen(m, p, x)
  h = net.layer_inputs(p, x)
  assert [t.shape for t in h] == [(4, 784), (4, 512), (4, 256)]
  w = [p[f"dense_{i}"]["kernel"] for i in range(3)]
  np.testing.assert_allclose(h[1], np.maximum(np.asarray(h[0]) @ np.asarray(w[0]), 0),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(m.apply({"params": p}, x), h[2] @ w[2], rtol=1e-5, atol=1e-5)


def test_cnn_shapes_and_order_survive_tree_maps():
  m = models.make("cnn", (28, 28, 1), 10)
  state = train.init(m, train.sgd(), [0, 1], (28, 28, 1))
  p = train.select(state.params, 0)
  net = network.from_linen(m, p, jnp.zeros((2, 28, 28, 1)))
  assert net.names == ("conv_0", "conv_1", "dense_2")
  assert [w.shape for w in net.kernels(p)] == [(5, 5, 1, 32), (5, 5, 32, 64), (4 * 4 * 64, 10)]
  h = net.layer_inputs(p, jnp.zeros((2, 28, 28, 1)))
  assert [t.shape for t in h] == [(2, 28, 28, 1), (2, 12, 12, 32), (2, 1024)]
  assert models.conv_output_size(28) == 12 and models.conv_output_size(12) == 4


def test_vgg_layers_pool_and_batch_norm():
  """`VGG` as the adapter sees it: 6 convs and the classifier in call order,
  the layer inputs halved by every max-pool, one BatchNorm per conv (none
  without), and `PatchConv` equal to XLA's convolution on the same
  parameters."""
  x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
  for bn in (True, False):
    m = models.VGG(stages=((4, 4), (8, 8), (8, 8)), batch_norm=bn)
    v = m.init(jax.random.key(0), x)
    net = network.from_linen(m, v, x)
    assert net.names == tuple(f"conv_{i}" for i in range(6)) + ("dense_6",)
    assert len(net.norms) == (6 if bn else 0)
    assert [h.shape[1] for h in net.layer_inputs(v, x)[:6]] == [28, 28, 14, 14, 7, 7]
    xla = models.VGG(stages=((4, 4), (8, 8), (8, 8)), batch_norm=bn, conv="xla")
    np.testing.assert_allclose(m.apply(v, x), xla.apply(v, x), rtol=1e-4, atol=1e-5)


def test_torch_init_is_uniform_with_bound_one_over_sqrt_fan_in():
  m = models.make("mlp", (28, 28, 1), 10, init="torch")
  w = np.asarray(m.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]["dense_0"]["kernel"])
  bound = 1 / np.sqrt(784)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
  assert np.var(w) == pytest.approx(bound**2 / 3, rel=0.02)  # uniform variance
  c = models.make("cnn", (28, 28, 1), 10, init="torch")
  k = np.asarray(c.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]["conv_1"]["kernel"])
  assert np.abs(k).max() <= 1 / np.sqrt(25 * 32)
  with pytest.raises(ValueError, match="init must be"):
    models.kernel_init("xavier")


@pytest.mark.parametrize("shape,k,s", [((3, 28, 28, 1), 5, 2), ((2, 12, 12, 5), 5, 2),
                                       ((2, 9, 7, 3), 3, 1)])
def test_patch_conv_equals_xla_conv(shape, k, s):
  import flax.linen as nn
  x = jax.random.normal(jax.random.key(0), shape)
  pc = models.PatchConv(4, k, s)
  p = pc.init(jax.random.key(1), x)
  ref = nn.Conv(4, (k, k), strides=s, padding="VALID", use_bias=False).apply(p, x)
  np.testing.assert_allclose(pc.apply(p, x), ref, rtol=1e-5, atol=1e-5)
  # Gradients agree too (training uses them).
  g1 = jax.grad(lambda q: jnp.sum(pc.apply(q, x) ** 2))(p)
  g2 = jax.grad(lambda q: jnp.sum(nn.Conv(4, (k, k), strides=s, padding="VALID",
                                          use_bias=False).apply(q, x) ** 2))(p)
  np.testing.assert_allclose(g1["params"]["kernel"], g2["params"]["kernel"], rtol=1e-4, atol=1e-4)


def test_a_conv_whose_kernel_no_longer_fits_says_which():
  """The tutorial's CNN (two 5×5 stride-2 convs) on 8×8 digits: the second
  conv sees 2×2 maps; the error names it instead of a reshape failure."""
  model = models.CNN(channels=(1, 32, 64))
  with pytest.raises(ValueError, match=r"conv_1: a 5×5 kernel does not fit its 2×2 input"):
    model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
