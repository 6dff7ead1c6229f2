"""`rainbow-jax compare`: layer × layer similarity of K networks, calibrated.

For every pair of networks and every measure (linear CKA, mutual k-NN,
RSA), the matrix of similarities between their hidden representations (the
input of each weight layer, conv inputs averaged over positions or flattened
per image — `rainbow_jax.evaluate.representations`, the same as ``analyze``),
each entry beside its z-score against `similarity.null_baseline`
(the same measure with the images' correspondence shuffled): a CKA of 0.6
means little when shuffled data already scores 0.5. Writes results.json,
report.md and a heat map per pair and measure.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Sequence

import jax
import numpy as np

from rainbow_jax import evaluate, neighbors, rsa
from rainbow_jax import similarity as S

MEASURES = ("linear_cka", "mutual_knn", "rsa")


def measure_fn(name: str, k: int = 10):
  """The jittable ``(x [n, d_x], y [n, d_y]) -> []`` of a measure name:
  linear CKA, mutual k-NN (cosine, k neighbours) or RSA (Pearson
  correlation of correlation-distance RDMs, rsatoolbox's classic pairing)."""
  if name == "linear_cka":
    return S.linear_cka
  if name == "mutual_knn":
    return lambda a, b: neighbors.mutual_knn(a, b, k)
  if name == "rsa":
    return lambda a, b: rsa.compare(a, b, method="corr", rdm1="correlation")
  raise ValueError(f"unknown measure {name!r}; choose from {MEASURES}.")


def compare(reps: Sequence[Sequence[np.ndarray]], labels: Sequence[str], *,
            measures: Sequence[str] = MEASURES, k: int = 10, null_samples: int = 20,
            seed: int = 0) -> list[dict]:
  """Layer × layer matrices of every measure for every pair of networks.

  Args:
    reps: per network, its layers' ``[N, d_l]`` representations of the same
      N inputs (`rainbow_jax.evaluate.representations`).
    labels: a label per network.
    measures: names from `MEASURES`.
    k: neighbours for mutual k-NN.
    null_samples: shuffles per entry for the z-scores (≥ 2).
    seed: PRNG seed of the shuffles.

  Returns:
    One dict per (pair, measure): ``a``, ``b`` (labels), ``measure``,
    ``value`` and ``zscore`` (``[L_a, L_b]`` nested lists), ``null_mean``.
  """
  if len(reps) < 2:
    raise ValueError(f"compare needs at least 2 networks, got {len(reps)}.")
  out = []
  key = jax.random.key(seed)
  fns = {name: jax.jit(measure_fn(name, k)) for name in measures}  # compiled once per shape
  for (ia, ra), (ib, rb) in itertools.combinations(enumerate(reps), 2):
    for name, fn in fns.items():
      value = np.zeros((len(ra), len(rb)))
      z = np.zeros_like(value)
      null_mean = np.zeros_like(value)
      for (i, x), (j, y) in itertools.product(enumerate(ra), enumerate(rb)):
        key, sub = jax.random.split(key)
        v = fn(x, y)
        null = S.null_baseline(fn, x, y, sub, num_samples=null_samples)
        value[i, j], z[i, j] = float(v), float(null.zscore(v))
        null_mean[i, j] = float(null.mean)
      out.append({"a": labels[ia], "b": labels[ib], "measure": name,
                  "value": value.tolist(), "zscore": z.tolist(),
                  "null_mean": null_mean.tolist()})
  return out


def write(rows: list[dict], layer_names: Sequence[str], out: str, *, title: str,
          conv: str = "mean", extra: dict | None = None) -> dict:
  """results.json, report.md and one heat map per (pair, measure) in `out`."""
  from rainbow_jax import plots
  os.makedirs(out, exist_ok=True)
  md = [f"# {title}", "",
        "Each cell: the measure between a layer of the first network (row) and one of the"
        " second (column), and in brackets its z-score against the same measure with the"
        " images shuffled (how many null standard deviations above chance). Layers are"
        f" the inputs of the weight layers; conv inputs {evaluate.CONV_TEXT[conv]}.", ""]
  for n, r in enumerate(rows):
    ax = plots.heatmap(np.asarray(r["value"]), layer_names, layer_names,
                       title=f"{r['measure']}: {r['a']} vs {r['b']}",
                       xlabel=str(r["b"]), ylabel=str(r["a"]))
    r["figure"] = os.path.basename(plots.save(ax, os.path.join(out, f"compare_{n}.png")))
    md += [f"## {r['measure']}: {r['a']} (rows) vs {r['b']} (columns)", "",
           "| | " + " | ".join(layer_names) + " |",
           "| --- " * (len(layer_names) + 1) + "|"]
    for name, vals, zs in zip(layer_names, r["value"], r["zscore"]):
      md.append(f"| {name} | " + " | ".join(f"{v:.3f} ({z:.0f})" for v, z in zip(vals, zs))
                + " |")
    md += ["", f"![{r['measure']}]({r['figure']})", ""]
  results = {"command": "compare", "title": title, "layers": list(layer_names),
             "conv": conv, "comparisons": rows, **(extra or {})}
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(out, "report.md"), "w") as f:
    f.write("\n".join(md) + "\n")
  return results


__all__ = ["MEASURES", "compare", "measure_fn", "write"]
