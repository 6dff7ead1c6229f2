"""The network adapter on models whose names, nesting and layers we did not choose."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rainbow_jax import network, spectra, svr

X = jax.random.normal(jax.random.key(1), (3, 10, 10, 2))


def _conv(x, k, stride=1, padding="SAME"):
  """XLA's convolution, NHWC / HWIO, as the independent forward pass."""
  return jax.lax.conv_general_dilated(x, k, (stride, stride), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _add(y, b):
  return y + b.reshape((1,) * (y.ndim - 1) + (-1,))


class DefaultNames(nn.Module):
  """Flax default names: sorting them would give Conv_0, Dense_0, Conv_1."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.relu(nn.Dense(5)(x))          # Dense_0, per pixel: a 1×1 "conv" between convs
    x = nn.relu(nn.Conv(3, (3, 3), strides=2, padding="VALID")(x))
    return nn.Dense(7)(x.reshape(x.shape[0], -1))


def test_linen_default_names_come_in_call_order_and_inputs_match_a_manual_forward():
  m = DefaultNames()
  v = m.init(jax.random.key(0), X)
  net = network.from_linen(m, v, X)
  assert net.names == ("Conv_0", "Dense_0", "Conv_1", "Dense_1")
  assert net.kinds == ("conv", "dense", "conv", "dense")
  p = v["params"]
  h0 = X
  h1 = jax.nn.relu(_add(_conv(h0, p["Conv_0"]["kernel"]), p["Conv_0"]["bias"]))
  h2 = jax.nn.relu(_add(h1 @ p["Dense_0"]["kernel"], p["Dense_0"]["bias"]))
  h3 = jax.nn.relu(_add(_conv(h2, p["Conv_1"]["kernel"], 2, "VALID"), p["Conv_1"]["bias"]))
  h3 = h3.reshape(3, -1)
  out = _add(h3 @ p["Dense_1"]["kernel"], p["Dense_1"]["bias"])
  got = net.layer_inputs(v, X)
  for a, b in zip(got, [h0, h1, h2, h3]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(net.apply(v, X), out, rtol=1e-5, atol=1e-5)
  assert len(jax.jit(net.layer_inputs, static_argnums=2)(v, X, 1)) == 2
  # kernels / with_kernels round trip, in call order, canonical layout.
  ks = net.kernels(v)
  assert [k.shape for k in ks] == [(3, 3, 2, 4), (4, 5), (3, 3, 5, 3), (48, 7)]
  v2 = net.with_kernels(v, [2 * k for k in ks], biases={3: jnp.zeros(7)})
  np.testing.assert_allclose(v2["params"]["Conv_1"]["kernel"], 2 * p["Conv_1"]["kernel"])
  np.testing.assert_allclose(v2["params"]["Dense_1"]["bias"], 0.0)
  back = net.with_kernels(v2, ks, biases={3: p["Dense_1"]["bias"]})
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, v)
  with pytest.raises(ValueError, match="Conv_1: kernel of shape"):
    net.with_kernels(v, {2: ks[2].T})
  # An edit of layer j's input equals running the rest on the edited input.
  half = net.apply(v, X, edits={1: lambda h: 0.5 * h})
  h2_half = jax.nn.relu(_add(0.5 * h1 @ p["Dense_0"]["kernel"], p["Dense_0"]["bias"]))
  h3_half = jax.nn.relu(_add(_conv(h2_half, p["Conv_1"]["kernel"], 2, "VALID"), p["Conv_1"]["bias"]))
  np.testing.assert_allclose(half, _add(h3_half.reshape(3, -1) @ p["Dense_1"]["kernel"],
                                        p["Dense_1"]["bias"]), rtol=1e-5, atol=1e-5)


class Residual(nn.Module):
  """A ResNet basic block, nested in a stage: two modules deep, BatchNorm."""

  features: int

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.Conv(self.features, (3, 3), use_bias=False, name="conv_a")(x)
    y = nn.BatchNorm(use_running_average=not train, name="bn_a")(y)
    y = nn.Conv(self.features, (3, 3), use_bias=False, name="conv_b")(nn.relu(y))
    y = nn.BatchNorm(use_running_average=not train, name="bn_b")(y)
    return nn.relu(x + y)


class Stage(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    return Residual(4, name="block")(x, train)


class ResNetish(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = True):
    x = nn.Conv(4, (3, 3), use_bias=False, name="stem")(x)
    x = Stage(name="stage1")(x, train)
    return nn.Dense(3, name="head")(jnp.mean(x, axis=(1, 2)))


def test_nested_residual_batchnorm_model_uses_running_statistics():
  m = ResNetish()
  v = m.init(jax.random.key(0), X)
  # Give the BatchNorms non-trivial statistics, as after training.
  _, upd = m.apply(v, 3 * X + 1, mutable=["batch_stats"])
  v = {"params": v["params"], "batch_stats": upd["batch_stats"]}
  net = network.from_linen(m, v, X)  # note: the model's default is train=True
  assert net.names == ("stem", "stage1/block/conv_a", "stage1/block/conv_b", "head")
  assert net.norms == ("stage1/block/bn_a", "stage1/block/bn_b")
  # Always inference mode, whatever flag the model is called with.
  np.testing.assert_allclose(net.apply(v, X), m.apply(v, X, train=False), rtol=1e-5,
                             atol=1e-5)
  p, bs = v["params"], v["batch_stats"]["stage1"]["block"]
  c = lambda a: a.reshape(1, 1, 1, -1)
  bn = lambda y, n: ((y - c(bs[n]["mean"])) / jnp.sqrt(c(bs[n]["var"]) + 1e-5)
                     * c(p["stage1"]["block"][n]["scale"]) + c(p["stage1"]["block"][n]["bias"]))
  h1 = _conv(X, p["stem"]["kernel"])
  h2 = jax.nn.relu(bn(_conv(h1, p["stage1"]["block"]["conv_a"]["kernel"]), "bn_a"))
  y = bn(_conv(h2, p["stage1"]["block"]["conv_b"]["kernel"]), "bn_b")
  h3 = jnp.mean(jax.nn.relu(h1 + y), axis=(1, 2))
  for a, b in zip(net.layer_inputs(v, X), [X, h1, h2, h3]):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


class NNXNet(nnx.Module):
  def __init__(self, rngs):
    self.convs = nnx.List([nnx.Conv(2, 4, (3, 3), rngs=rngs), nnx.Conv(4, 4, (3, 3), rngs=rngs)])
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.out = nnx.Linear(4, 5, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.convs[0](x)))
    x = nnx.relu(self.convs[1](x))
    return self.out(jnp.mean(x, axis=(1, 2)))


def test_nnx_model_call_order_inputs_and_vmap_over_seeds():
  model = NNXNet(nnx.Rngs(0))
  model(3 * X + 1)  # train mode once: BatchNorm statistics move
  v = network.nnx_variables(model)
  net = network.from_nnx(model, X)
  assert net.names == ("convs/0", "convs/1", "out") and net.norms == ("bn",)
  model.eval()
  np.testing.assert_allclose(jax.jit(net.apply)(v, X), model(X), rtol=1e-5, atol=1e-5)
  h = net.layer_inputs(v, X)
  np.testing.assert_allclose(h[1], nnx.relu(model.bn(model.convs[0](X))), rtol=1e-5,
                             atol=1e-5)
  assert [a.shape for a in h] == [(3, 10, 10, 2), (3, 10, 10, 4), (3, 4)]
  two = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), v)
  assert jax.vmap(net.apply, in_axes=(0, None))(two, X).shape == (2, 3, 5)
  ks = net.kernels(v)
  v2 = net.with_kernels(v, [k + 1 for k in ks])
  np.testing.assert_allclose(net.kernels(v2)[2], ks[2] + 1)


def test_bad_models_get_errors_that_name_the_layer():
  class Shared(nn.Module):
    @nn.compact
    def __call__(self, x):
      c = nn.Conv(2, (3, 3), padding="SAME")
      return c(c(x))

  x = jnp.ones((2, 4))
  with pytest.raises(ValueError, match="Conv_0 is a convolution called more than once"):
    network.from_linen(Shared(), Shared().init(jax.random.key(0), X), X)

  class Transposed(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.ConvTranspose(3, (2, 2), name="up")(x)

  with pytest.raises(ValueError, match="up .ConvTranspose. is a weight layer"):
    network.from_linen(Transposed(), Transposed().init(jax.random.key(0), X), X)

  class NoWeights(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.relu(x)

  with pytest.raises(ValueError, match="no weight layer"):
    network.from_linen(NoWeights(), {}, x)
  net = network.from_linen(DefaultNames(), DefaultNames().init(jax.random.key(0), X), X)
  with pytest.raises(ValueError, match="out of range"):
    net.layer_inputs(None, X, upto=9)


torch = pytest.importorskip("torch")


class _Basic(torch.nn.Module):
  """torchvision's BasicBlock, written here from its published structure."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = torch.nn.BatchNorm2d(cout)
    self.relu = torch.nn.ReLU()
    self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = torch.nn.BatchNorm2d(cout)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            torch.nn.BatchNorm2d(cout))


