"""Transformers through the adapter: attention projections, embeddings,
depthwise convolutions and shared weights, each checked against something
the adapter does not compute — a capture of our own with Flax's method
interception, attention written out in float64 numpy, PyTorch's
``nn.MultiheadAttention``, numpy's SVDs and weightwatcher."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rainbow_jax import models
from rainbow_jax import moments
from rainbow_jax import network
from rainbow_jax import similarity
from rainbow_jax import spectra

IMAGES = jax.random.normal(jax.random.key(0), (6, 8, 8, 1))


def _vit():
  m = models.ViT(patch=4, width=16, depth=2, heads=4, mlp=24)
  return m, m.init(jax.random.key(1), IMAGES)


def test_vit_layer_inputs_equal_an_intercept_capture_in_call_order():
  m, v = _vit()
  captured = []

  def capture(next_fun, args, kwargs, ctx):
    mod = ctx.module
    if ctx.method_name == "__call__" and isinstance(
        mod, (nn.Dense, nn.DenseGeneral, models.PatchConv)):
      h = args[0]
      if isinstance(mod, nn.DenseGeneral) and mod.axis == (-2, -1):
        h = h.reshape(*h.shape[:-2], -1)  # the output projection reads heads × head_dim
      captured.append(("/".join(mod.scope.path), h))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(capture):
    want_out = m.apply(v, IMAGES)
  net = network.from_linen(m, v, IMAGES)  # no warning for the class token and positions
  assert net.names == tuple(name for name, _ in captured)
  assert net.kinds == ("conv",) + ("attention",) * 4 + ("dense",) * 2 + (
      "attention",) * 4 + ("dense",) * 3
  assert [l.heads for l in net.layers[1:5]] == [4] * 4
  for got, (name, want) in zip(net.layer_inputs(v, IMAGES), captured):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)
  np.testing.assert_allclose(net.apply(v, IMAGES), want_out, rtol=1e-6, atol=1e-6)


class _NNXBlock(nnx.Module):
  def __init__(self, rngs):
    self.embed = nnx.Embed(13, 16, rngs=rngs)
    self.norm = nnx.LayerNorm(16, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(4, 16, decode=False, rngs=rngs)
    self.up = nnx.Linear(16, 32, rngs=rngs)
    self.down = nnx.Linear(32, 16, rngs=rngs)
    self.head = nnx.Linear(16, 13, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed(tokens)
    y = self.norm(x)
    x = x + self.attention(y)
    x = x + self.down(nnx.gelu(self.up(self.norm(x))))
    return self.head(x)


def test_nnx_attention_block_inputs_equal_a_capture_of_the_module_calls(monkeypatch):
  model = _NNXBlock(nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(2), (5, 9), 0, 13)
  net = network.from_nnx(model, tokens)
  variables = network.nnx_variables(model)
  got = net.layer_inputs(variables, tokens)
  captured = []
  for cls in (nnx.Embed, nnx.LinearGeneral, nnx.Linear):
    def spy(self, x, *a, _call=cls.__call__, **k):
      captured.append(x)
      return _call(self, x, *a, **k)
    monkeypatch.setattr(cls, "__call__", spy)
  want_out = model(tokens)
  monkeypatch.undo()
  assert net.names == ("embed", "attention/query", "attention/key", "attention/value",
                       "attention/out", "up", "down", "head")
  assert net.kinds[0] == "embedding" and net.layers[0].kernel_shape == (13, 16)
  assert len(captured) == len(got)
  np.testing.assert_array_equal(got[0], jax.nn.one_hot(captured[0], 13))
  np.testing.assert_allclose(got[4], captured[4].reshape(5, 9, 16), rtol=1e-6, atol=1e-6)
  for g, c in zip(got[1:4] + got[5:], captured[1:4] + captured[5:]):
    np.testing.assert_allclose(g, c, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(net.apply(variables, tokens), want_out, rtol=1e-6, atol=1e-6)
  # An edit of the one-hot input goes through the table: one-hot rows @ table.
  swap = lambda h: jnp.roll(h, 1, axis=-1)  # token t read as t + 1
  np.testing.assert_allclose(net.apply(variables, tokens, edits={0: swap}),
                             model((tokens + 1) % 13), rtol=1e-5, atol=1e-5)


def _attention_np(x, kernels, biases, heads):
  """Multi-head attention from canonical [d, d] matrices, in float64."""
  n, t, d = x.shape
  hd = d // heads
  split = lambda h: h.reshape(n, t, heads, hd).transpose(0, 2, 1, 3)
  q, k, v = (split(x @ w + b) for w, b in zip(kernels[:3], biases[:3]))
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
  a = np.exp(logits - logits.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  return (a @ v).transpose(0, 2, 1, 3).reshape(n, t, d) @ kernels[3] + biases[3]


def test_attention_matrices_reproduce_flax_and_torch_attention():
  torch = pytest.importorskip("torch")
  d, heads = 24, 4
  x = jax.random.normal(jax.random.key(3), (3, 7, d))

  class Attn(nn.Module):
    @nn.compact
    def __call__(self, h):
      return nn.MultiHeadDotProductAttention(heads, name="mha")(h, h)

  m = Attn()
  v = m.init(jax.random.key(4), x)
  v = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(5), a.shape),
                             v)  # non-zero biases
  net = network.from_linen(m, v, x)
  assert [l.kernel_shape for l in net.layers] == [(d, d)] * 4
  assert [l.stored_shape for l in net.layers] == [(d, heads, d // heads)] * 3 + [
      (heads, d // heads, d)]
  ks = [np.asarray(k, np.float64) for k in net.kernels(v)]
  bs = [np.asarray(b, np.float64) for b in net.biases(v)]
  want = _attention_np(np.asarray(x, np.float64), ks, bs, heads)
  np.testing.assert_allclose(m.apply(v, x), want, rtol=1e-4, atol=1e-5)
  # The same weights in torch's nn.MultiheadAttention.
  mha = torch.nn.MultiheadAttention(d, heads, batch_first=True).eval()
  t = lambda a: torch.from_numpy(np.array(a, np.float32))
  with torch.no_grad():
    mha.in_proj_weight.copy_(t(np.concatenate([k.T for k in ks[:3]], axis=0)))
    mha.in_proj_bias.copy_(t(np.concatenate(bs[:3])))
    mha.out_proj.weight.copy_(t(ks[3].T))
    mha.out_proj.bias.copy_(t(bs[3]))
    xt = t(np.asarray(x))
    theirs = mha(xt, xt, xt, need_weights=False)[0].numpy()
  np.testing.assert_allclose(theirs, want, rtol=1e-4, atol=1e-5)
  # And from_torch reads torch's packed weights back into the same matrices.
  tw = network.from_torch(mha)
  assert tw.kinds == ("attention",) * 4
  for ours, back in zip(ks, tw.kernels):
    np.testing.assert_allclose(np.asarray(back), ours, rtol=1e-6, atol=1e-7)
  # with_kernels writes the canonical matrices back into the stored layout.
  doubled = net.with_kernels(v, [2 * k for k in net.kernels(v)])
  np.testing.assert_allclose(doubled["params"]["mha"]["out"]["kernel"],
                             2 * v["params"]["mha"]["out"]["kernel"])


def test_a_shared_layer_appears_once_with_the_inputs_of_every_call():
  class Shared(nn.Module):
    @nn.compact
    def __call__(self, x):
      first = nn.Dense(8, name="first")(x)
      shared = nn.Dense(8, name="shared")
      return nn.Dense(3, name="last")(shared(jnp.tanh(shared(first))))

  x = jax.random.normal(jax.random.key(6), (5, 4))
  m = Shared()
  v = m.init(jax.random.key(7), x)
  net = network.from_linen(m, v, x)
  assert net.names == ("first", "shared", "last") and net.layers[1].calls == 2
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v["params"])
  h1 = np.asarray(x, np.float64) @ p["first"]["kernel"] + p["first"]["bias"]
  dense = lambda h: h @ p["shared"]["kernel"] + p["shared"]["bias"]
  h2 = np.tanh(dense(h1))
  ins = net.layer_inputs(v, x)
  assert ins[1].shape == (5, 2, 8) and net.layers[1].input_shape == (5, 2, 8)
  np.testing.assert_allclose(ins[1][:, 0], h1, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ins[1][:, 1], h2, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ins[2], dense(h2), rtol=1e-6, atol=1e-6)
  # An edit of the shared layer applies at both calls.
  edited = net.apply(v, x, edits={1: lambda h: 0.5 * h})
  h2e = np.tanh(dense(0.5 * h1))
  want = dense(0.5 * h2e) @ p["last"]["kernel"] + p["last"]["bias"]
  np.testing.assert_allclose(edited, want, rtol=1e-5, atol=1e-6)
  # Its moments count both calls' inputs as samples of the one layer.
  mom = moments.layer_moments(net, v, [x])
  both = np.asarray(ins[1], np.float64).reshape(-1, 8)
  assert int(mom.count[1]) == 10
  np.testing.assert_allclose(mom.mean[1], both.mean(0), rtol=1e-5, atol=1e-6)


def test_depthwise_conv_spectra_are_the_per_group_svds():
  class Depthwise(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.Conv(6, (3, 3), feature_group_count=3, name="grouped")(x)
      x = nn.Conv(6, (3, 3), feature_group_count=6, name="depthwise")(x)
      return nn.Dense(2, name="head")(x.mean(axis=(1, 2)))

  x = jax.random.normal(jax.random.key(8), (4, 9, 9, 3))
  m = Depthwise()
  v = m.init(jax.random.key(9), x)
  net = network.from_linen(m, v, x)
  assert [l.groups for l in net.layers] == [3, 6, 1]
  assert net.layers[0].kernel_shape == (3, 3, 3, 6) and net.layers[0].stored_shape == (
      3, 3, 1, 6)
  ks = net.kernels(v)
  # The block-diagonal kernel is the same operator: an ungrouped conv with it
  # gives the grouped conv's output.
  dense = lax_conv = jax.lax.conv_general_dilated(
      x, ks[0], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision="highest")
  grouped = nn.Conv(6, (3, 3), feature_group_count=3).apply(
      {"params": v["params"]["grouped"]}, x)
  np.testing.assert_allclose(dense, grouped, rtol=1e-5, atol=1e-5)
  del lax_conv
  for layer, k in zip(net.layers[:2], ks[:2]):
    stored = np.asarray(v["params"][layer.name]["kernel"], np.float64)  # [3, 3, cin/g, 6]
    per_out = 6 // layer.groups
    blocks = [stored[..., g * per_out:(g + 1) * per_out].reshape(-1, per_out).T
              for g in range(layer.groups)]  # each [C_out/g, 3·3·C_in/g]
    want = np.sort(np.concatenate([np.linalg.svd(b, compute_uv=False) for b in blocks]))
    got = np.linalg.svd(np.asarray(spectra.weight_matrix(k), np.float64), compute_uv=False)
    np.testing.assert_allclose(np.sort(got)[-len(want):], want, rtol=1e-5, atol=1e-6)
    ev, _ = spectra.weight_spectrum(k)
    np.testing.assert_allclose(np.sort(np.asarray(ev))[-len(want):], want ** 2 / 6,
                               rtol=1e-4, atol=1e-6)
  # Writing the canonical kernels back is exact; entries outside the groups
  # cannot be held and are dropped.
  back = net.with_kernels(v, [k + 1.0 for k in ks])
  np.testing.assert_allclose(back["params"]["grouped"]["kernel"],
                             v["params"]["grouped"]["kernel"] + 1.0)


def test_token_moments_with_a_padding_mask_and_class_token_features():
  rng = np.random.default_rng(0)
  h = rng.normal(size=(6, 5, 4)).astype(np.float32)
  mask = rng.uniform(size=(6, 5)) > 0.3
  st = moments.update(moments.init([4]), [h], mask=jnp.asarray(mask))
  rows = h[mask].astype(np.float64)
  assert int(st.count[0]) == mask.sum()
  np.testing.assert_allclose(st.mean[0], rows.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(moments.covariance(st, 0, centered=True), np.cov(rows.T, bias=True),
                             rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match=r"mask of shape \(6, 4\)"):
    moments.update(moments.init([4]), [h], mask=jnp.ones((6, 4), bool))
  np.testing.assert_array_equal(similarity.features(h, "cls"), h[:, 0])
  np.testing.assert_allclose(similarity.features(h, "mean"), h.mean(1), rtol=1e-6)
  assert similarity.features(h, "positions").shape == (30, 4)


def test_transformer_projection_alphas_equal_weightwatchers():
  torch = pytest.importorskip("torch")
  ww = pytest.importorskip("weightwatcher")
  import logging
  logging.getLogger("weightwatcher").setLevel(logging.ERROR)
  torch.manual_seed(0)
  layer = torch.nn.TransformerEncoderLayer(128, 4, dim_feedforward=384, batch_first=True,
                                           dropout=0.0).eval()
  rng = np.random.default_rng(1)
  with torch.no_grad():  # heavy-tailed weights, as trained ones are
    for p in (layer.self_attn.out_proj.weight, layer.linear1.weight, layer.linear2.weight):
      p.copy_(torch.from_numpy(rng.standard_t(3, size=tuple(p.shape)).astype(np.float32)))
  tw = network.from_torch(layer)
  ours = dict(zip(tw.names, tw.kernels))
  details = ww.WeightWatcher(model=layer).analyze(plot=False, randomize=False)
  names = {"self_attn.out_proj": "self_attn.out_proj.weight", "linear1": "linear1.weight",
           "linear2": "linear2.weight"}
  seen = 0
  for _, row in details.iterrows():
    key = names.get(row["longname"])
    if key is None:
      continue
    seen += 1
    fit = spectra.power_law(spectra.esd(ours[key]))
    np.testing.assert_allclose(float(fit.alpha), row["alpha"], rtol=1e-3, err_msg=key)
    np.testing.assert_allclose(float(fit.xmin), row["xmin"], rtol=1e-4, err_msg=key)
  assert seen == 3


def test_recurrent_scans_get_an_error_that_names_the_layer():
  class Recurrent(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3)(nn.RNN(nn.SimpleCell(16))(x)[:, -1])

  x = jnp.ones((4, 5, 8))
  m = Recurrent()
  with pytest.raises(ValueError, match="SimpleCell_0/i .Dense. is called inside a lifted"):
    network.from_linen(m, m.init(jax.random.key(0), x), x)


class _ConvNeXtBlock(nn.Module):
  """ConvNeXt's block (Liu et al. 2022): depthwise 7×7 conv, LayerNorm,
  pointwise MLP, residual add; a stem and a classifier around it."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (2, 2), strides=2, name="stem")(x)
    h = nn.Conv(8, (7, 7), feature_group_count=8, padding="SAME", name="depthwise")(x)
    h = nn.Dense(16, name="pw_up")(nn.LayerNorm()(h))
    x = x + nn.Dense(8, name="pw_down")(nn.gelu(h))
    return nn.Dense(10, name="head")(x.mean(axis=(1, 2)))


