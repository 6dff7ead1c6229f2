"""The SVR paper's section 5 at the scale we train: small VGGs with and
without BatchNorm, trained with an L2 penalty.

Meller & Berkouk (AISTATS 2023) report on ImageNet's VGGs:

* 5.2.1: with BatchNorm and weight decay, *significant connections between
  the near-kernels* (lowest singular values) of consecutive layers, and a
  block structure of |Ṽ_{i+1}ᵀ Ũ_i| (SVR of a layer against the co-SVR of
  the next) — absent without BatchNorm;
* 5.2.2: a *spontaneous sparsification*: neurons mapped to the near-kernel
  blocks can be pruned "without changing the network behavior", found
  without any input data;
* 5.1: a *super-feature*: the top spectral neurons of consecutive layers
  joined into a line, whose spectral image is the closest to a Sobel edge
  map of the input (cosine similarity over images).

Here: `models.VGG` with ``--stages`` (default 16-16 / 32-32 / 64-64 channels,
three 2×2 max-pools) on ``--train`` Fashion-MNIST images, ``--seeds``
seeds per variant trained as one vmapped program, with Adam and an L2
penalty (Mehta et al. 2019's setting for filter sparsity; ``--lr``,
``--weight-decay``, constant rate) or ``--optimizer sgd`` (momentum 0.9,
the PyTorch recipe of the paper's VGGs). BatchNorm is folded into the weights
(``scale / sqrt(var + eps)``) before every SVR, so the SVR sees what the
network computes. Measured per seed:

* near-kernel connections: the fraction of significant edges (per-edge
  level ``--alpha``, exact Beta null) in the block joining the lowest
  ``--bottom`` of both layers' spectral neurons, against `alpha` (the null);
  and the share of |Ṽ_{i+1}ᵀ Ũ_i|² that the bottom spectral neurons of layer
  i send to the bottom co-spectral neurons of layer i + 1, against the share
  a uniformly random basis would (the bottom rows' count over all rows);
* sparsification and pruning without data: neurons with
  `svr.neuron_gains` < ``--rtol`` are removed (weights zeroed and, behind a
  BatchNorm, its scale: the neuron outputs its offset); test accuracy and
  the logits' relative change, against removing as many random neurons of
  the same layers (3 draws);
* the super-feature: whether the top spectral neuron of each conv layer
  sends its strongest edge to the next layer's top spectral neuron, and how
  long the run of such top-to-top edges is;
* the Sobel test: for every conv layer, the spectral images of its top 16
  spectral neurons (the layer's input convolved with each input
  representation V_m) on ``--sobel-images`` test images, and the cosine
  similarity of their absolute value with the Sobel edge magnitude of the
  input, average-pooled to the layer's resolution.

Writes ``OUT/results.json`` and figures (``co_svr.png``, the paper's
Figure 7; ``output_representations.png``, Figure 8; ``sobel.png``, Figure
6/14); prints a summary.

  python experiments/svr_vgg.py --out results/svr_vgg
  python experiments/svr_vgg.py --quick --out /tmp/svr_vgg   # digits, seconds
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
import optax

from _common import dataset, mean_sd
from rainbow_jax import models, network, plots, svr, train

_TOP = 16  # spectral images per layer in the Sobel test
_SOBEL = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def _conv_same(x, kernel):
  """``[B, H, W, C] ⋆ [3, 3, C, F]`` cross-correlation, zero padding 1."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=jax.lax.Precision.HIGHEST)


def _sobel(images, size):
  """Sobel edge magnitude of grey `images` ``[B, H, W, C]`` average-pooled to
  ``size × size`` (the paper's footnote 15): ``[B, size, size]``."""
  grey = jnp.mean(images, axis=-1, keepdims=True)
  f = grey.shape[1] // size
  grey = grey[:, :size * f, :size * f].reshape(grey.shape[0], size, f, size, f, 1).mean((2, 4))
  k = jnp.asarray(np.stack([_SOBEL, _SOBEL.T], -1)[:, :, None, :], jnp.float32)
  g = _conv_same(grey, k)
  return jnp.sqrt(jnp.sum(g * g, axis=-1))


def _cosines(a, b):
  """Per image and spectral neuron, cos(|a|, b): a ``[B, H, W, F]``, b ``[B, H, W]``."""
  a = jnp.abs(a).reshape(a.shape[0], -1, a.shape[-1])
  b = b.reshape(b.shape[0], -1, 1)
  num = jnp.sum(a * b, axis=1)
  den = jnp.linalg.norm(a, axis=1) * jnp.linalg.norm(b, axis=1) + 1e-12
  return num / den


