"""Streaming covariance throughput: rainbow_jax vs the tutorial's PyTorch loop.

    python benchmarks/covariance.py [--quick] [--out results/covariance.json]

Cases (``--size cpu``): d ∈ {256, 512, 1024, 2048}, 51 200 samples in batches
of 1024 (``--size accel``: d ∈ {1024, 4096, 8192}, 204 800 samples in batches
of 4096; the PyTorch loop's batches then live on the GPU). For each d it
records
  * ``matmul_peak`` — the machine's float32 GEMM rate measured in this run
    (one ``[d, B] @ [B, d]`` product, the kernel every implementation needs);
  * ``rainbow_jax`` ``scan`` — `accumulate_stack` over an on-device stack
    (its default ``group``: one update per batch, or per ≈ 2.5·d rows for
    d ≥ 2048);
  * the same without Kahan compensation (``compensated: false``), the cost of
    the extra accuracy;
  * ``rainbow_jax`` ``host`` — `accumulate` over a host iterator of numpy
    batches (one compiled step, batches transferred each step);
  * ``pytorch`` — the tutorial's ``compute_activation_covariances`` loop
    (``act.T @ act`` per batch, summed), when torch is installed.
``gflops`` counts 2·B·d² per batch for everyone (the work of the tutorial's
product). rainbow_jax exploits the symmetry of ``xᵀx`` (block upper triangle,
2/3 of those flops for d ≥ 192), so ``fraction_of_peak`` divides the flops it
*executes* by the measured GEMM peak; on top it centres each batch and applies
the Chan correction and Kahan compensation, all O(d²) per batch.
Memory does not grow with the sample count: the state is O(d²).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np

import _common as C
from rainbow_jax import moments as M


def main(argv=None):
  args = C.parse_args(C.parser("covariance"), argv)
  dims, batch, num_batches = {
      "quick": ([64, 128], 256, 8),
      "cpu": ([256, 512, 1024, 2048], 1024, 50),
      "accel": ([1024, 4096, 8192], 4096, 50),
  }[args.size]
  n = batch * num_batches
  torch = C.torch_or_none()
  records, notes = [], []
  if torch is None:
    notes.append("torch not installed: pytorch peer skipped")
  rng = np.random.default_rng(0)
  for d in dims:
    case = {"d": d, "samples": n, "batch": batch}
    flops = 2.0 * n * d * d
    x = rng.standard_normal(size=(num_batches, batch, d), dtype=np.float32)

    # Machine peak: the GEMM every implementation needs ([d, B] @ [B, d]),
    # best of XLA's and torch's kernels in this run.
    peaks = C.gemm_peak([(d, batch, d)], repeats=args.repeats * 4)
    best_peak = max(peaks["xla"], peaks["torch"] or 0.0)
    records.append(C.record("covariance", "matmul_peak", case, None,
                            gflops=peaks["xla"], torch_gflops=peaks["torch"]))

    xs = jnp.asarray(x)
    scan = jax.jit(M.accumulate_stack)
    host_batches = list(x)
    plain = M.init(d, compensated=False)
    fns = {
        "scan": lambda: scan(xs).m2,
        "scan_uncompensated": lambda: scan(xs, state=plain).m2,
        "host": lambda: M.accumulate(host_batches).m2,
    }
    if torch is not None:
      tb = [torch.from_numpy(b).to(C.torch_device(torch)) for b in host_batches]

      def tutorial_loop():  # compute_activation_covariances, one layer
        total, count = 0, 0
        for act in tb:
          total += act.T @ act
          count += act.shape[0]
        return total / count

      fns["pytorch"] = tutorial_loop
    timed = C.time_interleaved(fns, args.repeats)
    executed = flops * (2 / 3 if d >= 192 else 1)
    t_torch = timed["pytorch"][1] if "pytorch" in timed else None
    for name, (first, t) in timed.items():
      ours = name != "pytorch"
      records.append(C.record(
          "covariance", "rainbow_jax" if ours else "pytorch",
          dict(case, driver="host" if name in ("host", "pytorch") else "scan",
               compensated=name != "scan_uncompensated") if ours
          else dict(case, driver="host"), t,
          (first - t) if ours else None,
          samples_per_s=n / t, gflops=flops / t / 1e9,
          fraction_of_peak=(executed if ours else flops) / t / 1e9 / best_peak,
          fraction_of_xla_peak=(executed if ours else flops) / t / 1e9 / peaks["xla"],
          speedup_vs_pytorch=t_torch / t if ours and t_torch else None,
          state_bytes=int(sum(a.nbytes for a in jax.tree_util.tree_leaves(
              M.init(d, compensated=name != "scan_uncompensated"))))
          if ours else None))
    for r in records[-len(fns) - 1:]:
      secs = "" if r["seconds"] is None else f"{r['seconds']:.4f}s"
      print(r["impl"], r["case"], secs,
            {k: round(v, 3) for k, v in r["extra"].items() if v})
  C.write(args.out, records, notes)


if __name__ == "__main__":
  main()