def test_a_convnext_block_keeps_its_depthwise_conv_out_of_rainbow_and_clipping():
  from rainbow_jax import rainbow

  x = jax.random.normal(jax.random.key(10), (64, 8, 8, 1))
  y = jnp.arange(64) % 10
  m = _ConvNeXtBlock()
  v = m.init(jax.random.key(11), x)
  net = network.from_linen(m, v, x[:2])
  assert net.names == ("stem", "depthwise", "pw_up", "pw_down", "head")
  assert net.layers[1].groups == 8 and net.layers[1].kernel_shape == (7, 7, 8, 8)
  # depthwise → pw_up and pw_up → pw_down are chain links; only the second
  # may be resampled: the first would give the depthwise conv new channels.
  assert net.chain_links(v, x[:2]) == [False, True, True, False]
  gen = rainbow.generate(jax.random.key(0), net, v, x, num_samples=2, progress=False)
  want = net.kernels(v)[1]  # the depthwise kernel is the reference's, untouched
  for s in range(2):
    got = net.kernels(jax.tree_util.tree_map(lambda a: a[s], gen.params))[1]
    np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="grouped convolution"):
    rainbow.generate(jax.random.key(0), net, v, x, layers=[1], progress=False)
  with pytest.raises(ValueError, match="depthwise.*grouped convolution"):
    spectra.clip_sweep(net, v, 1, jnp.eye(392), [1], x, y)


