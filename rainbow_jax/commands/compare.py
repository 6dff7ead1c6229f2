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

import functools
import itertools
import argparse
import os
from typing import Sequence

import jax
import numpy as np

from rainbow_jax import evaluate
from rainbow_jax import similarity as S
from rainbow_jax.commands import _common

MEASURES = tuple(S.TABLE)
"""Every measure of `rainbow_jax.similarity.TABLE`."""
DEFAULT = ("linear_cka", "mutual_knn", "rsa")
"""What ``compare`` computes unless told: one global, one local and one
RSA measure."""


def measure_fn(name: str, k: int = 10):
  """The jittable ``(x [n, d_x], y [n, d_y]) -> []`` of a measure of
  `rainbow_jax.similarity.TABLE` (``k``: neighbours, where it takes them)."""
  row = S.TABLE.get(name)
  if row is None:
    raise ValueError(f"unknown measure {name!r}; choose from {MEASURES}.")
  return functools.partial(row.fn, k=k) if "k" in row.options else row.fn


def compare(reps: Sequence[Sequence[np.ndarray]], labels: Sequence[str], *,
            measures: Sequence[str] = DEFAULT, k: int = 10, null_samples: int = 20,
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
        null = S.null_baseline(fn, x, y, sub, num_samples=null_samples)  # with fn(x, y)
        value[i, j], null_mean[i, j], z[i, j] = map(
            float, jax.device_get((null.score, null.mean, null.zscore())))
      out.append({"a": labels[ia], "b": labels[ib], "measure": name,
                  "value": value.tolist(), "zscore": z.tolist(),
                  "null_mean": null_mean.tolist()})
  return out


def write(rows: list[dict], layer_names: Sequence[str] | dict, out: str, *, title: str,
          conv: str = "mean", extra: dict | None = None) -> dict:
  """results.json, report.md and one heat map per (pair, measure) in `out`;
  `layer_names`: one list for networks of one architecture, or per network
  label its own."""
  from rainbow_jax import plots
  os.makedirs(out, exist_ok=True)
  names_of = (lambda label: list(layer_names[label])) if isinstance(layer_names, dict) else (
      lambda label: list(layer_names))
  md = [f"# {title}", "",
        "Each cell: the measure between a layer of the first network (row) and one of the"
        " second (column), and in brackets its z-score against the same measure with the"
        " images shuffled (how many null standard deviations above chance). Layers are"
        f" the inputs of the weight layers; conv inputs {evaluate.CONV_TEXT[conv]}.", ""]
  for n, r in enumerate(rows):
    row_names, col_names = names_of(r["a"]), names_of(r["b"])
    ax = plots.heatmap(np.asarray(r["value"]), row_names, col_names,
                       title=f"{r['measure']}: {r['a']} vs {r['b']}",
                       xlabel=str(r["b"]), ylabel=str(r["a"]))
    r["figure"] = os.path.basename(plots.save(ax, os.path.join(out, f"compare_{n}.png")))
    md += [f"## {r['measure']}: {r['a']} (rows) vs {r['b']} (columns)", "",
           "| | " + " | ".join(col_names) + " |",
           "| --- " * (len(col_names) + 1) + "|"]
    for name, vals, zs in zip(row_names, r["value"], r["zscore"]):
      md.append(f"| {name} | " + " | ".join(f"{v:.3f} ({z:.0f})" for v, z in zip(vals, zs))
                + " |")
    md += ["", f"![{r['measure']}]({r['figure']})", ""]
  results = {"command": "compare", "title": title,
             "layers": ({k: list(v) for k, v in layer_names.items()}
                        if isinstance(layer_names, dict) else list(layer_names)),
             "conv": conv, "comparisons": rows, **(extra or {})}
  _common.save_results(out, results, md)
  return results


def read_features(paths: Sequence[str], conv: str = "mean"
                  ) -> tuple[list[list[np.ndarray]], dict, list[str]]:
  """Per ``.npz`` file (one network), its layers' features as ``[N, d]``
  (`rainbow_jax.similarity.features` with `conv`), their names (the
  arrays' keys, in file order) and a label (the file's name)."""
  if len(paths) < 2:
    raise ValueError(f"--features: compare needs at least two files, got {len(paths)}.")
  reps, names, labels = [], {}, []
  for path in paths:
    if not os.path.exists(path):
      raise ValueError(f"--features {path}: no such file.")
    label = os.path.splitext(os.path.basename(path))[0]
    if label in names:
      label = f"{label} ({len(labels)})"
    with np.load(path) as f:
      keys = list(f.keys())
      if not keys:
        raise ValueError(f"--features {path}: the file holds no array.")
      layers = [np.asarray(S.features(f[k], conv)) for k in keys]
    for k, a in zip(keys, layers):
      if a.ndim != 2 or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"--features {path}: array {k!r} of shape {a.shape} and dtype"
                         f" {a.dtype}; each layer must be floating [N, ...].")
      if a.shape[0] != layers[0].shape[0] or (reps and a.shape[0] != reps[0][0].shape[0]):
        raise ValueError(f"--features {path}: array {k!r} has {a.shape[0]} inputs, others"
                         f" {layers[0].shape[0] if not reps else reps[0][0].shape[0]}; every"
                         " layer must hold the features of the same inputs.")
    reps.append(layers)
    names[label] = keys
    labels.append(label)
  return reps, names, labels