@functools.partial(jax.jit, static_argnums=0)
def _logits(model, variables, x):
  """``model.apply(variables, x)`` in batches of 500 (x padded to a multiple)."""
  n = x.shape[0]
  pad = -n % 500
  xb = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(-1, 500, *x.shape[1:])
  out = jax.lax.map(lambda b: model.apply(variables, b), xb)
  return out.reshape(-1, out.shape[-1])[:n]


def _folded(net, variables, model):
  """Native weights with each conv's BatchNorm factor scale / sqrt(var + eps)
  folded into its output rows."""
  native = svr.from_flax(net.kernels(variables))
  if not model.batch_norm:
    return native
  out = []
  for i, w in enumerate(native):
    if i < len(native) - 1:
      bn = variables["params"][f"bn_{i}"]["scale"]
      var = variables["batch_stats"][f"bn_{i}"]["var"]
      w = w * (bn / jnp.sqrt(var + 1e-5)).reshape(-1, 1, 1, 1)
    out.append(w)
  return out


def _pruned(net, variables, model, masks):
  """`variables` with the neurons of ``masks[i]`` (``[out]`` bool per conv
  layer) removed: kernel columns zeroed, and behind a BatchNorm its scale."""
  kernels = net.kernels(variables)
  new = {i: k * jnp.asarray(~m, k.dtype) for i, (k, m) in enumerate(zip(kernels, masks))}
  variables = net.with_kernels(variables, new)
  if model.batch_norm:
    affine = net.norm_affine(variables)
    variables = net.with_norm_affine(
        variables, {i: (affine[i][0] * jnp.asarray(~m, affine[i][0].dtype), None)
                    for i, m in enumerate(masks)})
  return variables


def _seed_variables(state, k, bn):
  v = {"params": train.select(state.params, k)}
  if bn:
    v["batch_stats"] = train.select(state.batch_stats, k)
  return v


def _bottom(n, q):
  return max(1, int(round(q * n)))


def analyse_seed(model, variables, ds, args, rng):
  """Every measurement of one trained seed (see the module docstring)."""
  net = network.from_linen(model, variables, ds.x_test[:2])
  folded = _folded(net, variables, model)
  convs = len(folded) - 1
  res = svr.svr(folded, alpha=args.alpha, with_pvalues=False)
  spec = res.spectra
  co = svr.spectra(folded[:convs], co=True)
  x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
  logits = _logits(model, variables, x_test)
  acc = lambda lg: float(100.0 * jnp.mean(jnp.argmax(lg, -1) == y_test))
  rel = lambda lg: float(jnp.linalg.norm(lg - logits) / jnp.linalg.norm(logits))

  # Near-kernel connections (5.2.1).
  near_sig, top_sig, co_mass, co_null, superfeature = [], [], [], [], []
  for i in range(convs - 1):
    sig = np.asarray(res.significant[i])  # [M_{i+1}, M_i]
    b_next, b_prev = _bottom(sig.shape[0], args.bottom), _bottom(sig.shape[1], args.bottom)
    near_sig.append(float(sig[-b_next:, -b_prev:].mean()))
    top_sig.append(float(sig[:b_next, :b_prev].mean()))
    t = np.asarray(svr.svr_to_co_svr(spec[i], co[i + 1])) ** 2  # [in_{i+1}, M_i]
    rows = _bottom(t.shape[0], args.bottom)
    cols = t[:, -b_prev:]
    co_mass.append(float(np.mean(cols[-rows:].sum(0) / cols.sum(0))))
    co_null.append(rows / t.shape[0])
    a = np.asarray(res.adjacency[i])
    superfeature.append(bool(np.argmax(a[:, 0]) == 0 and sig[0, 0]))
  run, longest = 0, 0
  for s in superfeature:
    run = run + 1 if s else 0
    longest = max(longest, run)

  # Sparsification and pruning without data (5.2.2).
  gains = [np.asarray(svr.neuron_gains(w)) for w in folded[:convs]]
  masks = [g < args.rtol for g in gains]
  pruned = _pruned(net, variables, model, masks)
  lg = _logits(model, pruned, x_test)
  random_acc, random_rel = [], []
  for _ in range(3):
    rand = []
    for m in masks:
      r = np.zeros(m.shape, bool)
      r[rng.choice(m.size, int(m.sum()), replace=False)] = True
      rand.append(r)
    lr_ = _logits(model, _pruned(net, variables, model, rand), x_test)
    random_acc.append(acc(lr_))
    random_rel.append(rel(lr_))

  # Super-feature against a Sobel edge map (5.1, B.4).
  xs = x_test[:args.sobel_images]
  inputs = net.layer_inputs(variables, xs, upto=convs - 1)
  sobel = []
  for i in range(convs):
    c = inputs[i].shape[-1]
    k = min(_TOP, spec[i].v.shape[1])
    v = spec[i].v[:, :k].reshape(c, 3, 3, k).transpose(1, 2, 0, 3)
    images = _conv_same(inputs[i], v)
    sobel.append(np.asarray(_cosines(images, _sobel(xs, inputs[i].shape[1]))))
  return {
      "test_accuracy": acc(logits),
      "near_kernel_significant": near_sig,
      "top_block_significant": top_sig,
      "co_svr_bottom_mass": co_mass,
      "co_svr_bottom_null": co_null,
      "superfeature_edges": superfeature,
      "superfeature_longest_run": longest,
      "sparse_neurons": [int(m.sum()) for m in masks],
      "neurons": [int(m.size) for m in masks],
      "pruned_accuracy": acc(lg),
      "pruned_logit_change": rel(lg),
      "random_pruned_accuracy": float(np.mean(random_acc)),
      "random_pruned_logit_change": float(np.mean(random_rel)),
      "sobel_cosine_mean": [s.mean(0).tolist() for s in sobel],
      "sobel_cosine_sd": [s.std(0).tolist() for s in sobel],
      "_figures": {"co": np.asarray(svr.svr_to_co_svr(spec[1], co[2])),
                   "u": np.asarray(spec[1].u)},
  }


