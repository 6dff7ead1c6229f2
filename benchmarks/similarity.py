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
Then the local and RSA measures: `neighbors.mutual_knn` vs scikit-learn's
exact cosine neighbour search (5 000 datapoints), `rsa.compare` vs rsatoolbox
(RDMs of 3 000 conditions, corr and whitened cosine), and ours alone at
50 000 datapoints (mutual k-NN, CKNNA, whitened-cosine RSA), which neither
peer can hold in memory as it stores n × n matrices; and minibatch CKA of
all 9 layer pairs of two MLPs vs torch-cka (`layer_pairs_cka`).
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
  jit_pwcca = jax.jit(lambda x, y: S.pwcca(x, y, signs="largest_positive").value)
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
            # The native pwcca is timed with signs="largest_positive" (its float32
            # SVD may orient a direction otherwise than numpy's float64 one, and the
            # reference's value depends on that); compat decomposes in float64 on
            # CPU and keeps numpy's signs.
            "reference_rainbow_jax": lambda: ref.pwcca(r1, r2, signs=True)[0],
        },
        "linear_cka": {
            "numpy": lambda: numpy_linear_cka(r1, r2),
            "rainbow_jax": lambda: jit_cka(x, y),
        },
    }
    for bench, impls in peers.items():
      # The float64 numpy peer runs once on an accelerator's host (8.7 s per
      # CCA call at 2048 × 50 000 on 16 cores): the suite has 8 minutes.
      t_ref, want = _median_seconds(impls["numpy"], 1 if args.accel else args.repeats)
      want = np.asarray(want)
      records.append(C.record(bench, "numpy", case, t_ref, None, dtype="float64"))
      print(bench, case, f"numpy {t_ref:.3f}s")
      for impl in ("rainbow_jax", "rainbow_jax_compat"):
        if impl not in impls:
          continue
        first, t = C.time_fn(impls[impl], args.repeats)
        target = np.asarray(impls[f"reference_{impl}"]()) if f"reference_{impl}" in impls \
            else want
        got = np.asarray(impls[impl]()).ravel()[: target.size]
        err = float(np.max(np.abs(got.astype(np.float64) - target)))
        records.append(C.record(bench, impl, case, t, first - t, dtype="float32",
                                max_abs_diff_vs_numpy=err, speedup_vs_numpy=t_ref / t))
        print(bench, case, f"{impl} {t:.3f}s  x{t_ref / t:.1f}  |Δ| {err:.1e}")
  local_and_rsa(args, rng, records)
  layer_pairs_cka(args, records)
  C.write(args.out, records)


