"""float64 path: the library honours x64 when the *user* enables it.

x64 is a process-wide JAX flag, so this runs in a subprocess with
``JAX_ENABLE_X64=1``; the library itself never flips it.
"""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from rainbow_jax import align, moments as M
    assert jax.config.jax_enable_x64
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 7)) * 5 + 100.0   # large mean: a cancellation trap
    y = np.tanh(x @ rng.normal(size=(7, 4)) / 100)
    s = M.accumulate([(x[i:i + 256], y[i:i + 256]) for i in range(0, 3000, 256)],
                     lambda b: list(b), cross=[(0, 1)], dtype=jnp.float64)
    assert s.m2[0].dtype == jnp.float64
    rel = lambda a, b: np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b)
    tol = 1e-12
    assert rel(M.covariance(s, 0), x.T @ x / 3000) < tol
    assert rel(M.covariance(s, 0, 1, centered=True),
               np.cov(x.T, y.T, bias=True)[:7, 7:]) < tol
    a = align.align_features(x, x @ np.linalg.qr(rng.normal(size=(7, 7)))[0].T)
    assert abs(float(a.r2) - 1) < 1e-12
    from rainbow_jax import models, network, rainbow
    m = models.MLP(dims=(7, 16, 3))
    xs = rng.normal(size=(64, 7))
    v = m.init(jax.random.key(0), xs[:1])
    net = network.from_linen(m, v, xs[:2])
    g = rainbow.generate(jax.random.key(1), net, v, xs, num_samples=2, progress=False)
    assert g.r2.shape == (2, 1) and np.all(np.isfinite(np.asarray(g.r2)))
    print("OK")
""")


def test_float64_path():
  env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stdout.strip().endswith("OK")