def run_variant(bn, ds, args):
  model = models.VGG(stages=args.stages, batch_norm=bn)
  step = optax.adam(args.lr) if args.optimizer == "adam" else optax.sgd(args.lr, momentum=0.9)
  tx = optax.chain(optax.add_decayed_weights(args.weight_decay), step)
  t0 = time.perf_counter()
  state, _ = train.fit(model, ds.x_train[:args.train], ds.y_train[:args.train],
                       seeds=list(range(args.seeds)), epochs=args.epochs, tx=tx,
                       progress=False)
  seconds = time.perf_counter() - t0
  rng = np.random.default_rng(0)
  seeds = [analyse_seed(model, _seed_variables(state, k, bn), ds, args, rng)
           for k in range(args.seeds)]
  out = {"train_seconds": seconds, "figures": seeds[0].pop("_figures")}
  for s in seeds[1:]:
    s.pop("_figures")
  for key in seeds[0]:
    vals = [s[key] for s in seeds]
    if isinstance(vals[0], list) and vals[0] and isinstance(vals[0][0], list):
      out[key] = [np.mean([v[e] for v in vals], 0).tolist()  # one curve per layer
                  for e in range(len(vals[0]))]
    elif isinstance(vals[0], list):
      out[key] = [mean_sd([v[e] for v in vals]) for e in range(len(vals[0]))]
    else:
      out[key] = mean_sd(vals)
  return out


def _figures(results, out):
  plt = plots._plt()
  tags = [("no_bn", "without BatchNorm"), ("bn", "with BatchNorm")]
  panels = [("co", "|Ṽ₃ᵀŨ₂|", "spectral neuron of conv 2 (descending s)",
             "co-spectral neuron of conv 3", "co_svr.png"),
            ("u", "|Ũ₂|", "spectral neuron (descending s)", "neuron",
             "output_representations.png")]
  for key, title, xlabel, ylabel, name_png in panels:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, (tag, name) in zip(axes, tags):
      im = ax.imshow(np.abs(results[tag]["figures"][key]), cmap="viridis", aspect="auto")
      ax.set_title(f"{title}, {name}")
      ax.set_xlabel(xlabel)
      ax.set_ylabel(ylabel)
      fig.colorbar(im, ax=ax)
    plots.save(fig, os.path.join(out, name_png))
  convs = len(results["bn"]["sobel_cosine_mean"])
  fig, axes = plt.subplots(1, convs, figsize=(3.2 * convs, 3.2), sharey=True)
  for i, ax in enumerate(np.atleast_1d(axes)):
    for tag, name in tags:
      m = np.asarray(results[tag]["sobel_cosine_mean"][i])
      sd = np.asarray(results[tag]["sobel_cosine_sd"][i])
      ax.plot(m, marker=".", label=name)
      ax.fill_between(np.arange(m.size), m - sd, m + sd, alpha=0.2)
    ax.set_title(f"conv {i + 1}")
    ax.set_xlabel("spectral image (descending s)")
  np.atleast_1d(axes)[0].set_ylabel("cosine with Sobel edges")
  np.atleast_1d(axes)[0].legend(fontsize=7)
  plots.save(fig, os.path.join(out, "sobel.png"))


