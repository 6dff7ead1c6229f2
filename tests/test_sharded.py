"""Data-parallel accumulation on 8 CPU devices (set by conftest) equals one
device."""

import chex
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rainbow_jax import moments as M

from conftest import NUM_CPU_DEVICES, rel_err


def test_sharded_equals_single_device():
  assert jax.device_count() == NUM_CPU_DEVICES, jax.devices()
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(1000, 16)) + 2).astype(np.float32)
  y = np.tanh(x @ rng.normal(size=(16, 5))).astype(np.float32)
  batches = [(x[i:i + 128], y[i:i + 128]) for i in range(0, 1000, 128)]
  fn = lambda b: list(b)
  single = M.accumulate(batches, fn, cross=[(0, 1)])

  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharded = M.accumulate(batches, fn, cross=[(0, 1)],
                         sharding=NamedSharding(mesh, P("data")))

  # Explicit shard_map: per-device statistics, then psum_merge.
  def local(xs, ys):
    s = M.update(M.init([16, 5], cross=[(0, 1)]), [xs, ys])
    return M.psum_merge(s, "data")

  spec = P("data")
  out = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec, spec), out_specs=P(),
                              check_vma=False))(x[:992], y[:992])
  ref = M.update(M.init([16, 5], cross=[(0, 1)]), [x[:992], y[:992]])
  worst = 0.0
  for a, b in [(sharded, single), (out, ref)]:
    chex.assert_trees_all_equal(a.count, b.count)
    for i, j in [(0, 0), (1, 1), (0, 1)]:
      for c in (False, True):
        worst = max(worst, rel_err(M.covariance(a, i, j, centered=c),
                                   M.covariance(b, i, j, centered=c)))
  assert worst < 2e-6, worst
