"""Spectra, Marchenko–Pastur, clipping and rainbow sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from rainbow_jax import data, evaluate, models, network, rainbow, spectra, train


def test_marchenko_pastur_edges_density_and_learned_components():
  n, d = 600, 200
  w = np.random.default_rng(0).uniform(-1, 1, (n, d)) / np.sqrt(d)  # torch init
  kernel = jnp.asarray(w.T, jnp.float32)  # Flax layout [in, out]
  ev, vecs = spectra.weight_spectrum(kernel)
  assert ev.shape == (d,) and vecs.shape == (d, d)
  np.testing.assert_allclose(np.sort(np.asarray(ev))[::-1], np.asarray(ev), rtol=1e-6)
  law = spectra.layer_law(kernel, "torch")
  assert law.variance == pytest.approx(1 / (3 * d))
  ev = np.asarray(ev, np.float64)
  assert law.lower * 0.9 < ev.min() and ev.max() < law.upper * 1.1
  assert int(spectra.learned_components(ev, law, margin=0.05)) == 0
  # The density integrates to min(1, 1/γ), and the eigenvalues follow it.
  for g in (0.3, 2.5):
    m = spectra.marchenko_pastur(100, int(100 * g), 2.0)
    mass = scipy.integrate.quad(m.pdf, m.lower, m.upper, limit=200)[0]
    assert mass == pytest.approx(min(1.0, 1.0 / g), rel=1e-3)
  cdf = lambda x: scipy.integrate.quad(law.pdf, law.lower, min(x, law.upper), limit=200)[0]
  assert scipy.stats.kstest(ev, np.vectorize(cdf)).pvalue > 1e-3
  # Three planted directions stand out above the edge.
  rng = np.random.default_rng(1)
  spikes = np.linalg.qr(rng.normal(size=(d, 3)))[0].T * np.array([[3.0], [2.0], [1.5]])
  planted = w + rng.normal(size=(n, 3)) @ spikes / np.sqrt(d) * 2
  ev2, _ = spectra.weight_spectrum(jnp.asarray(planted.T, jnp.float32))
  assert int(spectra.learned_components(ev2, law, margin=0.05)) == 3
  with pytest.raises(ValueError, match="init"):
    spectra.init_variance("he", 3)
  with pytest.raises(ValueError, match="variance"):
    spectra.marchenko_pastur(3, 4, 0.0)


@pytest.fixture(scope="module")
def trained():
  ds = data.load("digits")
  model = models.make("mlp", ds.x_train.shape[1:], ds.num_classes, widths=[64, 32])
  state, hist = train.fit(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test, seeds=[0, 1],
                          epochs=15, progress=False)
  return ds, network.from_linen(model, train.select(state.params, 0), ds.x_train[:2]), state, hist


def test_clip_sweep_full_rank_is_unclipped_and_matches_one_by_one(trained):
  ds, model, state, hist = trained
  p = train.select(state.params, 0)
  kernels = model.kernels(p)
  _, basis = spectra.weight_spectrum(kernels[1])  # [32, 64]: rank 32 of fan-in 64
  full = np.asarray(jnp.eye(64))  # a complete basis of the input
  acc = np.asarray(spectra.clip_sweep(model, p, 1, full, [0, 64], ds.x_test, ds.y_test))
  np.testing.assert_allclose(acc[1], hist.test_accuracy[-1][0], atol=1e-4)
  # Rank 0 zeroes the logits: every prediction is class 0.
  assert acc[0] == pytest.approx(100 * np.mean(ds.y_test == 0), abs=1e-4)
  ranks = [1, 5, 32]
  sweep = np.asarray(spectra.clip_sweep(model, p, 1, basis, ranks, ds.x_test, ds.y_test))
  for r, a in zip(ranks, sweep):  # independent: project the activations in numpy
    b = np.asarray(basis[:r], np.float64)
    h = np.asarray(model.layer_inputs(p, jnp.asarray(ds.x_test))[1], np.float64)
    h2 = np.maximum(h @ b.T @ b @ np.asarray(kernels[1], np.float64), 0)
    logits = h2 @ np.asarray(kernels[2], np.float64)
    assert a == pytest.approx(100 * np.mean(logits.argmax(1) == ds.y_test), abs=0.2)
  # The weight spectrum has rank 32: clipping to all of it changes nothing.
  assert sweep[-1] == pytest.approx(hist.test_accuracy[-1][0], abs=1e-4)
  with pytest.raises(ValueError, match="ranks"):
    spectra.clip_sweep(model, p, 1, basis, [40], ds.x_test, ds.y_test)
  # Two bases of different sizes in one pass: each as swept alone.
  both = spectra.clip_sweep(model, p, 1, [full, basis], [[0, 64], ranks], ds.x_test,
                            jnp.asarray(ds.y_test))
  np.testing.assert_array_equal(both[0], acc)
  np.testing.assert_array_equal(both[1], sweep)
  for axis in ("vmap", "map"):  # ranks stacked or in turn: the same counts
    np.testing.assert_array_equal(spectra.clip_sweep(
        model, p, 1, basis, ranks, ds.x_test, ds.y_test, stack_axis=axis), sweep)
  with pytest.raises(ValueError, match="stack_axis"):
    spectra.clip_sweep(model, p, 1, basis, ranks, ds.x_test, ds.y_test, stack_axis="pmap")
  with pytest.raises(ValueError, match="rank lists"):
    spectra.clip_sweep(model, p, 1, [full, basis], [ranks], ds.x_test, ds.y_test)
  with pytest.raises(ValueError, match=r"ranks\[1\]"):
    spectra.clip_sweep(model, p, 1, [full, basis], [ranks, [40]], ds.x_test, ds.y_test)


def test_clip_conv_kernel_on_channels_equals_projecting_the_input():
  model = models.make("cnn", (20, 20, 3), 4, widths=[5, 6])
  p = model.init(jax.random.key(0), jnp.zeros((1, 20, 20, 3)))["params"]
  x = jax.random.normal(jax.random.key(1), (2, 20, 20, 3))
  net = network.from_linen(model, p, x)
  k = net.kernels(p)[0]
  basis = jnp.linalg.qr(jax.random.normal(jax.random.key(2), (3, 3)))[0].T
  clipped = net.with_kernels(p, {0: spectra.clip_kernel(k, basis, 2)})
  proj = np.asarray(basis[:2]).T @ np.asarray(basis[:2])
  np.testing.assert_allclose(model.apply({"params": clipped}, x),
                             model.apply({"params": p}, jnp.asarray(np.asarray(x) @ proj)),
                             rtol=1e-4, atol=1e-5)


def test_sampled_rows_have_the_reference_covariance():
  rng = np.random.default_rng(0)
  d = 12
  c = rng.normal(size=(d, d))
  cov = c @ c.T / d + 0.1 * np.eye(d)
  # A reference layer whose rows are already Gaussian with covariance `cov`.
  ref = rng.multivariate_normal(np.zeros(d), cov, size=4000).astype(np.float32)
  f = rainbow.weight_factor([jnp.asarray(ref)])
  np.testing.assert_allclose(np.asarray(f.T @ f), ref.T.astype(np.float64) @ ref / 4000,
                             rtol=1e-3, atol=1e-4)
  k = rainbow.sample_kernel(jax.random.key(0), f, (d, 20000))  # Flax [in, out]
  rows = np.asarray(k, np.float64).T
  emp = rows.T @ rows / rows.shape[0]
  assert np.linalg.norm(emp - cov) / np.linalg.norm(cov) < 0.05
  # …and Gaussian: each coordinate standardised passes a normality test.
  z = rows[:, 0] / np.sqrt(cov[0, 0])
  assert scipy.stats.kstest(z[:5000], "norm").pvalue > 1e-3


def test_generate_without_sampling_is_the_reference(trained):
  ds, model, state, hist = trained
  p = train.select(state.params, 0)
  g = rainbow.generate(jax.random.key(0), model, p, ds.x_train, num_samples=2, layers=[],
                       progress=False)
  np.testing.assert_allclose(np.asarray(g.r2), 1.0, atol=1e-4)  # r² of a network with itself
  h = model.layer_inputs(p, jnp.asarray(ds.x_train))  # the alignment data
  for j, a in enumerate(g.alignments):  # A φ = φ (dead ReLUs leave A free off the data)
    hj = np.asarray(h[j + 1])
    assert np.linalg.norm(hj @ np.asarray(a[0]).T - hj) < 1e-3 * np.linalg.norm(hj)
  acc = np.asarray(evaluate.accuracy(model, g.params, ds.x_test, ds.y_test, stacked=True))
  np.testing.assert_allclose(acc, hist.test_accuracy[-1][0], atol=0.2)


def test_rainbow_samples_work_and_can_be_wider(trained):
  ds, model, state, _ = trained
  p = train.select(state.params, 0)
  g = rainbow.generate(jax.random.key(1), model, p, ds.x_train, num_samples=3, progress=False)
  acc = np.asarray(evaluate.accuracy(model, g.params, ds.x_test, ds.y_test, stacked=True))
  assert acc.shape == (3,) and np.all(acc > 60), acc  # chance is 10 %
  assert np.all(np.asarray(g.r2) > 0.5)
  wide = models.make("mlp", ds.x_train.shape[1:], ds.num_classes, widths=[128, 32])
  wide_v = wide.init(jax.random.key(0), ds.x_train[:1])["params"]
  wide_net = network.from_linen(wide, wide_v, ds.x_train[:1])
  gw = rainbow.generate(jax.random.key(1), model, p, ds.x_train, num_samples=2,
                        gen=(wide_net, wide_v), layers=[0, 1], progress=False)
  assert wide_net.kernels(train.select(gw.params, 0))[0].shape == (64, 128)
  acc_w = np.asarray(evaluate.accuracy(wide_net, gw.params, ds.x_test, ds.y_test,
                                       stacked=True))
  assert np.all(acc_w > 60), acc_w
  with pytest.raises(ValueError, match="classifier"):
    rainbow.generate(jax.random.key(1), model, p, ds.x_train, layers=[2], progress=False)
  with pytest.raises(ValueError, match="not sampled"):
    rainbow.generate(jax.random.key(1), model, p, ds.x_train, gen=(wide_net, wide_v), layers=[1],
                     progress=False)


def test_rainbow_samples_run_in_turn_or_vmapped_give_the_same_networks():
  # A Flax CNN with default names (nn.Conv: vmapped, a grouped convolution).
  import flax.linen as nn

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(6, (3, 3), strides=2)(x))
      x = nn.relu(nn.Conv(8, (3, 3))(x))
      return nn.Dense(10)(x.reshape(x.shape[0], -1))

  ds = data.load("digits", grayscale=True)
  x = ds.x_train[:300]
  v = Net().init(jax.random.key(0), x[:2])
  net = network.from_linen(Net(), v, x[:2])
  # The moments of an alignment pass (here at the second conv's input, its
  # positions folded into rows) are the same either way; so are accuracies.
  leaves, tree = jax.tree_util.tree_flatten(v)  # 3 perturbed copies stand for the samples
  keys = jax.random.split(jax.random.key(2), len(leaves))
  gen = tree.unflatten([a[None] + 0.1 * jax.random.normal(k, (3, *a.shape))
                       for a, k in zip(leaves, keys)])
  xb = jnp.asarray(x).reshape(3, 100, *x.shape[1:])
  wb = jnp.ones((3, 100)).at[:, ::7].set(0.0)  # padding rows weigh nothing
  one, many = (rainbow.cross_moments(net, net, 1, v, gen, xb, wb, ax) for ax in ("map", "vmap"))
  for a, b in zip(one, many):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                               atol=1e-5 * float(np.abs(b).max()))
  acc = {ax: np.asarray(evaluate.accuracy(net, gen, ds.x_test, ds.y_test, stacked=True,
                                          stack_axis=ax)) for ax in ("map", "vmap")}
  np.testing.assert_array_equal(acc["map"], acc["vmap"])
  with pytest.raises(ValueError, match="stack_axis"):
    rainbow.generate(jax.random.key(2), net, v, x, stack_axis="pmap", progress=False)
  with pytest.raises(ValueError, match="stack_axis"):
    evaluate.accuracy(net, gen, ds.x_test, ds.y_test, stacked=True, stack_axis="pmap")


def test_seed_averaged_covariance_is_invariant_to_a_permuted_copy(trained):
  # Seed 1 is seed 0 with its hidden neurons permuted: after alignment its
  # weight covariance is seed 0's, so the averaged factor equals seed 0's.
  _, net, state, _ = trained
  k0 = net.kernels(train.select(state.params, 0))
  rng = np.random.default_rng(0)
  p1, p2 = rng.permutation(64), rng.permutation(32)
  k1 = [k0[0][:, p1], k0[1][p1][:, p2], k0[2][p2]]
  a1 = jnp.eye(64)[p1]  # φ₁ = A φ₀ at layer 1's input
  f_avg = rainbow.reference_factors([k0, k1], [[None, a1, jnp.eye(32)[p2]]])
  f_ref = rainbow.reference_factors([k0])
  for fa, fr in zip(f_avg, f_ref):
    np.testing.assert_allclose(np.asarray(fa.T @ fa), np.asarray(fr.T @ fr), rtol=1e-4,
                               atol=1e-6)
  with pytest.raises(ValueError, match="input alignment"):
    rainbow.reference_factors([k0, k1], [[None, None, None]])
  # seed_averaged_factors finds those alignments itself (mean of the K seeds).
  ds = trained[0]
  v0 = {"params": train.select(state.params, 0)}
  v1 = net.with_kernels(v0, k1)
  found, r2 = rainbow.seed_averaged_factors(net, [v0, v1, v0], ds.x_train[:500])
  assert len(r2) == 1 and np.allclose(np.asarray(r2[0]), 1, atol=1e-4)
  for fa, fr in zip(found, f_ref):
    np.testing.assert_allclose(np.asarray(fa.T @ fa), np.asarray(fr.T @ fr), rtol=1e-3,
                               atol=1e-5)
  with pytest.raises(ValueError, match="at least 2 seeds"):
    rainbow.seed_averaged_factors(net, [v0], ds.x_train[:10])


def test_rainbow_on_a_flax_mlp_with_biases_and_default_names():
  import flax.linen as nn
  import optax

  class BiasMLP(nn.Module):  # Flax defaults: Dense_0…, biases
    @nn.compact
    def __call__(self, x):
      x = x.reshape(x.shape[0], -1)
      x = nn.relu(nn.Dense(64)(x))
      x = nn.relu(nn.Dense(32)(x))
      return nn.Dense(10)(x)

  ds = data.load("digits")
  m = BiasMLP()
  v = m.init(jax.random.key(0), ds.x_train[:1])
  tx = optax.adam(1e-2)
  loss = lambda v, x, y: optax.softmax_cross_entropy_with_integer_labels(m.apply(v, x), y).mean()

  @jax.jit
  def step(v, o, x, y):
    g = jax.grad(loss)(v, x, y)
    u, o = tx.update(g, o, v)
    return optax.apply_updates(v, u), o

  o = tx.init(v)
  x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
  for i in range(300):
    sl = slice((i * 128) % 1280, (i * 128) % 1280 + 128)
    v, o = step(v, o, x[sl], y[sl])
  net = network.from_linen(m, v, x[:2])
  ref = float(evaluate.accuracy(net, v, ds.x_test, ds.y_test))
  assert ref > 90
  # Biases are sampled jointly with the weights: the factor's last column.
  f = rainbow.weight_factor([rainbow.neuron_matrix(net.kernels(v)[0], net.biases(v)[0])])
  assert f.shape[1] == 64 + 1
  k, b = rainbow.sample_kernel(jax.random.key(0), f, (64, 20000), bias=True)
  joint = np.concatenate([np.asarray(k, np.float64), np.asarray(b, np.float64)[None]], 0)
  emp, want = joint @ joint.T / 20000, np.asarray(f.T @ f, np.float64)
  assert np.linalg.norm(emp - want) / np.linalg.norm(want) < 0.05
  g = rainbow.generate(jax.random.key(0), net, v, ds.x_train, num_samples=4, progress=False)
  acc = np.asarray(evaluate.accuracy(net, g.params, ds.x_test, ds.y_test, stacked=True))
  assert np.all(acc > 60), (acc, ref)  # chance is 10 %
  assert not np.allclose(net.biases(train.select(g.params, 0))[0], net.biases(v)[0])
  # The classifier keeps the reference's bias; unsampled layers keep theirs.
  np.testing.assert_array_equal(net.biases(train.select(g.params, 1))[2], net.biases(v)[2])
  same = rainbow.generate(jax.random.key(0), net, v, ds.x_train, layers=[], progress=False)
  np.testing.assert_allclose(evaluate.accuracy(net, same.params, ds.x_test, ds.y_test,
                                               stacked=True), ref, atol=0.3)


@pytest.mark.slow  # 36 s; the default suite's user-model analyze covers BatchNorm + residual
def test_rainbow_on_a_resnet_with_batchnorm():
  """Residual blocks and BatchNorm: stream writers are refused by name, the
  block convs are sampled, statistics re-estimated beat stale ones."""
  import optax
  ds = data.load("digits")
  m = models.ResNet(blocks=1, width=0.5)
  state, hist = train.fit(m, ds.x_train, ds.y_train, ds.x_test, ds.y_test, seeds=[0],
                          epochs=5, tx=optax.adam(3e-3), progress=False)
  v = train.select(state.variables, 0)
  ref = float(hist.test_accuracy[-1, 0])
  assert ref > 90
  net = network.from_linen(m, v, ds.x_train[:2])
  # stem → every later block input and the classifier; block convs → next conv.
  assert net.consumers(v, ds.x_train[:2]) == [(1, 3, 5, 7), (2,), (3, 5, 7), (4,), (5, 7),
                                               (6,), (7,), ()]
  assert net.producers(v, ds.x_train[:2]) == [(-1,), (0,), (1,), (0, 2), (3,), (0, 2, 4),
                                               (5,), (0, 2, 4, 6)]
  assert net.chain_links(v, ds.x_train[:2]) == [False, True, False, True, False, True,
                                                 False]
  assert net.chains(v, ds.x_train[:2]) == [(0,), (1, 2), (3, 4), (5, 6), (7,)]
  x = ds.x_train[:600]
  with pytest.raises(ValueError, match="layer 2 \\(stage_0_block_0/conv_1\\) cannot be"):
    rainbow.generate(jax.random.key(0), net, v, x, layers=[1, 2], progress=False)
  g = rainbow.generate(jax.random.key(0), net, v, x, num_samples=4, progress=False)
  k0 = net.kernels(train.select(g.params, 0))
  assert not np.allclose(k0[1], net.kernels(v)[1])  # sampled
  acc = np.asarray(evaluate.accuracy(net, g.params, ds.x_test, ds.y_test, stacked=True))
  stale = dict(g.params, batch_stats=jax.tree_util.tree_map(
      lambda a: jnp.broadcast_to(a, (4, *a.shape)), v["batch_stats"]))
  acc_stale = np.asarray(evaluate.accuracy(net, stale, ds.x_test, ds.y_test, stacked=True))
  assert np.all(acc > 60), (acc, ref)  # chance is 10 %
  assert np.mean(acc) > np.mean(acc_stale) + 15, (acc, acc_stale)