def _resnet18(width=8):
  torch.manual_seed(0)
  m = torch.nn.Module()
  m.conv1 = torch.nn.Conv2d(3, width, 7, 2, 3, bias=False)
  m.bn1 = torch.nn.BatchNorm2d(width)
  cin = width
  for i, mult in enumerate((1, 2, 4, 8)):
    stage = torch.nn.Sequential(_Basic(cin, width * mult, 1 if i == 0 else 2),
                                _Basic(width * mult, width * mult, 1))
    setattr(m, f"layer{i + 1}", stage)
    cin = width * mult
  m.fc = torch.nn.Linear(cin, 10)
  for mod in m.modules():  # trained-looking BatchNorm statistics
    if isinstance(mod, torch.nn.BatchNorm2d):
      with torch.no_grad():
        mod.weight.uniform_(0.5, 1.5)
        mod.running_var.uniform_(0.5, 2.0)
        mod.running_mean.normal_()
  return m


def test_torch_resnet18_weights_give_torch_spectra_and_fold_batchnorm():
  m = _resnet18()
  tw = network.from_torch(m)
  assert len(tw.kernels) == 21 and tw.names[0] == "conv1.weight" and tw.names[-1] == "fc.weight"
  assert "layer1.0.bn1.running_var" in tw.dropped and "fc.bias" in tw.dropped
  sd = m.state_dict()
  for name, k in zip(tw.names, tw.kernels):
    w = sd[name].numpy().astype(np.float64)
    w = w.reshape(w.shape[0], -1)
    ev_torch = np.linalg.svd(w, compute_uv=False) ** 2 / w.shape[0]
    ev, _ = spectra.weight_spectrum(k)
    np.testing.assert_allclose(np.asarray(ev)[:len(ev_torch)], ev_torch, rtol=2e-4, atol=1e-7)
  # The canonical conv kernel computes torch's convolution.
  x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
  with torch.no_grad():
    ref = m.conv1(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
  got = jax.lax.conv_general_dilated(x.transpose(0, 2, 3, 1), tw.kernels[0], (2, 2),
                                     [(3, 3), (3, 3)],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
  # Folding: conv with the folded kernel = torch's bn(conv(x)) up to the shift.
  folded = network.from_torch(m, fold_batchnorm=True)
  m.eval()
  with torch.no_grad():
    bn = m.bn1
    shift = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps))
    ref = (bn(m.conv1(torch.from_numpy(x))) - shift[None, :, None, None]).numpy()
  got = jax.lax.conv_general_dilated(x.transpose(0, 2, 3, 1), folded.kernels[0], (2, 2),
                                     [(3, 3), (3, 3)],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(got, ref.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
  assert np.allclose(folded.kernels[-1], tw.kernels[-1])  # fc has no BatchNorm after it


def test_torch_cnn_is_the_same_network_through_flax_and_svr_agrees():
  torch.manual_seed(0)
  tm = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                           torch.nn.Linear(4 * 8 * 8, 5))

  class Flax(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(4, (3, 3), padding="VALID")(x))
      return nn.Dense(5)(x.reshape(x.shape[0], -1))

  v = Flax().init(jax.random.key(0), X)
  net = network.from_linen(Flax(), v, X)
  tw = network.from_torch(tm)
  sd = tm.state_dict()
  v = net.with_kernels(v, tw.kernels, biases={0: jnp.asarray(sd["0.bias"].numpy()),
                                               1: jnp.asarray(sd["3.bias"].numpy())})
  with torch.no_grad():
    ref = tm(torch.from_numpy(np.array(X).transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(net.apply(v, X), ref, rtol=1e-4, atol=1e-4)
  # The SVR of the torch weights and of the same network in Flax agree.
  a = svr.svr(svr.from_flax(network.from_torch(tm).kernels)).adjacency
  b = svr.svr(svr.from_flax(net.kernels(v))).adjacency
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="no weight"):
    network.from_torch([np.zeros(3, np.float32)])


class _BNNet(nn.Module):
  """Conv–BN–ReLU, Conv–BN, a residual add, Dense: Flax's default names."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Conv(4, (3, 3))(x)))
    g = nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Conv(4, (3, 3))(h))
    return nn.Dense(3)(nn.relu(g + h).reshape(x.shape[0], -1))


def test_batch_stats_reestimation_matches_flax_training_mode():
  """`estimate_batch_stats` on one batch = Flax's own BatchNorm statistics in
  training mode; over several batches the first BatchNorm's statistics are
  the data's (numpy); vmapped over seeds."""
  m = _BNNet()
  x = jax.random.normal(jax.random.key(2), (50, 6, 6, 1)) * 3 + 1
  v = jax.jit(m.init)(jax.random.key(1), x)
  net = network.from_linen(m, v, x[:2])
  assert net.norms == ("BatchNorm_0", "BatchNorm_1")
  one = net.estimate_batch_stats(v, x, batch_size=50)
  _, upd = jax.jit(lambda v, x: m.apply(v, x, train=True, mutable=["batch_stats"]))(v, x)
  for name in net.norms:  # Flax's running average after one step from (0, 1), momentum 0.9
    theirs, ours = upd["batch_stats"][name], one["batch_stats"][name]
    np.testing.assert_allclose(np.asarray(theirs["mean"]) / 0.1, ours["mean"], atol=2e-5,
                               rtol=1e-4)
    np.testing.assert_allclose((np.asarray(theirs["var"]) - 0.9) / 0.1, ours["var"],
                               atol=2e-5, rtol=1e-4)
  several = net.estimate_batch_stats(v, x, batch_size=16)  # 4 batches, the last padded
  conv = jax.lax.conv_general_dilated(x, v["params"]["Conv_0"]["kernel"], (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  conv = np.asarray(conv, np.float64).reshape(-1, 4) + np.asarray(v["params"]["Conv_0"]["bias"])
  np.testing.assert_allclose(several["batch_stats"]["BatchNorm_0"]["mean"], conv.mean(0),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(several["batch_stats"]["BatchNorm_0"]["var"], conv.var(0),
                             rtol=1e-4, atol=1e-5)
  stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), v)
  both = jax.vmap(lambda w: net.estimate_batch_stats(w, x, batch_size=16))(stacked)
  np.testing.assert_allclose(both["batch_stats"]["BatchNorm_0"]["var"][1],
                             several["batch_stats"]["BatchNorm_0"]["var"], rtol=1e-6)
  # A residual add: both convs feed the classifier, so neither is a chain link.
  assert net.producers(v, x[:2]) == [(-1,), (0,), (0, 1)]
  assert net.consumers(v, x[:2]) == [(1, 2), (2,), ()]
  assert net.chain_links(v, x[:2]) == [False, False]


def test_a_network_rebuilt_for_another_seed_reuses_the_compiled_programs():
  """Networks built from equal linen modules (or NNX graph definitions),
  call arguments and variable shapes are equal: a program compiled for one
  serves the other (a network rebuilt per seed compiled every analysis
  again)."""
  import flax.linen as nn

  from rainbow_jax import evaluate, models

  ds_x = jax.random.normal(jax.random.key(0), (40, 8, 8, 1))
  y = jnp.zeros((40,), jnp.int32)
  model = models.make("mlp", (8, 8, 1), 10, widths=[16])
  v0, v1 = (model.init(jax.random.key(s), ds_x[:1]) for s in (0, 1))
  a, b = network.from_linen(model, v0, ds_x[:2]), network.from_linen(model, v1, ds_x[:2])
  assert a == b and hash(a) == hash(b)
  evaluate.accuracy(a, v0, ds_x, y)
  size = evaluate.accuracy._cache_size()
  evaluate.accuracy(b, v1, ds_x, y)
  assert evaluate.accuracy._cache_size() == size
  # Another width, another precision or another batch shape: another network.
  wider = models.make("mlp", (8, 8, 1), 10, widths=[32])
  assert network.from_linen(wider, wider.init(jax.random.key(0), ds_x[:1]), ds_x[:2]) != a
  assert a.with_precision("default") != a
  assert network.from_linen(model, v0, jnp.zeros((2, 8, 8, 1), jnp.bfloat16)) != a

  class Listed(nn.Module):  # a field that cannot be hashed: equal only to itself
    widths: list

    @nn.compact
    def __call__(self, h):
      return nn.Dense(self.widths[0])(h.reshape(h.shape[0], -1))

  m = Listed([4])
  c = network.from_linen(m, m.init(jax.random.key(0), ds_x[:1]), ds_x[:2])
  d = network.from_linen(m, m.init(jax.random.key(0), ds_x[:1]), ds_x[:2])
  assert c == c and c != d and len({c, d}) == 2
  # NNX: equal graph definitions (two seeds of one architecture) are equal.
  e, f = (network.from_nnx(NNXNet(nnx.Rngs(s)), X) for s in (0, 1))
  assert e == f and hash(e) == hash(f) and e != a
