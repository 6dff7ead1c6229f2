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


@pytest.mark.slow  # 10 s; the default suite runs seed_averaged_factors on an MLP
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


def test_stream_lineages_of_a_resnet_follow_its_padded_shortcuts(resnet8):
  # ResNet-8 ×½: streams of 8, 16, 32 channels; each stage's shortcut pads
  # the previous stream's channels into the middle of the wider one.
  ds, _, v, net = resnet8
  found = rainbow.stream_lineages(net, v, ds.x_train[:8])
  assert found.writers == (0, 2, 4, 6)  # the stem and each block's last conv
  assert found.norms == ((0, 0), (2, 2), (4, 4), (6, 6))  # stem_bn, each block's bn_1
  by_writers = {}
  for lineage in found.lineages:
    by_writers.setdefault(tuple(j for j, _ in lineage), []).append(dict(lineage))
  assert {k: len(v) for k, v in by_writers.items()} == {(0, 2, 4, 6): 8, (4, 6): 8, (6,): 16}
  for lin in by_writers[(0, 2, 4, 6)]:  # channel c of stage 0 is c + 4 in stage 1, c + 12 in 2
    assert lin[2] == lin[0] and lin[4] == lin[0] + 4 and lin[6] == lin[0] + 12
  for lin in by_writers[(4, 6)]:
    assert lin[6] == lin[4] + 8


def test_stream_draws_have_the_joint_moments_of_the_reference_lineages(resnet8):
  ds, _, v, net = resnet8
  found = rainbow.stream_lineages(net, v, ds.x_train[:8])
  s = 3000
  weights, affine = rainbow._stream_draw(jax.random.key(0), net, v, found, s)
  kernels, scales = net.kernels(v), net.norm_affine(v)
  members = [lin for lin in found.lineages if len(lin) == 4]

  def coords(ks, sc, lin):  # one lineage's vector: each writer's neuron, its BatchNorm's γ, β
    parts = []
    for j, c in lin:
      parts += [np.asarray(ks[j])[..., c].reshape(-1), np.asarray(sc[j])[:, c]]
    return np.concatenate(parts)

  ref = np.stack([coords(kernels, [np.stack(scales[j]) for j in range(len(scales))], lin)
                  for lin in members])
  drawn = np.concatenate([np.stack([coords(
      {j: weights[j][0][t] for j in found.writers},
      {i: np.stack([affine[i][0][t], affine[i][1][t]]) for i in affine}, lin)
      for lin in members]) for t in range(0, s, 10)])  # [S/10 · 8, D]
  # The model: weights zero-mean, each BatchNorm's (γ, β) around the
  # lineages' mean; the second moment about that mean is the reference's.
  d_neuron = [kernels[j].size // kernels[j].shape[-1] for j, _ in members[0]]
  is_affine = np.concatenate([np.r_[np.zeros(d), np.ones(2)] for d in d_neuron]).astype(bool)
  m = np.where(is_affine, ref.mean(0), 0.0)
  np.testing.assert_allclose(drawn.mean(0)[is_affine], m[is_affine], atol=0.03)
  want = (ref - m).T @ (ref - m) / len(ref)
  got = (drawn - m).T @ (drawn - m) / len(drawn)
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.08
  # Jointly: the stem's coordinates and the last block's covary as the
  # reference's do (independent draws would leave this block at 0).
  d0 = kernels[0].size // kernels[0].shape[-1] + 2
  cross_want, cross_got = want[:d0, -300:], got[:d0, -300:]
  assert np.linalg.norm(cross_want) > 0.1 * np.linalg.norm(want)
  assert np.linalg.norm(cross_got - cross_want) / np.linalg.norm(cross_want) < 0.15


def test_joint_stream_sampling_keeps_the_stream_kernel_of_identity_blocks():
  # A residual MLP whose blocks are identities plus noise: the stream is the
  # stem's output, so the generated networks' stream kernel (the Gram matrix
  # over inputs, averaged over samples) must equal the reference's.
  class Residual(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.Dense(48, use_bias=False, name="stem")(x.reshape(x.shape[0], -1))
      for b in range(2):
        u = nn.relu(nn.Dense(32, use_bias=False, name=f"in_{b}")(h))
        h = h + nn.Dense(48, use_bias=False, name=f"out_{b}",
                         kernel_init=nn.initializers.normal(1e-4))(u)
      return nn.Dense(10, use_bias=False, name="classifier")(h)

  ds = data.load("digits")
  x = jnp.asarray(ds.x_train[:400])
  m = Residual()
  v = m.init(jax.random.key(0), x[:2])
  net = network.from_linen(m, v, x[:2])
  s = 64
  g = rainbow.generate(jax.random.key(1), net, v, x, num_samples=s, streams=True,
                       progress=False)
  assert rainbow.stream_lineages(net, v, x).writers == (0, 2, 4)
  probe = x[:100]
  stream = lambda p: net.layer_inputs(p, probe)[-1]  # the classifier reads the stream
  k_ref = np.asarray(stream(v), np.float64) @ np.asarray(stream(v), np.float64).T
  k_gen = np.mean([np.asarray(h, np.float64) @ np.asarray(h, np.float64).T
                   for h in jax.vmap(stream)(g.params)], axis=0)
  assert np.linalg.norm(k_gen - k_ref) / np.linalg.norm(k_ref) < 0.1
  stem0 = net.kernels(train.select(g.params, 0))[0]
  assert not np.allclose(stem0, net.kernels(v)[0])  # the stem was resampled
