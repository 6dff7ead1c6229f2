"""Layer-by-layer passes (issue 29): a network's forward pass cut at its
weight layers' inputs, run segment by segment, gives the inputs Flax's own
forward pass gives; rainbow sampling carried that way gives the networks of
passes that evaluate the whole networks; the generated networks' BatchNorm statistics
are the statistics of their inputs, measured by an interception of Flax's
BatchNorm calls in float64 numpy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rainbow_jax import data, models, network, rainbow, train


def _walk(net, v, x):
  """Every layer input by `Segments.advance`, cut after cut (one program)."""
  seg = network.segments(net, v, x)

  @jax.jit
  def walk(v, x):
    state, out = seg.start(x), []
    for k in range(len(net)):
      state, h = seg.advance(k, v, state)
      out.append(h)
    return out

  return walk(v, x)


def _flax_inputs(model, v, x, kinds):
  """Inputs of the modules of `kinds`, in call order, from Flax's forward pass."""
  got = []

  def capture(next_fun, args, kwargs, ctx):
    if ctx.method_name == "__call__" and isinstance(ctx.module, kinds):
      h = args[0]
      if isinstance(ctx.module, nn.DenseGeneral) and ctx.module.axis == (-2, -1):
        h = h.reshape(*h.shape[:-2], -1)  # an attention output reads heads × head_dim
      got.append(h)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    model.apply(v, x)
  return got


@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_segments_give_every_layer_input_of_flax_forward_pass(arch):
  x = jax.random.normal(jax.random.key(0), (6, 28, 28, 1))
  if arch == "resnet":  # BatchNorm, residual stream, parameter-free shortcuts
    m = models.ResNet(blocks=1, width=0.5)
    kinds = (models.PatchConv, nn.Dense)
  else:  # q, k, v read one input; class token, positions, LayerNorm
    m = models.ViT(patch=7, width=16, depth=2, heads=2)
    kinds = (models.PatchConv, nn.Dense, nn.DenseGeneral)
  v = m.init(jax.random.key(1), x)
  if arch == "resnet":  # statistics other than init's 0 / 1
    v = dict(v, batch_stats=jax.tree_util.tree_map(lambda a: a + 0.3, v["batch_stats"]))
  net = network.from_linen(m, v, x)
  want = _flax_inputs(m, v, x, kinds)
  assert len(want) == len(net)
  for k, (got, w) in enumerate(zip(_walk(net, v, x), want)):
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5, err_msg=net.names[k])


def test_segments_of_an_nnx_model_with_batchnorm():
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.c0 = nnx.Conv(1, 4, (3, 3), rngs=rngs)
      self.bn = nnx.BatchNorm(4, rngs=rngs)
      self.c1 = nnx.Conv(4, 4, (3, 3), rngs=rngs)
      self.out = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
      h = nnx.relu(self.bn(self.c0(x)))
      h = h + nnx.relu(self.c1(h))  # a skip around c1
      return self.out(jnp.mean(h, axis=(1, 2)))

  model = Net(nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (5, 8, 8, 1))
  model(2 * x + 1)  # train mode once: statistics move
  model.eval()
  v = network.nnx_variables(model)
  net = network.from_nnx(model, x)
  h0 = nnx.relu(model.bn(model.c0(x)))
  h1 = h0 + nnx.relu(model.c1(h0))
  for got, want in zip(_walk(net, v, x), [x, h0, jnp.mean(h1, axis=(1, 2))]):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _refuse(*args, **kwargs):
  raise ValueError("no cuts")


@pytest.fixture(scope="module")
def resnet8():
  """ResNet-8 ×½ at init on digits, its BatchNorm statistics those of the
  data (what a trained network carries)."""
  ds = data.load("digits")
  m = models.ResNet(blocks=1, width=0.5)
  v = m.init(jax.random.key(0), ds.x_train[:2])
  net = network.from_linen(m, v, ds.x_train[:2])
  v = net.estimate_batch_stats(v, ds.x_train)
  return ds, m, v, net


def test_layer_by_layer_rainbow_equals_passes_over_the_whole_networks(resnet8, monkeypatch):
  ds, _, v, net = resnet8
  # One batch, padded: batch-mode statistics are then the population's, so
  # both ways give the same networks (several batches: the statistics test
  # below).
  x = ds.x_train[:700]
  kw = dict(num_samples=2, batch_size=1000, progress=False)
  by_layer = rainbow.generate(jax.random.key(3), net, v, x, **kw)
  monkeypatch.setattr(network, "segments", _refuse)  # the fallback: whole networks each pass
  by_whole = rainbow.generate(jax.random.key(3), net, v, x, **kw)
  np.testing.assert_allclose(by_layer.r2, by_whole.r2, atol=1e-5)
  for a, b in zip(by_layer.alignments, by_whole.alignments):
    np.testing.assert_allclose(a, b, atol=1e-4 * float(jnp.abs(b).max()))
  for a, b in zip(jax.tree_util.tree_leaves(by_layer.params),
                  jax.tree_util.tree_leaves(by_whole.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_generated_batchnorm_statistics_are_those_of_their_inputs(resnet8):
  ds, m, v, net = resnet8
  x = ds.x_train[:500]
  g = rainbow.generate(jax.random.key(4), net, v, x, num_samples=2, batch_size=128,
                       progress=False)
  g1 = train.select(g.params, 1)
  inputs, stats = [], []

  def capture(next_fun, args, kwargs, ctx):
    if ctx.method_name == "__call__" and isinstance(ctx.module, nn.BatchNorm):
      inputs.append(np.asarray(args[0], np.float64).reshape(-1, args[0].shape[-1]))
      stats.append((ctx.module.variables["batch_stats"]["mean"],
                    ctx.module.variables["batch_stats"]["var"]))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    m.apply(g1, jnp.asarray(x))  # inference mode: every BatchNorm from its statistics
  assert len(inputs) == len(net.norms) == 7
  for h, (mean, var) in zip(inputs, stats):
    np.testing.assert_allclose(mean, h.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(var, h.var(0), rtol=1e-3, atol=1e-4)
  assert not np.allclose(stats[1][0], v["batch_stats"]["stage_0_block_0"]["bn_0"]["mean"],
                         atol=1e-3)  # a sampled layer's BatchNorm has new statistics


def test_seed_averaged_factors_layer_by_layer_equal_those_from_the_input(resnet8, monkeypatch):
  ds, _, v, net = resnet8
  x = ds.x_train[:200]
  leaves, tree = jax.tree_util.tree_flatten(v)
  keys = jax.random.split(jax.random.key(5), len(leaves))
  v1 = tree.unflatten([a + 0.05 * jax.random.normal(k, a.shape) * jnp.std(a)
                       for a, k in zip(leaves, keys)])
  by_layer = rainbow.seed_averaged_factors(net, [v, v1], x)
  monkeypatch.setattr(network, "segments", _refuse)  # the fallback: from the input each time
  from_input = rainbow.seed_averaged_factors(net, [v, v1], x)
  assert len(by_layer[1]) == len(net) - 2
  for a, b in zip(by_layer[1], from_input[1]):
    np.testing.assert_allclose(a, b, atol=1e-5)
  for a, b in zip(by_layer[0], from_input[0]):
    np.testing.assert_allclose(a.T @ a, b.T @ b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))