def add_parser(sub) -> argparse.ArgumentParser:
  """The ``compare`` subcommand's arguments."""
  cp = _common.network_arguments(
      sub, "compare", help="layer × layer similarity of two or more networks (CKA, mutual"
      " k-NN, RSA) with z-scores against shuffled images",
      dataset_help="its test images are compared on",
      checkpoint_help="trained variables (orbax directory or .msgpack), repeat for each"
                      " network; a checkpoint of K stacked seeds counts K", epochs=3)
  cp.add_argument("--seeds", type=int, default=2, help="without --model: networks trained")
  cp.add_argument("--test-images", type=int, default=1000, help="test images compared on")
  cp.add_argument("--measures", nargs="+", default=list(DEFAULT), choices=MEASURES,
                  help="any of `rainbow_jax.similarity.TABLE`")
  cp.add_argument("--k", type=int, default=10, help="neighbours for mutual k-NN")
  cp.add_argument("--conv", choices=tuple(evaluate.CONV_TEXT), default="mean",
                  help="conv inputs (and token sequences) averaged over positions, flattened"
                       " per image, or (cls) a sequence's first token (as analyze)")
  cp.add_argument("--null", type=int, default=20, help="shuffles per z-score")
  cp.add_argument("--features", action="append", default=[], metavar="FILE.npz",
                  help="instead of networks: one .npz per network (repeat, ≥ 2) holding its"
                       " layers' features of the same inputs in the same order, one array"
                       " [N, d], [N, T, d] or [N, H, W, C] per layer (e.g. saved from PyTorch"
                       " forward hooks); --conv folds the sequences and maps")
  cp.set_defaults(run=command)
  return cp


def command(args) -> dict:
  """Layer × layer similarity (CKA, mutual k-NN, RSA) with null z-scores of a
  user's networks (--model/--checkpoint, two or more) or of K seeds of
  --arch trained here."""
  if args.features:
    reps, layer_names, labels = read_features(args.features, args.conv)
    what = f"features of {', '.join(labels)}"
    rows = compare(reps, labels, measures=args.measures, k=args.k, null_samples=args.null,
                   seed=args.seed)
    results = write(rows, layer_names, args.out, conv=args.conv,
                    title=f"rainbow_jax compare — {what}",
                    extra={"networks": what, "images": int(len(reps[0][0]))})
  else:
    nets = _common.networks(args, seeds=args.seeds)
    net, variables, labels, what, name, ds = (nets.net, nets.variables, nets.labels,
                                              nets.what, nets.dataset, nets.data)
    if len(variables) < 2:
      raise ValueError("compare needs at least two networks (two --checkpoint, or --seeds"
                       " ≥ 2).")
    x = ds.x_test[: args.test_images]
    reps = [evaluate.representations(net, v, x, conv=args.conv) for v in variables]
    rows = compare(reps, labels, measures=args.measures, k=args.k, null_samples=args.null,
                   seed=args.seed)
    results = write(rows, [f"in {n}" for n in net.names], args.out, conv=args.conv,
                    title=f"rainbow_jax compare — {what}",
                    extra={"dataset": name, "networks": what, "images": len(x)})
  for r in rows:
    diag = [f"{r['value'][i][i]:.3f} (z {r['zscore'][i][i]:.0f})"
            for i in range(min(len(r["value"]), len(r["value"][0])))]
    print(f"{r['measure']} {r['a']} vs {r['b']}, matched layers: {', '.join(diag)}")
  print(f"wrote {args.out}/report.md, results.json and {len(rows)} heat map(s)")
  return results


__all__ = ["DEFAULT", "MEASURES", "add_parser", "command", "compare", "measure_fn",
           "read_features", "write"]
