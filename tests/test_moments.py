"""Streaming moments against float64 numpy references and their invariants."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rainbow_jax import moments as M
from conftest import RTOL, rel_err


def _data(rng, n=700, d=6, offset=3.0):
  x = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d) + offset
  y = x[:, :4] @ rng.normal(size=(4, 3)) + rng.normal(size=(n, 3))
  return x.astype(np.float32), y.astype(np.float32)


def _batches(arrs, size):
  n = arrs[0].shape[0]
  return [tuple(a[i:i + size] for a in arrs) for i in range(0, n, size)]


@pytest.mark.parametrize("batch", [64, 100, 700])
def test_host_driver_matches_numpy(rng, batch):
  x, y = _data(rng)
  s = M.accumulate(_batches([x, y], batch), lambda b: list(b), cross=[(0, 1)])
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  n = len(x)
  tol = RTOL[np.dtype(np.float32)]
  assert int(s.count[0]) == n and int(s.count[1]) == n
  assert rel_err(M.mean(s, 0), x64.mean(0)) < tol
  assert rel_err(M.covariance(s, 0), x64.T @ x64 / n) < tol
  assert rel_err(M.covariance(s, 1), y64.T @ y64 / n) < tol
  assert rel_err(M.covariance(s, 0, 1), x64.T @ y64 / n) < tol
  assert rel_err(M.covariance(s, 1, 0), y64.T @ x64 / n) < tol
  joint = np.cov(x64.T, y64.T, bias=True)
  assert rel_err(M.covariance(s, 0, centered=True), joint[:6, :6]) < tol
  assert rel_err(M.covariance(s, 0, 1, centered=True), joint[:6, 6:]) < tol
  unbiased = np.cov(x64.T)
  assert rel_err(M.covariance(s, 0, centered=True, ddof=1), unbiased) < tol
  assert float(M.second_moment_trace(s, 0)) == pytest.approx(
      np.sum(x64**2) / n, rel=tol)


def test_merge_equals_concatenation(rng):
  x, y = _data(rng)
  st = lambda a, b: M.update(M.init([6, 3], cross=[(0, 1)]), [a, b])
  merged = M.merge(st(x[:123], y[:123]), st(x[123:], y[123:]))
  whole = st(x, y)
  for i, j in [(0, 0), (1, 1), (0, 1)]:
    for centered in (False, True):
      assert rel_err(M.covariance(merged, i, j, centered=centered),
                     M.covariance(whole, i, j, centered=centered)) < 1e-5
  # Merging with empty statistics is the identity.
  empty = M.init([6, 3], cross=[(0, 1)])
  again = M.merge(empty, whole)
  assert rel_err(M.covariance(again, 0, 1), M.covariance(whole, 0, 1)) < 1e-6


def test_scan_with_mask_equals_host_driver(rng):
  x, _ = _data(rng, n=640)
  stack = x.reshape(10, 64, 6)
  mask = np.ones((10, 64), bool)
  mask[-1, 40:] = False  # a ragged last batch, expressed by the mask
  s = jax.jit(M.accumulate_stack)(jnp.asarray(stack), mask=jnp.asarray(mask))
  kept = x[: 9 * 64 + 40].astype(np.float64)
  assert int(s.count[0]) == len(kept)
  assert rel_err(M.covariance(s, centered=True),
                 np.cov(kept.T, bias=True)) < RTOL[np.dtype(np.float32)]


def test_grouped_scan_equals_numpy(rng):
  """Several batches per update (``group``), with a remainder, a mask and an
  NHWC map from ``fn``, give numpy's statistics of the kept examples."""
  x = rng.normal(size=(7, 5, 2, 2, 3)).astype(np.float32) + 3.0
  mask = np.ones((7, 5), bool)
  mask[2, 1:3] = mask[6, 4] = False
  fn = lambda b: [b, jnp.tanh(b[:, 0, 0, :])]
  kept = x[mask]  # [examples, 2, 2, 3]
  want = [kept.reshape(-1, 3).astype(np.float64),
          np.tanh(kept[:, 0, 0, :].astype(np.float64))]
  for group in (1, 3, 7):
    s = jax.jit(M.accumulate_stack, static_argnums=1, static_argnames="group")(
        jnp.asarray(x), fn, mask=jnp.asarray(mask), group=group)
    for i, w in enumerate(want):
      assert int(s.count[i]) == len(w)
      assert rel_err(M.covariance(s, i, centered=True), np.cov(w.T, bias=True)) < 1e-5
      assert rel_err(M.mean(s, i), w.mean(0)) < 1e-6
  with pytest.raises(ValueError, match="group"):
    M.accumulate_stack(jnp.asarray(x), fn, group=0)


