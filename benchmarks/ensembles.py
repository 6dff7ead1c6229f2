"""Init ensembles: the seed's PyTorch loop vs brute-force vmapped JAX vs the
Gram sampler, on the seed's setting.

    python benchmarks/ensembles.py [--quick] [--out results/ensembles.json]

Setting (seed 004): 1 000 inits of a bias-free deep linear network, input
dimension 10, width n = 1 000, L = 3 layers, 2 unit-norm inputs, C_W = 100.
Implementations, each producing every layer's preactivations on both
inputs for every init:
  * ``pytorch_loop`` — the seed's loop: build three ``nn.Linear`` per init,
    normal init with std √(C_W/fan_in), zero bias, forward the inputs;
  * ``jax_brute_<impl>`` — `rainbow_jax.ensembles.sample(method='brute')`
    (draws all 2·10⁹ weights), for the PRNG implementations threefry
    (default), rbg and unsafe_rbg;
  * ``jax_gram`` — the exact conditional-Gaussian sampler (O(n k²) per layer).
Each record carries the layer-3 kernel G2₀₀ it measured, relative to the
theory C_W³ q₀, so the speed comes with its answer.
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common as C
import jax
import numpy as np

from rainbow_jax import ensembles as E


def torch_loop(x, n, depth, c_w, inits, torch):
  """The seed's procedure (rewritten): one freshly initialised network per init."""
  acts = [[] for _ in range(depth)]
  with torch.no_grad():
    for _ in range(inits):
      h = x
      for l in range(depth):
        fan_in = h.shape[1]
        layer = torch.nn.Linear(fan_in, n, device=x.device)
        torch.nn.init.normal_(layer.weight, std=(c_w / fan_in) ** 0.5)
        torch.nn.init.zeros_(layer.bias)
        h = layer(h)
        acts[l].append(h)
  return [torch.stack(a) for a in acts]  # [inits, k, n]


def _g2_ratio(z_last, q0, c_w, depth):
  z = np.asarray(z_last, np.float64)
  return float(np.mean(z[:, 0, :] ** 2) / (c_w**depth * q0))


def main(argv=None):
  p = C.parser("ensembles")
  p.set_defaults(repeats=1)
  a = C.parse_args(p, argv)
  inits, n, depth, c_w, dim = (50, 200, 3, 100.0, 10) if a.quick else (1000, 1000, 3, 100.0, 10)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, dim)).astype(np.float32)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  q0 = float(np.sum(x[0].astype(np.float64) ** 2) / dim)
  records, notes = [], []
  torch = C.torch_or_none()
  case = f"inits{inits}_n{n}_L{depth}"
  if torch is None:
    notes.append("torch is not installed: the PyTorch loop was skipped.")
    t_torch = None
  else:
    torch.manual_seed(0)
    xt = torch.from_numpy(x).to(C.torch_device(torch))
    t_torch, zt = C.seconds(lambda: torch_loop(xt, n, depth, c_w, inits, torch))
    records.append(C.record("ensembles", "pytorch_loop", case, t_torch, None,
                            g2_over_theory=_g2_ratio(zt[-1].cpu().numpy(), q0, c_w, depth)))
    print(f"pytorch loop: {t_torch:.2f} s", flush=True)
  widths = [n] * depth
  runs = [(f"jax_brute_{impl}", "brute", impl) for impl in ("threefry2x32", "rbg", "unsafe_rbg")]
  runs.append(("jax_gram", "gram", "threefry2x32"))
  for name, method, impl in runs:
    key = jax.random.key(0, impl=impl)

    def go(key=key, method=method):
      return E.sample(key, x, widths, num_inits=inits, c_w=c_w, method=method)

    t0 = time.perf_counter()
    z = jax.block_until_ready(go())
    first = time.perf_counter() - t0
    times = []
    for _ in range(a.repeats):
      t0 = time.perf_counter()
      z = jax.block_until_ready(go())
      times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    extra = {"prng": impl, "method": method, "g2_over_theory": _g2_ratio(z[-1], q0, c_w, depth),
             "normals": int(inits * (dim * n + (depth - 1) * n * n)) if method == "brute"
             else int(inits * depth * 2 * n)}
    if t_torch is not None:
      extra["speedup_vs_pytorch"] = t_torch / sec
    records.append(C.record("ensembles", name, case, sec, max(first - sec, 0.0), **extra))
    print(f"{name}: {sec:.3f} s (first {first:.2f} s)"
          + (f", ×{t_torch / sec:.1f} vs PyTorch" if t_torch else ""), flush=True)
  C.write(a.out, records, notes)


if __name__ == "__main__":
  main()
