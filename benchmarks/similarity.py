"""CCA, PWCCA and linear CKA: rainbow_jax vs a float64 numpy reference.

    python benchmarks/similarity.py [--quick] [--out results/similarity.json]

Cases (neurons × datapoints, two layers of that width): 500 × 10 000 and
2048 × 50 000. Peers, run in this process on the same data:
  * ``numpy`` — google/svcca's algorithm step for step, in float64 as it runs
    (``np.cov`` of the stacked activations, pinv, eigh square roots, full
    SVD; PWCCA's QR over datapoints; ``tests/svcca_reference.py``, whose
    coefficients ``tests/test_pwcca_compat.py`` checks against the real
    reference's outputs in ``shared/fixtures``), and Kornblith et al.'s
    feature-space linear CKA in float64;
  * ``rainbow_jax`` — the native jitted functions on ``[n, d]`` device arrays;
  * ``rainbow_jax_compat`` — `rainbow_jax.compat.svcca` called exactly as
    google/svcca is (numpy neurons × datapoints in, numpy out: transfers,
    transposes and its dict included). float32 activations are computed in
    float32 (float64 ones would run in float64).
Each record carries the agreement with the numpy result (max |Δ| over the
coefficients; |Δ| of the scalar), so a speed-up is only counted with its
accuracy.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, os.pardir, "tests"))

import jax
import jax.numpy as jnp
import numpy as np

import _common as C
import rainbow_jax.compat.svcca as compat
import svcca_reference as ref
from rainbow_jax import similarity as S


def numpy_linear_cka(a1, a2):
  """Kornblith et al.'s feature-space linear CKA, float64, neurons × datapoints."""
  x = a1.T - a1.mean(axis=1)
  y = a2.T - a2.mean(axis=1)
  return np.sum((x.T @ y) ** 2) / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _median_seconds(fn, repeats):
  times, out = [], None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = C.block(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def main(argv=None):
  p = C.parser("similarity")
  p.set_defaults(repeats=3)
  args = C.parse_args(p, argv)
  cases = [(32, 600), (64, 2000)] if args.quick else [(500, 10_000), (2048, 50_000)]
  rng = np.random.default_rng(0)
  records = []
  jit_cca = jax.jit(lambda x, y: S.cca(x, y).coefficients)
  jit_pwcca = jax.jit(lambda x, y: S.pwcca(x, y).value)
  jit_cka = jax.jit(S.linear_cka)
  for d, n in cases:
    case = {"neurons": d, "datapoints": n}
    # Two related float32 layers (what networks output) with ReLU-like means
    # and a decaying spectrum.
    f32 = lambda a: np.asarray(a, np.float32)
    z = f32(rng.normal(size=(n, d))) * np.logspace(0, -1, d, dtype=np.float32)
    a1 = np.maximum(z @ f32(rng.normal(size=(d, d)) / np.sqrt(d)), 0)
    a2 = np.maximum(z @ f32(rng.normal(size=(d, d)) / np.sqrt(d)), 0)
    a2 += f32(0.5 * rng.normal(size=(n, d)))
    assert a1.dtype == a2.dtype == np.float32
    acts1, acts2 = np.ascontiguousarray(a1.T), np.ascontiguousarray(a2.T)  # svcca layout
    r1, r2 = acts1.astype(np.float64), acts2.astype(np.float64)
    x, y = jnp.asarray(a1), jnp.asarray(a2)
    peers = {
        "cca": {
            "numpy": lambda: ref.cca_parts(r1, r2)[1],
            "rainbow_jax": lambda: jit_cca(x, y),
            "rainbow_jax_compat": lambda: compat.get_cca_similarity(
                acts1, acts2, compute_coefs=False)["cca_coef1"],
        },
        "pwcca": {
            "numpy": lambda: ref.pwcca(r1, r2, signs=False)[0],
            "rainbow_jax": lambda: jit_pwcca(x, y),
            "rainbow_jax_compat": lambda: compat.compute_pwcca(acts1, acts2)[0],
        },
        "linear_cka": {
            "numpy": lambda: numpy_linear_cka(r1, r2),
            "rainbow_jax": lambda: jit_cka(x, y),
        },
    }
    for bench, impls in peers.items():
      t_ref, want = _median_seconds(impls["numpy"], args.repeats)
      want = np.asarray(want)
      records.append(C.record(bench, "numpy", case, t_ref, None, dtype="float64"))
      print(bench, case, f"numpy {t_ref:.3f}s")
      for impl in ("rainbow_jax", "rainbow_jax_compat"):
        if impl not in impls:
          continue
        first, t = C.time_fn(impls[impl], args.repeats)
        got = np.asarray(impls[impl]()).ravel()[: want.size]
        err = float(np.max(np.abs(got.astype(np.float64) - want)))
        records.append(C.record(bench, impl, case, t, first - t, dtype="float32",
                                max_abs_diff_vs_numpy=err, speedup_vs_numpy=t_ref / t))
        print(bench, case, f"{impl} {t:.3f}s  x{t_ref / t:.1f}  |Δ| {err:.1e}")
  C.write(args.out, records)


if __name__ == "__main__":
  main()