def test_conv_maps_fold_space_into_batch(rng):
  a = rng.normal(size=(5, 4, 3, 7)).astype(np.float32)
  s = M.accumulate([a[:3], a[3:]])
  flat = a.reshape(-1, 7).astype(np.float64)
  assert int(s.count[0]) == 5 * 4 * 3
  assert rel_err(M.covariance(s), flat.T @ flat / len(flat)) < 1e-5
  # A ragged conv batch (2 of 3) is masked per example, all positions.
  assert rel_err(M.mean(s), flat.mean(0)) < 1e-5


def test_one_trace_for_many_batches_and_ragged_tail(rng):
  x, _ = _data(rng, n=1000)
  traces = []

  def fn(b):
    traces.append(b.shape)
    return b

  s = M.accumulate([x[i:i + 96] for i in range(0, 1000, 96)], fn)
  assert int(s.count[0]) == 1000  # 10 full batches + a ragged 40
  assert len([t for t in traces]) <= 2  # eval_shape for init + one jit trace
  assert traces[-1] == (96, 6)


def test_update_traces_once_under_jit(rng):
  import chex
  x, _ = _data(rng, n=256)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(s, b):
    return M.update(s, b)

  s = M.init(6)
  for i in range(0, 256, 32):
    s = step(s, x[i:i + 32])
  assert rel_err(M.mean(s), x.astype(np.float64).mean(0)) < 1e-5


def test_layer_moments_two_models(rng):
  w1 = rng.normal(size=(5, 8)).astype(np.float32)
  w2 = rng.normal(size=(5, 8)).astype(np.float32)
  xs = rng.normal(size=(300, 5)).astype(np.float32)

  def apply(w, x):
    h = x @ w
    return [x, jnp.maximum(h, 0)]

  m = M.layer_moments(apply, w1, [xs[:128], xs[128:256], xs[256:]],
                      params2=w2, cross="all")
  assert m.names[0] == "model0/layer0" and m.names[3] == "model1/layer1"
  h1 = np.maximum(xs @ w1, 0).astype(np.float64)
  h2 = np.maximum(xs @ w2, 0).astype(np.float64)
  assert rel_err(M.covariance(m, 1, 3), h1.T @ h2 / 300) < 1e-5
  assert rel_err(M.covariance(m, 0, 3), xs.T.astype(np.float64) @ h2 / 300) < 1e-5
  # New weights reuse the compiled step (params are traced, not constants).
  m2 = M.layer_moments(apply, w2, [xs], params2=w1, cross="matched")
  assert rel_err(M.covariance(m2, 1, 3), h2.T @ h1 / 300) < 1e-5


