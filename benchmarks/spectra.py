"""Heavy-tailed weight spectra: rainbow_jax vs weightwatcher, same run, same
weights.

    python benchmarks/spectra.py [--quick] [--out results/spectra.json]

Layers (PyTorch modules for weightwatcher, the same kernels for us):
Student-t (ν = 4) weights of dense layers 512 × 784, 1024 × 1024,
2048 × 2048 and 4096 × 1024, and a 3 × 3 conv 256 → 256. Per layer:
weightwatcher's ``analyze(randomize=False, plot=False)`` on a one-layer
model (its SVDs and its power-law fit) vs `rainbow_jax.spectra.esd` +
`spectra.power_law` (warm, jitted), and the largest difference in α.
"""

from __future__ import annotations

import logging
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common as C
import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import spectra


def main(argv=None):
  p = C.parser("spectra")
  p.set_defaults(repeats=3)
  a = C.parse_args(p, argv)
  torch = C.torch_or_none()
  try:
    import weightwatcher as ww
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
  except ImportError:
    ww = None
  notes = []
  if ww is None or torch is None:
    notes.append("weightwatcher or torch is not installed: the peer was skipped.")
  shapes = {"quick": [(128, 196), (3, 3, 16, 32)],
            "cpu": [(784, 512), (1024, 1024), (2048, 2048), (1024, 4096), (3, 3, 256, 256)],
            "accel": [(784, 512), (2048, 2048), (1024, 4096), (4096, 4096),
                      (3, 3, 256, 256)]}[a.size]
  rng = np.random.default_rng(0)
  records = []
  for shape in shapes:
    kernel = (rng.standard_t(4, size=shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)
    k = jnp.asarray(kernel)
    for _ in range(2):  # compile the SVD and the fit
      jax.block_until_ready(spectra.power_law(spectra.esd(k)).alpha)
    first, warm = C.time_fn(lambda: spectra.power_law(spectra.esd(k)).alpha, a.repeats)
    ours = spectra.power_law(spectra.esd(k))
    case = "x".join(map(str, shape))
    extra = {"alpha": float(ours.alpha), "xmin": float(ours.xmin), "shape": list(shape)}
    if ww is not None and torch is not None:
      if len(shape) == 2:
        mod = torch.nn.Linear(shape[0], shape[1], bias=False)
        weight = kernel.T
      else:
        mod = torch.nn.Conv2d(shape[2], shape[3], shape[0], bias=False)
        weight = kernel.transpose(3, 2, 0, 1)
      with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
      watcher = ww.WeightWatcher(model=torch.nn.Sequential(mod))
      times = []
      for _ in range(a.repeats):
        t0 = time.perf_counter()
        details = watcher.analyze(randomize=False, plot=False)
        times.append(time.perf_counter() - t0)
      t_ww = float(np.median(times))
      row = details.iloc[0]
      extra.update(ww_alpha=float(row["alpha"]), ww_xmin=float(row["xmin"]),
                   abs_diff_alpha=abs(float(ours.alpha) - float(row["alpha"])),
                   ww_sigma=float(row["sigma"]), speedup_vs_weightwatcher=t_ww / warm)
      records.append(C.record("power_law", "weightwatcher", case, t_ww, None,
                              alpha=float(row["alpha"])))
    records.append(C.record("power_law", "rainbow_jax", case, warm, max(first - warm, 0.0),
                            **extra))
    print(f"{case}: rainbow_jax {warm:.3f} s, α {float(ours.alpha):.4f}"
          + (f"; weightwatcher {t_ww:.3f} s, α {extra['ww_alpha']:.4f}"
             f" ({t_ww / warm:.1f}×)" if "ww_alpha" in extra else ""), flush=True)
  C.write(a.out, records, notes)


if __name__ == "__main__":
  main()
