"""The seed's init-ensemble check (seed 004), redone with error bars and the
layer indexing corrected, plus ReLU and a sweep over depth/width.

1. The seed's setting: bias-free deep linear MLP, input dimension 10, two
   unit-norm inputs, width n = 1 000, L = 3, 1 000 inits, C_W = 100 and 1.
   Per layer ℓ = 1…3: measured kernel G2 and connected four-point function
   (cross- and same-neuron) against the exact theory; next to them the seed's
   formulas, whose 0-based layer index gives C_W^{ℓ−1} q₀ and 2(ℓ−2)/n.
2. ReLU at criticality (C_W = 2): measured vs the leading-order 1/n theory.
3. A sweep: the cross-neuron connected function / G2² against ℓ/n for
   n ∈ {25, 50, 100, 400}, ℓ ≤ 8, linear and ReLU (figure).

  python experiments/ensembles_seed.py --out results/ensembles_seed
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from rainbow_jax import ensembles as E
from rainbow_jax import plots


def _f(e, idx=(0, 0)):
  return float(np.asarray(e.value)[idx]), float(np.asarray(e.error)[idx])


def seed_setting(x, c_w, n, depth, inits, method):
  z = E.sample(jax.random.key(int(c_w)), x, [n] * depth, num_inits=inits, c_w=c_w,
               method=method)
  th = E.linear_theory(x, [n] * depth, c_w=c_w)
  q0 = float(np.sum(np.asarray(x[0], np.float64) ** 2) / x.shape[1])
  rows = []
  for l, zl in enumerate(z, start=1):
    g2 = E.kernel(zl)
    cross, same = E.four_point(zl)
    g, ge = _f(g2)
    c, ce = _f(cross, (0, 0, 0, 0))
    s, se = _f(same, (0, 0, 0, 0))
    g01, g01e = _f(g2, (0, 1))
    rows.append({
        "layer": l,
        "G2_00": [g, ge], "G2_00_theory": th.kernel[l - 1][0, 0],
        "G2_00_seed_formula": c_w ** (l - 1) * q0,
        "G2_01": [g01, g01e], "G2_01_theory": th.kernel[l - 1][0, 1],
        "cross_0000": [c, ce], "cross_0000_theory": th.cross[l - 1][0, 0, 0, 0],
        "cross_0000_leading_order": 2 * (l - 1) / n * th.kernel[l - 1][0, 0] ** 2,
        "cross_0000_seed_formula": 2 * (l - 2) / n * (c_w ** (l - 1) * q0) ** 2,
        "same_0000": [s, se], "same_0000_theory": th.same[l - 1][0, 0, 0, 0],
        "cross_0011": list(_f(cross, (0, 0, 1, 1))),
        "cross_0011_theory": th.cross[l - 1][0, 0, 1, 1],
    })
  return rows


def relu_setting(x, n, depth, inits, method):
  z = E.sample(jax.random.key(7), x, [n] * depth, num_inits=inits, c_w=2.0,
               activation="relu", method=method)
  ks, vs = E.kernel_theory(x, [n] * depth, c_w=2.0, activation="relu")
  rows = []
  for l, zl in enumerate(z, start=1):
    g2 = E.kernel(zl)
    cross, _ = E.four_point(zl)
    rows.append({"layer": l, "G2_00": list(_f(g2)), "G2_00_theory": ks[l - 1][0, 0],
                 "G2_01": list(_f(g2, (0, 1))), "G2_01_theory": ks[l - 1][0, 1],
                 "cross_0000": list(_f(cross, (0, 0, 0, 0))),
                 "cross_0000_theory": vs[l - 1][0]})
  return rows


def sweep(x, out, inits):
  plt = plots._plt()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  res = {}
  for ax, act, c_w, slope in ((axes[0], "linear", 1.0, 2), (axes[1], "relu", 2.0, 5)):
    res[act] = {}
    for n in (25, 50, 100, 400):
      depth = 8
      z = E.sample(jax.random.key(n), x[:1], [n] * depth, num_inits=inits, c_w=c_w,
                   activation=act)
      ratios, errs = [], []
      for zl in z:
        g = float(E.kernel(zl).value[0, 0])
        c = E.four_point(zl)[0]
        ratios.append(float(c.value[0, 0, 0, 0]) / g**2)
        errs.append(float(c.error[0, 0, 0, 0]) / g**2)
      lo = np.arange(1, depth + 1) / n
      ax.errorbar(lo, ratios, yerr=errs, marker="o", ls="", capsize=2, label=f"n = {n}")
      res[act][n] = {"l_over_n": lo.tolist(), "measured": ratios, "error": errs}
    grid = np.linspace(0, 8 / 25, 50)
    ax.plot(grid, slope * np.maximum(grid - grid[0], 0), "k", lw=0.8,
            label=f"leading order {slope}(ℓ−1)/n")
    if act == "linear":
      for n in (25, 400):
        l = np.arange(1, 9)
        ax.plot(l / n, (1 + 2 / n) ** (l - 1) - 1, ":", color="0.4", lw=0.8)
    ax.set_xlabel("ℓ / n")
    ax.set_ylabel("cross-neuron connected 4-pt / G2²")
    ax.set_title(f"{act}, C_W = {c_w:g} ({inits} inits per width)")
    ax.legend(fontsize=7)
  plots.save(fig, os.path.join(out, "four_point_vs_depth_over_width.png"))
  return res


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--inits", type=int, default=1000)
  p.add_argument("--width", type=int, default=1000)
  p.add_argument("--method", default="gram", choices=["gram", "brute"])
  p.add_argument("--out", default="results/ensembles_seed")
  p.add_argument("--quick", action="store_true", help="small sizes, seconds")
  a = p.parse_args(argv)
  if a.quick:
    a.inits, a.width = 100, 50
  os.makedirs(a.out, exist_ok=True)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 10)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  t0 = time.perf_counter()
  res = {"inits": a.inits, "width": a.width, "method": a.method}
  for c_w in (100.0, 1.0):
    rows = seed_setting(x, c_w, a.width, 3, a.inits, a.method)
    res[f"linear_cw{c_w:g}"] = rows
    print(f"linear, C_W = {c_w:g}, n = {a.width}, {a.inits} inits:")
    for r in rows:
      print(f"  ℓ={r['layer']}: G2 {r['G2_00'][0]:.5g} ± {r['G2_00'][1]:.2g}"
            f" (theory {r['G2_00_theory']:.5g}; seed's formula {r['G2_00_seed_formula']:.5g})"
            f" | cross 4-pt {r['cross_0000'][0]:.4g} ± {r['cross_0000'][1]:.2g}"
            f" (theory {r['cross_0000_theory']:.4g}; seed's {r['cross_0000_seed_formula']:.4g})"
            f" | same {r['same_0000'][0]:.4g} ± {r['same_0000'][1]:.2g}"
            f" (theory {r['same_0000_theory']:.4g})")
  rows = relu_setting(x, a.width, 3, a.inits, a.method)
  res["relu_cw2"] = rows
  print(f"ReLU, C_W = 2, n = {a.width}:")
  for r in rows:
    print(f"  ℓ={r['layer']}: G2 {r['G2_00'][0]:.5g} ± {r['G2_00'][1]:.2g}"
          f" (theory {r['G2_00_theory']:.5g}) | G2_01 {r['G2_01'][0]:.4g} ± {r['G2_01'][1]:.2g}"
          f" (theory {r['G2_01_theory']:.4g}) | cross 4-pt {r['cross_0000'][0]:.4g}"
          f" ± {r['cross_0000'][1]:.2g} (leading order {r['cross_0000_theory']:.4g})")
  res["sweep"] = sweep(x, a.out, 100 if a.quick else 4000)
  res["seconds"] = time.perf_counter() - t0
  with open(os.path.join(a.out, "results.json"), "w") as f:
    json.dump(res, f, indent=1, default=float)
  print(f"wrote {a.out}/results.json and four_point_vs_depth_over_width.png"
        f" in {res['seconds']:.0f} s")


if __name__ == "__main__":
  main()