def test_float32_accuracy_over_a_million_samples():
  rng = np.random.default_rng(1)
  n, d, b = 1_000_000, 32, 1000
  x = (rng.normal(size=(n, d)) * rng.uniform(0.1, 3, size=d)
       + 2 * rng.normal(size=d)).astype(np.float32)
  x64 = x.astype(np.float64)
  errs = {}
  for comp in (True, False):
    s = jax.jit(lambda xs, c=comp: M.accumulate_stack(xs, state=M.init([d], compensated=c)))(
        jnp.asarray(x.reshape(n // b, b, d)))
    errs[comp] = (rel_err(M.covariance(s), x64.T @ x64 / n),
                  rel_err(M.covariance(s, centered=True), np.cov(x64.T, bias=True)))
  # README's figures: ~1e-7 and ~3e-8 compensated; the plain float32 sum of
  # the same updates loses the centred covariance (~5e-7 here).
  assert errs[True][0] <= 2e-7 and errs[True][1] <= 1e-7, errs
  assert errs[False][1] > 3 * errs[True][1], errs


# ------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors(rng):
  x, y = _data(rng, n=64)
  with pytest.raises(ValueError, match="same number of samples"):
    M.update(M.init([6, 3], cross=[(0, 1)]), [x, y[:10]])
  with pytest.raises(ValueError, match="at least 2 axes"):
    M.update(M.init(6), x[0])
  with pytest.raises(TypeError, match="floating dtype"):
    M.update(M.init(6), x.astype(np.int32))
  with pytest.raises(ValueError, match="expected 6 features"):
    M.update(M.init(6), y)
  with pytest.raises(ValueError, match="empty"):
    M.accumulate([])
  with pytest.raises(ValueError, match="zero samples"):
    M.accumulate([np.zeros((0, 6), np.float32)])
  with pytest.raises(ValueError, match="self moments are always kept"):
    M.init([6, 3], cross=[(1, 1)])
  with pytest.raises(ValueError, match="cross pair"):
    M.init([6], cross=[(0, 1)])
  with pytest.raises(ValueError, match="no cross moments"):
    M.covariance(M.init([6, 3]), 0, 1)


def test_nonfinite_input_names_the_layer(rng):
  x, _ = _data(rng, n=64)

  def apply(w, b):
    h = b @ w
    return [b, h, jnp.log(h)]  # log of negatives: NaN in the third map only

  with pytest.raises(ValueError, match="model0/layer2"):
    M.layer_moments(apply, np.eye(6, dtype=np.float32) * -1, [x])
  bad = x.copy()
  bad[3, 2] = np.inf
  with pytest.raises(ValueError, match="feature 0"):
    M.accumulate([x, bad])


@pytest.mark.parametrize("d", [200, 301])
def test_blocked_symmetric_gram_matches_numpy(rng, d):
  # Widths ≥ 192 take the block-triangular Gram path.
  x = (rng.normal(size=(500, d)) + 1).astype(np.float32)
  s = M.accumulate([x[:256], x[256:]])
  x64 = x.astype(np.float64)
  cov = np.asarray(M.covariance(s))
  assert rel_err(cov, x64.T @ x64 / 500) < RTOL[np.dtype(np.float32)]
  np.testing.assert_allclose(cov, cov.T, rtol=1e-6, atol=1e-6)


def test_uncompensated_state_matches_and_merges(rng):
  x, y = _data(rng, n=900)
  plain = M.init([6, 3], cross=[(0, 1)], compensated=False)
  assert plain.m2_comp[0].shape == () and plain.cross_comp[0].shape == ()
  s = M.accumulate([(x[i:i + 128], y[i:i + 128]) for i in range(0, 900, 128)],
                   lambda b: list(b), state=plain)
  x64, y64 = x.astype(np.float64), y.astype(np.float64)
  assert rel_err(M.covariance(s, 0, 1), x64.T @ y64 / 900) < RTOL[np.dtype(np.float32)]
  both = M.merge(s, M.update(M.init([6, 3], cross=[(0, 1)]), [x, y]))
  assert rel_err(M.covariance(both, 0, centered=True),
                 np.cov(x64.T, bias=True)) < RTOL[np.dtype(np.float32)]


def test_count_overflow_is_refused(monkeypatch):
  monkeypatch.setattr(M._drivers, "_MAX_COUNT", 1000)
  x = np.ones((300, 4), np.float32)
  M.accumulate([x, x, x])  # 900 rows: fine
  with pytest.raises(ValueError, match="int32 count"):
    M.accumulate([x, x, x, x])
  conv = np.ones((10, 5, 5, 2), np.float32)  # 250 rows per batch of 10
  with pytest.raises(ValueError, match="int32 count"):
    M.accumulate([conv] * 5)


def test_empty_batch_adds_nothing_and_one_sample_has_no_unbiased_covariance():
  x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
  st = M.update(M.init([3]), jnp.zeros((0, 3)))
  st = M.check(M.update(st, jnp.asarray(x)))
  np.testing.assert_allclose(M.mean(st, 0), x.mean(0), rtol=1e-6)
  np.testing.assert_allclose(M.covariance(st, 0, centered=True, ddof=1), np.cov(x.T),
                             rtol=1e-5)
  one = M.update(M.init([3]), jnp.asarray(x[:1]))
  with pytest.raises(ValueError, match="1 sample"):
    M.covariance(one, 0, centered=True, ddof=1)
  with pytest.raises(ValueError, match="zero samples"):
    M.check(M.update(M.init([3]), jnp.zeros((0, 3))))