def test_layer_moments_reads_sequences_as_tokens_their_mean_or_class_token():
  m, v = _vit()
  net = network.from_linen(m, v, IMAGES)
  ins = [np.asarray(h, np.float64) for h in net.layer_inputs(v, IMAGES)]
  j = net.names.index("block_1/mlp_down")  # [6, 5, 24]
  for mode, fold in (("tokens", lambda h: h.reshape(-1, h.shape[-1])),
                     ("mean", lambda h: h.mean(1)), ("cls", lambda h: h[:, 0])):
    st = moments.layer_moments(net, v, [IMAGES], sequences=mode)
    want = fold(ins[j])
    assert int(st.count[j]) == len(want)
    np.testing.assert_allclose(moments.covariance(st, j), want.T @ want / len(want),
                               rtol=1e-4, atol=1e-6)
    assert int(st.count[0]) == 6 * 8 * 8  # conv maps keep positions as samples
  with pytest.raises(ValueError, match="sequences"):
    moments.layer_moments(net, v, [IMAGES], sequences="first")


def test_a_bare_layer_is_a_model_and_remat_gets_the_lifted_transform_error():
  x = jnp.ones((4, 5))
  dense = nn.Dense(3)
  v = dense.init(jax.random.key(0), x)
  net = network.from_linen(dense, v, x)
  assert len(net) == 1 and net.layers[0].kernel_shape == (5, 3)
  np.testing.assert_allclose(net.apply(v, x), dense.apply(v, x), rtol=1e-6)

  class Remat(nn.Module):
    @nn.compact
    def __call__(self, h):
      return nn.Dense(2)(nn.remat(nn.Dense)(4)(h))

  m = Remat()
  with pytest.raises(ValueError, match="CheckpointDense_0 .Dense. is called inside a lifted"):
    network.from_linen(m, m.init(jax.random.key(1), x), x)