def layer_pairs_cka(args, records):
  """Minibatch CKA of every layer pair of two tutorial MLPs (784-512-256-10,
  PyTorch's default init, seeds 0 and 1) over N inputs in batches of 500:
  torch-cka's ``CKA.compare`` (hooks, forward passes and its HSIC, float32 as
  users run it) vs ours (the same weights, forward passes and all 9 pairs'
  `minibatch_cka_update` in one scanned program)."""
  torch = C.torch_or_none()
  try:
    import torch_cka
  except ImportError:
    torch_cka = None
  if torch is None or torch_cka is None:
    print("torch or torch-cka missing: layer-pair CKA peer skipped")
    return
  n, b = (1000, 250) if args.quick else (10_000, 500)
  x = np.random.default_rng(1).normal(size=(n, 784)).astype(np.float32)
  nn = torch.nn
  nets = []
  for seed in (0, 1):
    torch.manual_seed(seed)
    nets.append(nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                              nn.Linear(256, 10)))
  layers = ["0", "2", "4"]
  tx = torch.from_numpy(x)
  loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tx, tx[:, 0]),
                                       batch_size=b)

  def theirs():
    peer = torch_cka.CKA(nets[0], nets[1], model1_name="seed0", model2_name="seed1",
                         model1_layers=layers, model2_layers=layers, device="cpu")
    peer.compare(loader, loader)
    return peer.export()["CKA"].numpy()

  params = [[(jnp.asarray(m[i].weight.detach().numpy()), jnp.asarray(m[i].bias.detach().numpy()))
             for i in (0, 2, 4)] for m in nets]
  xb = jnp.asarray(x.reshape(n // b, b, 784))

  @jax.jit
  def ours(params, xb):
    def feats(ps, h):
      out = []
      for i, (w, bias) in enumerate(ps):
        h = jnp.matmul(h, w.T, precision=jax.lax.Precision.HIGHEST) + bias[None, :]
        out.append(h)
        h = jnp.maximum(h, 0) if i < len(ps) - 1 else h
      return out

    def step(states, batch):
      f1, f2 = feats(params[0], batch), feats(params[1], batch)
      return [[S.minibatch_cka_update(states[i][j], f1[i], f2[j]) for j in range(3)]
              for i in range(3)], None

    init = [[S.minibatch_cka_init() for _ in range(3)] for _ in range(3)]
    states, _ = jax.lax.scan(step, init, xb)
    return jnp.array([[S.minibatch_cka_value(s) for s in row] for row in states])

  t_ref, want = _median_seconds(theirs, 1 if args.quick else args.repeats)
  first, t = C.time_fn(lambda: ours(params, xb), args.repeats)
  got = np.asarray(ours(params, xb))
  case = {"networks": "2 × MLP 784-512-256-10", "inputs": n, "batch": b, "pairs": 9}
  records.append(C.record("minibatch_cka_pairs", "torch_cka", case, t_ref, None))
  records.append(C.record("minibatch_cka_pairs", "rainbow_jax", case, t, first - t,
                          max_abs_diff_vs_torch_cka=float(np.max(np.abs(got - want))),
                          speedup_vs_torch_cka=t_ref / t))
  print("minibatch CKA, 9 layer pairs", case, f"torch-cka {t_ref:.2f}s  ours {t:.2f}s"
        f"  x{t_ref / t:.1f}  max|Δ| {np.max(np.abs(got - want)):.1e}", flush=True)


def local_and_rsa(args, rng, records):
  """Mutual k-NN vs scikit-learn's exact neighbour search (what the reference
  pipelines call), and RDM comparison vs rsatoolbox, on the same data; then
  ours alone at n = 50 000 datapoints, where both peers would hold n × n
  matrices (10 GB each in float32)."""
  from rainbow_jax.similarity import neighbors, rsa
  try:
    import rsatoolbox
  except ImportError:
    rsatoolbox = None
  try:
    from sklearn.neighbors import NearestNeighbors
  except ImportError:
    NearestNeighbors = None
  n, d, k = (500, 32, 10) if args.quick else (5000, 256, 10)
  z = rng.normal(size=(n, d)).astype(np.float32)
  a = np.maximum(z @ rng.normal(size=(d, d)).astype(np.float32), 0) + 1e-3
  b = np.maximum(z @ rng.normal(size=(d, d)).astype(np.float32), 0) + 1e-3

  def sk_mknn():
    nn = [NearestNeighbors(n_neighbors=k, metric="cosine").fit(v).kneighbors(
        return_distance=False) for v in (a, b)]
    return np.mean([len(set(p) & set(q)) for p, q in zip(*nn)]) / k

  mk = jax.jit(lambda x, y: neighbors.mutual_knn(x, y, k))
  aj, bj = jnp.asarray(a), jnp.asarray(b)
  if NearestNeighbors is None:
    print("scikit-learn missing: mutual k-NN peer skipped")
  else:
    local_peer(sk_mknn, lambda: mk(aj, bj), "mutual_knn", "sklearn",
               {"datapoints": n, "neurons": d, "k": k}, args, records)

  m = 300 if args.quick else 3000
  for method in ("corr", "cosine_cov"):
    if rsatoolbox is None:
      print("rsatoolbox missing: RSA peer skipped")
      break

    def theirs(method=method):
      rdms = [rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(v[:m].astype(np.float64)),
                                      method="euclidean") for v in (a, b)]
      return rsatoolbox.rdm.compare(*rdms, method=method)[0, 0]
    local_peer(theirs, lambda method=method: rsa.compare(aj[:m], bj[:m], method=method),
               "rsa_compare", "rsatoolbox",
               {"conditions": m, "neurons": d, "rdm": "euclidean", "method": method},
               args, records)

  big = 2000 if args.quick else 50_000
  zb = jnp.asarray(rng.normal(size=(big, d)).astype(np.float32))
  xb = jnp.maximum(zb @ jnp.asarray(rng.normal(size=(d, d)), jnp.float32), 0)
  yb = jnp.maximum(zb @ jnp.asarray(rng.normal(size=(d, d)), jnp.float32), 0)
  for bench, fn in (("mutual_knn", lambda: neighbors.mutual_knn(xb, yb, k)),
                    ("cknna", lambda: neighbors.cknna(xb, yb, k)),
                    ("rsa_compare", lambda: rsa.compare(xb, yb, method="cosine_cov",
                                                        block=512))):
    t, value = C.seconds(fn)
    records.append(C.record(bench, "rainbow_jax", {"datapoints": big, "neurons": d},
                            t, None, value=float(value), compile_included=True,
                            peer="none (n × n matrices)"))
    print(bench, big, f"ours {t:.1f}s value {float(value):.4f}", flush=True)


def local_peer(peer, ours, bench, name, case, args, records):
  """Times a peer and ours on the same work; records both and the agreement."""
  t_ref, want = _median_seconds(peer, args.repeats)
  first, t = C.time_fn(ours, args.repeats)
  records.append(C.record(bench, name, case, t_ref, None))
  records.append(C.record(bench, "rainbow_jax", case, t, first - t,
                          **{f"abs_diff_vs_{name}": abs(float(ours()) - float(want)),
                             f"speedup_vs_{name}": t_ref / t}))
  print(bench, case, f"{name} {t_ref:.3f}s  ours {t:.3f}s  x{t_ref / t:.1f}", flush=True)


if __name__ == "__main__":
  main()
