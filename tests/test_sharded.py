"""Data-parallel accumulation on 8 forced host devices equals one device.

The device count is fixed when JAX starts, so the check runs in a
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import functools
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from rainbow_jax import moments as M

    assert jax.device_count() == 8, jax.devices()
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
    out = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec, spec),
                                out_specs=P(), check_vma=False))(x[:992], y[:992])
    ref = M.update(M.init([16, 5], cross=[(0, 1)]), [x[:992], y[:992]])

    def err(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return np.linalg.norm(a - b) / np.linalg.norm(b)
    worst = 0.0
    for (a, b) in [(sharded, single), (out, ref)]:
        assert int(a.count[0]) == int(b.count[0])
        for i, j in [(0, 0), (1, 1), (0, 1)]:
            for c in (False, True):
                worst = max(worst, err(M.covariance(a, i, j, centered=c),
                                       M.covariance(b, i, j, centered=c)))
    assert worst < 2e-6, worst
    print("OK", worst)
""")


def test_sharded_equals_single_device():
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stdout.startswith("OK")
