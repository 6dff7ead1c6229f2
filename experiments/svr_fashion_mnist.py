"""SVR experiments of Meller & Berkouk (section 3.2, Figure 2) on Fashion-MNIST.

1. Internal dimensions vs width: MLPs [784, n, n, 10] for every n of
   ``--widths``, ``--seeds`` seeds per width trained as one vmapped program
   for ``--epochs`` epochs; the internal dimensions (d_out, d_in) of both
   adjacency matrices with their spread over seeds, and test accuracy. The
   same at initialisation, as the random baseline.
2. Before vs after training: the SVR of [784, 40, 40, 40, 10] at init and
   after training (Figure 2, adjacency heatmaps), the strength of its block
   structure, and the test accuracy after pruning every layer to its internal
   dimensions (SVD compression; `rainbow_jax.svr.keep_ranks`).

Writes ``OUT/results.json`` and PNG figures; prints a summary.

  python experiments/svr_fashion_mnist.py --out results/svr_fashion_mnist
  python experiments/svr_fashion_mnist.py --quick --out /tmp/svr   # seconds
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import data, models, network, plots, svr, train


@functools.lru_cache(maxsize=None)
def _net(model):
  """The network adapter of one MLP architecture, discovered once."""
  x = jax.ShapeDtypeStruct((1, model.dims[0]), jnp.float32)
  params = model.init(jax.random.key(0), jnp.zeros(x.shape))["params"]
  return network.from_linen(model, params, x)


def _kernels(model, params):
  """Kernels of one seed of our MLP, in call order."""
  return _net(model).kernels(params)


def _with_kernels(model, params, kernels):
  return _net(model).with_kernels(params, kernels)


def _svr_of(model, params, k):
  return svr.svr(svr.from_flax(_kernels(model, train.select(params, k))))


def _stack_dims(model, params):
  """Internal dimensions of every seed at once (`svr.svr_stack`): per edge
  an ``[K, 2]`` array of (d_out, d_in)."""
  native = jax.vmap(lambda p: svr.from_flax(_kernels(model, p)))(params)
  return [np.asarray(d) for d in svr.svr_stack(native).internal_dims]


def _deviation(result):
  """Per edge, max_{i,j} B_ij − ij/n (B the 2-D cumulative adjacency): the
  mass the internal-dimension block holds beyond the random baseline."""
  out = []
  for a, c in zip(result.adjacency, result.channels):
    a = np.asarray(a, np.float64)
    b = np.cumsum(np.cumsum(a, 0), 1)
    ij = np.arange(1, a.shape[0] + 1)[:, None] * np.arange(1, a.shape[1] + 1)[None, :]
    out.append(float(np.max(b - ij / c)))
  return out


def _spread(v):
  v = np.asarray(v, np.float64)
  return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
          "min": float(v.min()), "max": float(v.max())}


def widths_experiment(ds, widths, seeds, epochs, out):
  rows = []
  for n in widths:
    model = models.make("mlp", ds.x_train.shape[1:], ds.num_classes, widths=[n, n])
    init_params = train.init(model, train.sgd(), seeds, ds.x_train.shape[1:]).params
    state, hist = train.fit(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                            seeds=seeds, epochs=epochs)
    trained = _stack_dims(model, state.params)
    at_init = _stack_dims(model, init_params)
    row = {"width": n, "test_accuracy": _spread(hist.test_accuracy[-1]),
           "test_accuracy_per_seed": hist.test_accuracy[-1].tolist(),
           "train_seconds": float(hist.seconds.sum())}
    for e in range(2):
      for j, side in enumerate(("d_out", "d_in")):
        row[f"edge{e}_{side}"] = _spread(trained[e][:, j])
        row[f"edge{e}_{side}_init"] = _spread(at_init[e][:, j])
    rows.append(row)
    print(f"n={n:4d}  acc {row['test_accuracy']['mean']:.1f}±{row['test_accuracy']['std']:.1f}"
          f"  edge0 (d_out, d_in) = ({row['edge0_d_out']['mean']:.1f}, "
          f"{row['edge0_d_in']['mean']:.1f})  edge1 = ({row['edge1_d_out']['mean']:.1f}, "
          f"{row['edge1_d_in']['mean']:.1f})", flush=True)

  plt = plots._plt()
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  x = np.asarray(widths)
  for e, ax in enumerate(axes[:2]):
    for side, mk in (("d_out", "o"), ("d_in", "s")):
      for tag, ls in (("", "-"), ("_init", ":")):
        m = np.array([r[f"edge{e}_{side}{tag}"]["mean"] for r in rows])
        s = np.array([r[f"edge{e}_{side}{tag}"]["std"] for r in rows])
        ax.errorbar(x, m, yerr=s, marker=mk, ls=ls, capsize=3,
                    label=f"{side}{' (init)' if tag else ''}")
    ax.plot(x, x, color="0.7", lw=0.8, label="n")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width n")
    ax.set_ylabel("internal dimension")
    ax.set_title(f"adjacency {e + 1} ({'784→n / n→n' if e == 0 else 'n→n / n→10'})")
    ax.legend(fontsize=7)
  acc = np.array([r["test_accuracy"]["mean"] for r in rows])
  acc_sd = np.array([r["test_accuracy"]["std"] for r in rows])
  axes[2].errorbar(x, acc, yerr=acc_sd, marker="o", capsize=3)
  axes[2].set_xscale("log")
  axes[2].set_xlabel("width n")
  axes[2].set_ylabel("test accuracy (%)")
  axes[2].set_title(f"[784, n, n, 10], {epochs} epochs, {len(seeds)} seeds")
  plots.save(fig, os.path.join(out, "internal_dimensions_vs_width.png"))
  return rows


def before_after_experiment(ds, width, depth, seeds, epochs, out):
  model = models.make("mlp", ds.x_train.shape[1:], ds.num_classes, widths=[width] * depth)
  init_params = train.init(model, train.sgd(), seeds, ds.x_train.shape[1:]).params
  state, hist = train.fit(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                          seeds=seeds, epochs=epochs)
  before = [_svr_of(model, init_params, k) for k in range(len(seeds))]
  after = [_svr_of(model, state.params, k) for k in range(len(seeds))]
  # Prune every seed to its internal dimensions and evaluate all at once.
  pruned, ranks = [], []
  for k, res in enumerate(after):
    p = train.select(state.params, k)
    r = svr.keep_ranks(res)
    ranks.append(r)
    native = svr.low_rank(svr.from_flax(_kernels(model, p)), r)
    pruned.append(_with_kernels(model, p, svr.to_flax(native)))
  pruned = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *pruned)
  acc_pruned = np.asarray(train.accuracy(pruned, jnp.asarray(ds.x_test),
                                         jnp.asarray(ds.y_test), model=model))
  acc = hist.test_accuracy[-1]
  # For scale: every layer cut to the same rank r (capped at its size).
  sweep = {}
  x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
  for r in (2, 5, 10, 15, 20, 30, width):
    cut = []
    for k in range(len(seeds)):
      p = train.select(state.params, k)
      native = svr.from_flax(_kernels(model, p))
      rr = [min(r, *w.shape) for w in native]
      cut.append(_with_kernels(model, p, svr.to_flax(svr.low_rank(native, rr))))
    cut = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *cut)
    sweep[r] = _spread(np.asarray(train.accuracy(cut, x_test, y_test, model=model)))
  dims = [w.shape for w in svr.from_flax(_kernels(model, train.select(state.params, 0)))]
  full = sum(o * i for o, i in dims)
  factored = [sum(rk * (o + i) for rk, (o, i) in zip(r, dims)) for r in ranks]
  n_edges = len(after[0].adjacency)
  dev_b = np.array([_deviation(r) for r in before])
  dev_a = np.array([_deviation(r) for r in after])
  sig_top = lambda res: [float(np.mean(np.asarray(m)[:d_out, :d_in]))
                         for m, (d_out, d_in) in zip(res.significant, res.internal_dims)]
  result = {
      "architecture": list(model.dims),
      "test_accuracy": _spread(acc),
      "pruned_test_accuracy": _spread(acc_pruned),
      "accuracy_drop": _spread(acc - acc_pruned),
      "accuracy_drop_per_seed": (acc - acc_pruned).tolist(),
      "uniform_rank_accuracy": {str(r): v for r, v in sweep.items()},
      "keep_ranks_per_seed": ranks,
      "parameters_full": full,
      "parameters_factored": _spread(factored),
      "internal_dims_after": [[list(d) for d in r.internal_dims] for r in after],
      "internal_dims_before": [[list(d) for d in r.internal_dims] for r in before],
      "block_deviation_before": [_spread(dev_b[:, e]) for e in range(n_edges)],
      "block_deviation_after": [_spread(dev_a[:, e]) for e in range(n_edges)],
      "significant_fraction_in_block_after": [
          _spread([sig_top(r)[e] for r in after]) for e in range(n_edges)],
      "significant_fraction_all_before": [
          _spread([float(np.mean(np.asarray(r.significant[e]))) for r in before])
          for e in range(n_edges)],
      "significant_fraction_all_after": [
          _spread([float(np.mean(np.asarray(r.significant[e]))) for r in after])
          for e in range(n_edges)],
  }
  for tag, res in (("before", before[0]), ("after", after[0])):
    plots.save(plots.svr_graph(res, title=f"SVR {list(model.dims)}, {tag} training (seed 0)"),
               os.path.join(out, f"svr_graph_{tag}.png"))
    plt = plots._plt()
    fig, axes = plt.subplots(1, n_edges, figsize=(4.6 * n_edges, 4))
    for e, ax in enumerate(np.atleast_1d(axes)):
      plots.adjacency(res.adjacency[e], ax=ax, dims=res.internal_dims[e],
                      title=f"{tag}: adjacency {e + 1}, dims {res.internal_dims[e]}")
    plots.save(fig, os.path.join(out, f"adjacency_{tag}.png"))
  print(f"{list(model.dims)}: accuracy {result['test_accuracy']['mean']:.2f}"
        f" → pruned {result['pruned_test_accuracy']['mean']:.2f}"
        f" (drop {result['accuracy_drop']['mean']:.2f} ± {result['accuracy_drop']['std']:.2f}),"
        f" parameters {full} → {result['parameters_factored']['mean']:.0f};"
        f" same rank r everywhere: {[(r, round(v['mean'], 1)) for r, v in sweep.items()]};"
        f" block deviation before {[round(d['mean'], 2) for d in result['block_deviation_before']]}"
        f" after {[round(d['mean'], 2) for d in result['block_deviation_after']]}", flush=True)
  return result


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--dataset", default="fashion_mnist")
  p.add_argument("--widths", type=int, nargs="+", default=[5, 10, 20, 40, 80, 160])
  p.add_argument("--seeds", type=int, default=20)
  p.add_argument("--epochs", type=int, default=5)
  p.add_argument("--out", default="results/svr_fashion_mnist")
  p.add_argument("--quick", action="store_true",
                 help="digits, 2 widths, 2 seeds, 5 epochs: a smoke run in seconds")
  a = p.parse_args(argv)
  if a.quick:
    a.dataset, a.widths, a.seeds, a.epochs = "digits", [5, 20], 2, 5
  os.makedirs(a.out, exist_ok=True)
  ds = data.load(a.dataset)
  seeds = list(range(a.seeds))
  t0 = time.perf_counter()
  rows = widths_experiment(ds, a.widths, seeds, a.epochs, a.out)
  deep = before_after_experiment(ds, 40, 3, seeds, a.epochs, a.out)
  res = {"dataset": a.dataset, "seeds": a.seeds, "epochs": a.epochs, "widths": rows,
         "before_after": deep, "seconds": time.perf_counter() - t0,
         "versions": {"jax": jax.__version__, "python": platform.python_version()},
         "device": str(jax.devices()[0])}
  with open(os.path.join(a.out, "results.json"), "w") as f:
    json.dump(res, f, indent=1)
  print(f"wrote {a.out}/results.json and figures in {res['seconds']:.0f} s")
  return res


if __name__ == "__main__":
  main()