def _stages(text):
  return tuple(tuple(int(c) for c in s.split(",")) for s in text.split("/"))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--stages", type=_stages, default=_stages("16,16/32,32/64,64"),
                 help="conv widths per stage, e.g. 16,16/32,32/64,64")
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--epochs", type=int, default=6)
  p.add_argument("--train", type=int, default=10000, help="training images")
  p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                 help="Adam, or SGD with momentum 0.9 (the paper's VGGs)")
  p.add_argument("--lr", type=float, default=1e-2, help="learning rate")
  p.add_argument("--weight-decay", type=float, default=1e-2, help="L2 penalty")
  p.add_argument("--rtol", type=float, default=1e-2, help="neuron_gains threshold")
  p.add_argument("--alpha", type=float, default=0.01, help="per-edge significance level")
  p.add_argument("--bottom", type=float, default=0.25,
                 help="share of each layer's spectral neurons counted as its near-kernel")
  p.add_argument("--sobel-images", type=int, default=1000)
  p.add_argument("--dataset", default="auto")
  p.add_argument("--quick", action="store_true", help="digits, 2 seeds, 3 epochs (CI)")
  p.add_argument("--out", default="results/svr_vgg")
  a = p.parse_args(argv)
  if a.quick:
    a.dataset, a.seeds, a.epochs, a.sobel_images = "digits", 2, 3, 200
    a.stages = _stages("8,8/16,16/16,16")
  os.makedirs(a.out, exist_ok=True)
  ds = dataset(a.dataset)
  t0 = time.perf_counter()
  results = {tag: run_variant(bn, ds, a) for tag, bn in (("no_bn", False), ("bn", True))}
  _figures(results, a.out)
  for r in results.values():
    r.pop("figures")
  res = {"dataset": ds.name, "stages": [list(s) for s in a.stages], "seeds": a.seeds,
         "epochs": a.epochs, "train": a.train, "optimizer": a.optimizer, "lr": a.lr,
         "weight_decay": a.weight_decay,
         "rtol": a.rtol, "alpha": a.alpha, "bottom": a.bottom, **results,
         "seconds": time.perf_counter() - t0,
         "versions": {"jax": jax.__version__, "python": platform.python_version()},
         "cpu": platform.processor() or platform.machine()}
  with open(os.path.join(a.out, "results.json"), "w") as f:
    json.dump(res, f, indent=1)
  for tag, name in (("no_bn", "without BN"), ("bn", "with BN")):
    r = results[tag]
    f = lambda d: f"{d['mean']:.3f} ± {d['sd']:.3f}"
    print(f"{name}: accuracy {r['test_accuracy']['mean']:.2f} ± {r['test_accuracy']['sd']:.2f} %;"
          f" sparse neurons {[round(d['mean'], 1) for d in r['sparse_neurons']]} of"
          f" {[int(d['mean']) for d in r['neurons']]};"
          f" pruned {r['pruned_accuracy']['mean']:.2f} % (logits {f(r['pruned_logit_change'])}),"
          f" random {r['random_pruned_accuracy']['mean']:.2f} %"
          f" (logits {f(r['random_pruned_logit_change'])})")
    print(f"  near-kernel significant {[round(d['mean'], 3) for d in r['near_kernel_significant']]}"
          f" (null {a.alpha}); top block {[round(d['mean'], 3) for d in r['top_block_significant']]};"
          f" co-SVR bottom mass {[round(d['mean'], 3) for d in r['co_svr_bottom_mass']]}"
          f" (null {[round(d['mean'], 3) for d in r['co_svr_bottom_null']]});"
          f" super-feature run {r['superfeature_longest_run']['mean']:.1f};"
          f" Sobel cos top vs next best"
          f" {[(round(m[0], 3), round(max(m[1:]), 3)) for m in r['sobel_cosine_mean']]}")
  print(f"wrote {a.out}/results.json and figures in {res['seconds']:.0f} s")
  return res


if __name__ == "__main__":
  main()
