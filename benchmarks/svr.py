"""Full SVR (all SVDs, adjacencies, p-values, thresholds, internal dimensions):
rainbow_jax vs a plain numpy/scipy implementation of the same computation.

    python benchmarks/svr.py [--quick] [--out results/svr.json]

Cases (random weights, PyTorch layout):
  * ``vgg16`` — VGG16's 13 conv layers (3→64 … 512→512, 3×3) and its three
    dense layers (25088→4096→4096→1000), full untruncated SVDs;
  * ``vgg16_gram`` — the same with ``solver='gram'`` (eigh of the smaller
    Gram matrix; still untruncated); ``_thresholds``: significance from the
    null law's critical value without every edge's p-value;
  * ``vgg16_top256`` — randomized top-k SVD for layers whose smaller side
    exceeds k = 256 (compared with the full SVD's top k);
  * ``conv_stack_L`` — L identical 512→512 3×3 conv layers, L ∈ {4, 8, 16},
    to show the cost is linear in the number of layers;
  * ``fmnist_mlp_n`` — the section 3.2 MLPs [784, n, n, 10] (20 networks per n):
    `svr` per network, and ``rainbow_jax_stack``: `svr_stack`, all 20 at once.
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

import _common as C
import jax
import numpy as np
import scipy.stats

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


def numpy_svr(weights, alpha=0.15):
  """The same SVR with numpy/scipy, layer by layer: SVD of the flattened
  weights, a = Σ_p (Uᵀ V_p)², exact Beta p-values, threshold, internal
  dimensions from the 2-D cumulative sum."""
  spec = []
  for w in weights:
    m = w.reshape(w.shape[0], -1)
    u, s, vh = np.linalg.svd(m, full_matrices=False)
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


def _ours(weights, top_k=None, key=None, method="svd", with_pvalues=True):
  res = V.svr(weights, top_k=top_k, key=key, solver=method, with_pvalues=with_pvalues)
  return jax.block_until_ready(res)


def _compare(res, ref):
  spec, adj, sig, dims = ref
  d_adj = max(float(np.max(np.abs(np.asarray(a)[: b.shape[0], : b.shape[1]]
                                  - b[: a.shape[0], : a.shape[1]])))
              for a, b in zip(res.adjacency, adj))
  sig_agree = float(np.mean(np.concatenate(
      [(np.asarray(m)[: s.shape[0], : s.shape[1]] == s[: m.shape[0], : m.shape[1]]).ravel()
       for m, s in zip(res.significant, sig)])))
  s_rel = max(float(np.max(np.abs(np.asarray(sp.s) - s[: sp.s.shape[0]]) / s[0]))
              for sp, (_, s, _) in zip(res.spectra, spec))
  return {"max_abs_diff_adjacency": d_adj, "significance_agreement": sig_agree,
          "max_rel_diff_singular_values": s_rel,
          "internal_dims_equal": [tuple(a) == tuple(b) for a, b in zip(res.internal_dims, dims)]}


def _timed(fn, repeats):
  """(first-call seconds, median of `repeats` further calls, result)."""
  t0 = time.perf_counter()
  out = fn()
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return first, float(np.median(times)) if times else first, out


def case(name, weights, repeats, records, modes=(("svd", None, True),), **extra):
  """Times numpy once per case (no compilation to amortise) and each of our
  modes (method, top_k) with a first call and `repeats` more."""
  wj = [jax.device_put(w) for w in weights]
  peer, _, ref = _timed(lambda: numpy_svr(weights), 0)
  shapes = [list(w.shape) for w in weights]
  records.append(C.record("svr", "numpy", name, peer, None, layers=len(weights), **extra))
  for method, top_k, pv in modes:
    key = jax.random.key(0) if top_k is not None else None
    first, ours, res = _timed(lambda t=top_k, k=key, m=method, q=pv: _ours(wj, t, k, m, q),
                              repeats)
    agree = _compare(res, ref)
    label = (name + ("" if method == "svd" else f"_{method}") + (f"_top{top_k}" if top_k else "")
             + ("" if pv else "_thresholds"))
    records.append(C.record("svr", "rainbow_jax", label, ours, max(first - ours, 0.0),
                            method=method, top_k=top_k, with_pvalues=pv,
                            layers=len(weights), shapes=shapes,
                            numpy_seconds=peer, speedup_vs_numpy=peer / ours, **agree, **extra))
    print(f"{label:22s} ours {ours:8.3f} s (first {first:7.2f})  numpy {peer:8.3f} s"
          f"  ×{peer / ours:5.2f}  max|Δa| {agree['max_abs_diff_adjacency']:.1e}"
          f"  max|Δs|/s₀ {agree['max_rel_diff_singular_values']:.1e}"
          f"  sig agree {agree['significance_agreement']:.4f}", flush=True)


def main(argv=None):
  p = C.parser("svr")
  p.set_defaults(repeats=2)
  a = C.parse_args(p, argv)
  rng = np.random.default_rng(0)
  records: list = []
  scale = 16 if a.quick else 1
  vgg = vgg16(rng, scale)
  k = 256 // scale
  case("vgg16", vgg, 0 if not a.quick else a.repeats, records,
       modes=(("svd", None, True), ("gram", None, True), ("gram", None, False),
              ("svd", k, False)))
  width = 512 // scale
  for L in ([2, 4] if a.quick else [4, 8, 16]):
    stack = [rng.standard_normal((width, width, 3, 3), dtype=np.float32) for _ in range(L)]
    case(f"conv_stack_{L}", stack, a.repeats, records, stack_layers=L)
  for n in ([5, 40] if a.quick else [5, 10, 20, 40, 80, 160]):
    nets = [[rng.standard_normal(s, dtype=np.float32) for s in [(n, 784), (n, n), (10, n)]]
            for _ in range(2 if a.quick else 20)]
    wj = [[jax.device_put(w) for w in net] for net in nets]
    first, ours, _ = _timed(lambda wj=wj: [_ours(net) for net in wj], a.repeats)
    peer, _, _ = _timed(lambda nets=nets: [numpy_svr(net) for net in nets], 0)
    agree = _compare(_ours(wj[0]), numpy_svr(nets[0]))
    records.append(C.record("svr", "rainbow_jax", f"fmnist_mlp_{n}", ours, first - ours,
                            networks=len(nets), speedup_vs_numpy=peer / ours, **agree))
    records.append(C.record("svr", "numpy", f"fmnist_mlp_{n}", peer, None, networks=len(nets)))
    stacked = [jax.device_put(np.stack([net[l] for net in nets])) for l in range(3)]
    s_first, s_ours, s_res = _timed(lambda st=stacked: V.svr_stack(st), a.repeats)
    s_agree = _compare(V.take(s_res, 0), numpy_svr(nets[0]))
    records.append(C.record("svr", "rainbow_jax_stack", f"fmnist_mlp_{n}", s_ours,
                            s_first - s_ours, networks=len(nets),
                            speedup_vs_numpy=peer / s_ours, **s_agree))
    print(f"fmnist_mlp_{n:<7d} ours {ours:8.3f} s  stacked {s_ours:8.3f} s  numpy {peer:8.3f} s"
          f"  ×{peer / ours:5.2f} / ×{peer / s_ours:5.2f}", flush=True)
  stacks = [r for r in records if r["impl"] == "rainbow_jax" and "stack_layers" in r["extra"]]
  per_layer = [r["seconds"] / r["extra"]["stack_layers"] for r in stacks]
  notes = [f"conv_stack seconds per layer: {[round(s, 4) for s in per_layer]} (flat = linear)",
           "numpy peer: np.linalg.svd (float32 LAPACK gesdd) per layer, einsum adjacency,"
           " scipy.stats.beta.sf p-values; the reference code (danmlr/svr) is not"
           " installable here and uses truncated SVDs."]
  C.write(a.out, records, notes)


if __name__ == "__main__":
  main()
