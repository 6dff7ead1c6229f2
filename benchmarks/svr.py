"""Full SVR (all SVDs, adjacencies, p-values, thresholds, internal dimensions):
rainbow_jax vs a plain numpy/scipy implementation of the same computation.

    python benchmarks/svr.py [--quick] [--out results/svr.json]

Cases (random weights, PyTorch layout):
  * ``vgg16`` — VGG16's 13 conv layers (3→64 … 512→512, 3×3) and its three
    dense layers (25088→4096→4096→1000), full untruncated SVDs;
  * ``vgg16_topk`` — the same with `rainbow_jax.svr`'s randomized top-k SVD
    for layers whose smaller side exceeds k (numpy peer: full SVD truncated);
  * ``conv_stack_L`` — L identical 512→512 3×3 conv layers, L ∈ {4, 8, 16},
    to show the cost is linear in the number of layers;
  * ``fmnist_mlp_n`` — the section 3.2 MLPs [784, n, n, 10] (20 networks per n).
Each record carries the agreement of the adjacency matrices with numpy's
(max |Δ|) and of the internal dimensions, so speed is only counted with the
same answer. The numpy peer runs float32 LAPACK like we do.
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import jax
import numpy as np
import scipy.stats

import _common as C
from rainbow_jax import svr as V

VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
               (256, 256), (256, 512), (512, 512), (512, 512), (512, 512), (512, 512),
               (512, 512)]
VGG16_DENSE = [(512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)]


def vgg16(rng, scale=1):
  """VGG16-shaped random weights; `scale` divides every width (quick runs)."""
  ws = []
  for i, o in VGG16_CONVS:
    ws.append(rng.standard_normal((max(o // scale, 1), max(i // scale, 1) if i > 3 else 3,
                                   3, 3), dtype=np.float32))
  c = VGG16_CONVS[-1][1] // scale
  dense = [(c * 49, 4096 // scale), (4096 // scale, 4096 // scale), (4096 // scale, 1000)]
  for i, o in dense:
    ws.append(rng.standard_normal((o, i), dtype=np.float32))
  return ws


def numpy_svr(weights, alpha=0.15, top_k=None):
  """The same SVR with numpy/scipy, layer by layer: SVD of the flattened
  weights, a = Σ_p (Uᵀ V_p)², exact Beta p-values, threshold, internal
  dimensions from the 2-D cumulative sum."""
  spec = []
  for w in weights:
    m = w.reshape(w.shape[0], -1)
    u, s, vh = np.linalg.svd(m, full_matrices=False)
    if top_k is not None and min(m.shape) > top_k:
      u, s, vh = u[:, :top_k], s[:top_k], vh[:top_k]
    spec.append((u, s, vh.T))
  adj, sig, dims = [], [], []
  for (u, _, _), (_, _, v) in zip(spec[:-1], spec[1:]):
    c = u.shape[0]
    p = v.shape[0] // c
    t = np.einsum("cm,cpn->pnm", u, v.reshape(c, p, v.shape[1]))
    a = np.sum(t * t, axis=0)
    pv = scipy.stats.beta(p / 2, (c - 1) * p / 2).sf(a)
    b = np.cumsum(np.cumsum(a, 0), 1)
    ij = np.arange(1, a.shape[0] + 1)[:, None] * np.arange(1, a.shape[1] + 1)[None, :]
    k = int(np.argmax(b - ij / c))
    adj.append(a)
    sig.append(pv < alpha)
    dims.append((k // a.shape[1] + 1, k % a.shape[1] + 1))
  return spec, adj, sig, dims


def _ours(weights, top_k=None, key=None):
  res = V.svr(weights, top_k=top_k, key=key)
  return jax.block_until_ready(res)


def _compare(res, ref):
  _, adj, sig, dims = ref
  d_adj = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(res.adjacency, adj))
  sig_agree = float(np.mean(np.concatenate(
      [(np.asarray(m) == s).ravel() for m, s in zip(res.significant, sig)])))
  return {"max_abs_diff_adjacency": d_adj, "significance_agreement": sig_agree,
          "internal_dims_equal": [tuple(a) == tuple(b) for a, b in zip(res.internal_dims, dims)]}


def _timed(fn, repeats):
  first = None
  times = []
  out = None
  for r in range(repeats + 1):
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    if r == 0:
      first = dt
    else:
      times.append(dt)
  return first, float(np.median(times)), out


def case(name, weights, repeats, records, top_k=None, **extra):
  key = jax.random.key(0) if top_k is not None else None
  wj = [jax.device_put(w) for w in weights]
  first, ours, res = _timed(lambda: _ours(wj, top_k, key), repeats)
  _, peer, ref = _timed(lambda: numpy_svr(weights, top_k=top_k), repeats)
  agree = _compare(res, ref)
  if top_k is not None:  # a randomized SVD is compared on its singular values
    agree["max_rel_diff_top_singular_values"] = max(
        float(np.max(np.abs(np.asarray(sp.s) - s) / s[0])) for sp, (_, s, _) in
        zip(res.spectra, ref[0]))
  shapes = [list(w.shape) for w in weights]
  records.append(C.record("svr", "rainbow_jax", name, ours, first - ours, layers=len(weights),
                          shapes=shapes, speedup_vs_numpy=peer / ours, **agree, **extra))
  records.append(C.record("svr", "numpy", name, peer, None, layers=len(weights), **extra))
  print(f"{name:18s} ours {ours:8.3f} s (first {first:7.2f})  numpy {peer:8.3f} s"
        f"  ×{peer / ours:5.2f}  max|Δa| {agree['max_abs_diff_adjacency']:.1e}"
        f"  sig agree {agree['significance_agreement']:.4f}", flush=True)


def main(argv=None):
  p = C.parser("svr")
  p.set_defaults(repeats=2)
  a = p.parse_args(argv)
  rng = np.random.default_rng(0)
  records: list = []
  scale = 16 if a.quick else 1
  vgg = vgg16(rng, scale)
  case("vgg16", vgg, a.repeats, records)
  case("vgg16_topk", vgg, a.repeats, records, top_k=256 // scale, top_k_value=256 // scale)
  width = 512 // scale
  for L in ([2, 4] if a.quick else [4, 8, 16]):
    stack = [rng.standard_normal((width, width, 3, 3), dtype=np.float32) for _ in range(L)]
    case(f"conv_stack_{L}", stack, a.repeats, records, stack_layers=L)
  for n in ([5, 40] if a.quick else [5, 10, 20, 40, 80, 160]):
    nets = [[rng.standard_normal(s, dtype=np.float32) for s in [(n, 784), (n, n), (10, n)]]
            for _ in range(2 if a.quick else 20)]
    wj = [[jax.device_put(w) for w in net] for net in nets]
    first, ours, _ = _timed(lambda: [_ours(net) for net in wj], a.repeats)
    _, peer, _ = _timed(lambda: [numpy_svr(net) for net in nets], a.repeats)
    agree = _compare(_ours(wj[0]), numpy_svr(nets[0]))
    records.append(C.record("svr", "rainbow_jax", f"fmnist_mlp_{n}", ours, first - ours,
                            networks=len(nets), speedup_vs_numpy=peer / ours, **agree))
    records.append(C.record("svr", "numpy", f"fmnist_mlp_{n}", peer, None, networks=len(nets)))
    print(f"fmnist_mlp_{n:<7d} ours {ours:8.3f} s  numpy {peer:8.3f} s  ×{peer / ours:5.2f}",
          flush=True)
  stacks = [r for r in records if r["impl"] == "rainbow_jax" and "stack_layers" in r["extra"]]
  per_layer = [r["seconds"] / r["extra"]["stack_layers"] for r in stacks]
  notes = [f"conv_stack seconds per layer: {[round(s, 4) for s in per_layer]} (flat = linear)",
           "numpy peer: np.linalg.svd (float32 LAPACK gesdd) per layer, einsum adjacency,"
           " scipy.stats.beta.sf p-values; the reference code (danmlr/svr) is not"
           " installable here and uses truncated SVDs."]
  C.write(a.out, records, notes)


if __name__ == "__main__":
  main()
