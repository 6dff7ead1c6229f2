"""SVCCA's findings, reproduced on Fashion-MNIST (Raghu et al. 2017; Morcos
et al. 2018): bottom-up learning, compression onto SVCCA directions,
generalising vs memorising networks, and class sensitivity.

An MLP [784, 512, 256, 128, 10] (ReLU, the tutorial's bias-free layers) is
trained from K seeds as one program (the tutorial's SGD, or Adam), keeping
every epoch's weights.
The hidden layers are the inputs of weight layers 1–3.

1. **Learning dynamics**: SVCCA (99 % of the variance kept) of every hidden
   layer at epoch t with the same layer at the end of training, per seed, on
   test images. The paper: lower layers converge first ("bottom-up"). Then
   **freeze training** (`train.fit`'s ``frozen=``): the lowest weight
   layers are frozen, one by one, once their output's SVCCA with the
   previous epoch passes ``--freeze-at``; test accuracy against normal
   training, the share of the training FLOPs their skipped backward pass
   held (from the layer shapes), and the wall time saved, measured: each
   frozen set's epoch program timed once compiled, summed over the epochs
   that ran it, against as many epochs of normal training.
2. **Compression**: the first hidden layer (512 neurons) projected onto its
   top-k SVCCA directions against another seed, or onto its top-k principal
   directions (both centred projections, the other directions replaced by
   their mean), test accuracy against k. The paper: a few SVCCA directions
   keep the accuracy, fewer than principal directions do.
3. **Generalising vs memorising** (Morcos et al. 2018): K seeds trained on
   the true labels and K on randomly permuted labels (`data.shuffle_labels`,
   trained until they fit them); PWCCA and linear CKA between every pair of
   seeds within each group, per hidden layer, on test images. The paper:
   networks that generalise are more similar to each other than networks
   that memorise, in the upper layers.
4. **Class sensitivity**: per hidden layer and class c, the canonical
   correlation between the layer and the indicator of class c (test images):
   which classes a layer separates early.
5. **CCA of conv layers**: two seeds of the tutorial's CNN compared at the
   input of its second conv (a 12 × 12 × 32 map) by `similarity.fourier_cca`
   (a CCA per spatial frequency, google/svcca's DFT CCA), by CCA with the
   positions as datapoints, and by CCA of the maps averaged over positions.

    python experiments/svcca_findings.py --out results/svcca_findings [--quick]

Writes ``results.json`` and PNG figures and prints the README's tables.
Fashion-MNIST when Debian's ``dataset-fashion-mnist`` is installed, else
scikit-learn's digits.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rainbow_jax import data, evaluate, models, network, plots, similarity, train

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as E  # noqa: E402


def svcca_basis(h: np.ndarray, g: np.ndarray, variance: float = 0.99) -> np.ndarray:
  """Orthonormal rows ``[d, d]`` of `h`'s neuron space: first the span of
  h's SVCCA directions against `g`, added one at a time in decreasing
  canonical correlation, then the rest (float64 numpy)."""
  hc = np.asarray(h, np.float64) - np.mean(h, 0)
  gc = np.asarray(g, np.float64) - np.mean(g, 0)

  def top(a):
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    frac = np.cumsum(s ** 2) / np.sum(s ** 2)
    r = int(np.searchsorted(frac, variance) + 1)
    return vt[:r].T  # [d, r] principal directions

  vh, vg = top(hc), top(gc)
  qh, rh = np.linalg.qr(hc @ vh)
  qg, _ = np.linalg.qr(gc @ vg)
  u, _, _ = np.linalg.svd(qh.T @ qg)
  dirs = vh @ np.linalg.solve(rh, u)  # [d, r] canonical directions, strongest first
  q, _ = np.linalg.qr(np.concatenate([dirs, np.eye(hc.shape[1])], axis=1))
  return q[:, :hc.shape[1]].T


def pca_basis(h: np.ndarray) -> np.ndarray:
  """Principal directions of `h` (centred), rows, largest variance first."""
  hc = np.asarray(h, np.float64) - np.mean(h, 0)
  return np.linalg.svd(hc, full_matrices=True)[2]


def projected_accuracy(net, variables, layer: int, basis, mean, ks, x, y) -> list[float]:
  """Test accuracy (%) with `layer`'s input replaced by its projection
  ``m + (h − m) B_kᵀ B_k`` onto the first k rows of `basis`, for each k."""
  counts = _projected_counts(net, layer, variables, jnp.asarray(basis, jnp.float32),
                             jnp.asarray(mean, jnp.float32), jnp.asarray(ks, jnp.int32), x, y)
  return (100.0 * np.asarray(counts) / len(y)).tolist()


@functools.partial(jax.jit, static_argnums=(0, 1))
def _projected_counts(net, layer, variables, basis, mean, ks, x, y):
  """Correct predictions for each k: one program, the ks in turn."""
  def correct(k):
    keep = (jnp.arange(basis.shape[0]) < k).astype(jnp.float32)
    p = jnp.matmul(basis.T * keep[None, :], basis, precision="highest")
    edit = lambda h: mean[None, :] + jnp.matmul(h - mean[None, :], p, precision="highest")
    logits = net.apply(variables, x, edits={layer: edit})
    return jnp.sum(jnp.argmax(logits, -1) == y)

  return jax.lax.map(correct, ks)


def _epoch_seconds(model, tx, state, x, y, frozen, repeats=3):
  """Seconds of one compiled training epoch of all seeds with `frozen` held
  fixed: the best of `repeats` after a first (compiling) run."""
  x, y = jnp.asarray(x), jnp.asarray(y)
  run = lambda: jax.block_until_ready(train.train_epoch(state, x, y, model=model, tx=tx,
                                                        frozen=tuple(frozen)))
  run()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    run()
    best = min(best, time.perf_counter() - t)
  return best


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="results/svcca_findings")
  ap.add_argument("--dataset", default="auto", help="fashion_mnist | digits | auto")
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--epochs", type=int, default=10, help="epochs on the true labels")
  ap.add_argument("--random-epochs", type=int, default=150,
                  help="epochs on the shuffled labels (until they are fitted)")
  ap.add_argument("--train", type=int, default=5000, help="training images (0: all)")
  ap.add_argument("--eval", type=int, default=2000, help="test images of the comparisons")
  ap.add_argument("--widths", type=int, nargs="+", default=[512, 256, 128])
  ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd",
                  help="of the true-label networks: the tutorial's SGD (lr 0.01, momentum"
                       " 0.9), or Adam (lr 1e-3); random labels are fitted with Adam")
  ap.add_argument("--freeze-at", type=float, default=0.98,
                  help="freeze training: SVCCA with the previous epoch above which a layer"
                       " is frozen")
  ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
  args = ap.parse_args(argv)
  if args.quick:
    args.seeds, args.epochs, args.random_epochs = 2, 3, 20
    args.train, args.eval, args.widths = 600, 300, [64, 32, 16]
  os.makedirs(args.out, exist_ok=True)
  ds = E.dataset(args.dataset)
  x, y = (ds.x_train[:args.train], ds.y_train[:args.train]) if args.train else (
      ds.x_train, ds.y_train)
  xt, yt = ds.x_test[:args.eval], ds.y_test[:args.eval]
  t0 = time.time()
  log = lambda msg: print(f"[{time.time() - t0:5.0f} s] {msg}", flush=True)
  model = models.make("mlp", x.shape[1:], ds.num_classes, widths=args.widths)
  seeds = list(range(args.seeds))
  snaps = []
  tx = train.sgd() if args.optimizer == "sgd" else optax.adam(1e-3)
  state, hist = train.fit(model, x, y, ds.x_test, ds.y_test, seeds=seeds, epochs=args.epochs,
                          tx=tx, progress=False,
                          callback=lambda e, st, m: snaps.append(st.variables))
  final = [train.select(state.variables, k) for k in seeds]
  net = network.from_linen(model, final[0], x[:2])
  hidden = list(range(1, len(net)))  # inputs of weight layers 1…L−1
  names = [f"hidden {j} ({net.layers[j].kernel_shape[0]})" for j in hidden]
  out = {"dataset": ds.name, "seeds": args.seeds, "widths": args.widths,
         "train_images": len(x), "test_accuracy": E.mean_sd(hist.test_accuracy[-1])}
  log(f"trained: test accuracy {np.round(hist.test_accuracy[-1], 2).tolist()}")

  # 1. Learning dynamics: SVCCA of each hidden layer at epoch t with the end.
  reps = lambda v: evaluate.representations(net, v, xt)
  ends = [reps(v) for v in final]
  dyn = np.zeros((args.epochs, len(hidden), len(seeds)))
  for t, st in enumerate(snaps):
    for k in seeds:
      r = reps(train.select(st, k))
      for i, j in enumerate(hidden):
        dyn[t, i, k] = float(similarity.svcca(r[j], ends[k][j], variance=0.99).mean)
  first = [[int(np.argmax(dyn[:, i, k] >= 0.9)) + 1 if (dyn[:, i, k] >= 0.9).any() else None
            for k in seeds] for i in range(len(hidden))]
  out["dynamics"] = {"layers": names, "svcca_to_final": dyn.mean(2).tolist(),
                     "svcca_to_final_sd": dyn.std(2, ddof=1).tolist() if len(seeds) > 1 else None,
                     "first_epoch_above_0.9": first}
  log(f"dynamics: first epoch with SVCCA to the end ≥ 0.9, per layer and seed: {first}")
  ax = None
  for i, n in enumerate(names):
    ax = plots.curve(np.arange(1, args.epochs + 1), dyn[:, i].mean(1), label=n, ax=ax,
                     xlabel="epoch", ylabel="SVCCA with the final layer",
                     title="learning dynamics (mean over seeds)")
  plots.save(ax, os.path.join(args.out, "dynamics.png"))

  # 1b. Freeze training: freeze the lowest weight layers once their outputs
  # stop moving (SVCCA with the previous epoch ≥ --freeze-at), as the paper
  # proposes; the others keep training.
  fstate = train.init(model, tx, seeds, x.shape[1:])
  prev, paths, frozen_at, schedule = None, [], {}, []
  for e in range(args.epochs):
    schedule.append(tuple(paths))  # what epoch e + 1 trains with frozen
    fstate, _ = train.fit(model, x, y, seeds=seeds, epochs=e + 1, tx=tx, state=fstate,
                          frozen=paths, progress=False)
    cur = [reps(train.select(fstate.variables, k)) for k in seeds]
    if prev is not None:
      while len(paths) < len(hidden) - 1:  # the classifier's input layer keeps training
        j = hidden[len(paths)]  # the output of weight layer j − 1
        sim = np.mean([float(similarity.svcca(cur[k][j], prev[k][j]).mean) for k in seeds])
        if sim < args.freeze_at:
          break
        paths.append(net.layers[j - 1].path[-1])
        frozen_at[net.names[j - 1]] = e + 1
    prev = cur
  fwd = [2.0 * np.prod(l.kernel_shape) for l in net.layers]  # multiply-adds ×2 per example
  total = 3.0 * sum(fwd) * args.epochs
  saved = sum(2.0 * fwd[net.names.index(n)] * (args.epochs - e) for n, e in frozen_at.items())
  # Wall time: every frozen set's epoch program timed once compiled.
  per_set = {f: _epoch_seconds(model, tx, fstate, x, y, f) for f in set(schedule) | {()}}
  frozen_seconds = sum(per_set[f] for f in schedule)
  normal_seconds = args.epochs * per_set[()]
  facc = np.asarray(train.accuracy(fstate.params, ds.x_test, ds.y_test, model=model))
  nacc = np.asarray(train.accuracy(state.params, ds.x_test, ds.y_test, model=model))
  out["freeze_training"] = {"freeze_at": args.freeze_at, "frozen_after_epoch": frozen_at,
                            "test_accuracy": E.mean_sd(facc),
                            "normal_test_accuracy": E.mean_sd(nacc),
                            "backward_flops_saved_fraction": saved / total,
                            "epoch_seconds": {"/".join(f) or "none": v
                                              for f, v in per_set.items()},
                            "train_seconds": frozen_seconds,
                            "normal_train_seconds": normal_seconds,
                            "wall_time_saved_fraction": 1.0 - frozen_seconds / normal_seconds}
  log(f"freeze training: frozen {frozen_at}, test accuracy {facc.mean():.2f} % vs"
      f" {nacc.mean():.2f} %, {100 * saved / total:.1f} % of the training FLOPs skipped,"
      f" training {frozen_seconds:.2f} s against {normal_seconds:.2f} s (compiled epochs)")

  # 2. Compression of the first hidden layer: SVCCA vs principal directions.
  j = hidden[0]
  d = net.layers[j].kernel_shape[0]
  ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, d) if k <= d})
  train_reps = [net.layer_inputs(v, x[:min(len(x), 5000)], upto=j)[j] for v in final]
  comp = {"k": ks, "svcca": [], "pca": []}
  unprojected = [float(evaluate.accuracy(net, v, ds.x_test, ds.y_test)) for v in final]
  for a, b in itertools.permutations(seeds, 2) if len(seeds) > 1 else []:
    h, g = np.asarray(train_reps[a]), np.asarray(train_reps[b])
    m = h.mean(0)
    comp["svcca"].append(projected_accuracy(net, final[a], j, svcca_basis(h, g), m, ks,
                                            ds.x_test, ds.y_test))
    comp["pca"].append(projected_accuracy(net, final[a], j, pca_basis(h), m, ks, ds.x_test,
                                          ds.y_test))
    comp.setdefault("unprojected", []).append(unprojected[a])
  out["compression"] = comp
  sv, pc = np.mean(comp["svcca"], 0), np.mean(comp["pca"], 0)
  log("compression of layer " + net.names[j] + ": " + ", ".join(
      f"k={k}: SVCCA {s:.1f} % / PCA {p:.1f} %" for k, s, p in zip(ks, sv, pc)))
  ax = plots.curve(ks, sv, label="top-k SVCCA directions", xlabel="k (of " + str(d) + ")",
                   ylabel="test accuracy (%)", title=f"compression of {names[0]}")
  ax = plots.curve(ks, pc, label="top-k principal directions", ax=ax)
  ax.set_xscale("log", base=2)
  plots.save(ax, os.path.join(args.out, "compression.png"))

  # 3. Generalising vs memorising networks.
  y_random = data.shuffle_labels(y, seed=1)
  rstate, rhist = train.fit(model, x, y_random, seeds=[100 + k for k in seeds],
                            epochs=args.random_epochs, tx=optax.adam(1e-3), progress=False)
  rand = [train.select(rstate.variables, k) for k in range(len(seeds))]
  out["random_labels"] = {"train_accuracy": E.mean_sd(rhist.train_accuracy[-1]),
                          "test_accuracy": E.mean_sd(np.asarray(
                              train.accuracy(rstate.params, ds.x_test, ds.y_test, model=model))),
                          "epochs": args.random_epochs}
  log(f"random labels: train accuracy {np.round(rhist.train_accuracy[-1], 2).tolist()}")
  groups = {"true labels": ends, "random labels": [reps(v) for v in rand]}
  sims = {}
  for gname, rs in groups.items():
    for measure, fn in (("pwcca", lambda a, b: similarity.pwcca(a, b).value),
                        ("linear_cka", similarity.linear_cka)):
      vals = [[float(fn(rs[a][j], rs[b][j])) for a, b in itertools.combinations(seeds, 2)]
              for j in hidden]
      sims[f"{gname}/{measure}"] = [E.mean_sd(v) for v in vals]
  out["generalising_vs_memorising"] = {"layers": names, **sims}
  for measure in ("pwcca", "linear_cka"):
    log(f"{measure} between seeds per layer: true " + ", ".join(
        f"{s['mean']:.3f}" for s in sims[f"true labels/{measure}"]) + "; random " + ", ".join(
        f"{s['mean']:.3f}" for s in sims[f"random labels/{measure}"]))
  ax = None
  for gname in groups:
    ax = plots.curve(range(1, len(hidden) + 1), [s["mean"] for s in sims[f"{gname}/pwcca"]],
                     label=gname, ax=ax, xlabel="hidden layer",
                     ylabel="PWCCA between seeds (mean over pairs)",
                     title="generalising vs memorising networks")
  plots.save(ax, os.path.join(args.out, "generalising_vs_memorising.png"))

  # 4. Class sensitivity: canonical correlation of each layer with each class.
  onehot = np.eye(ds.num_classes, dtype=np.float32)[yt]
  sens = np.zeros((len(seeds), len(hidden), ds.num_classes))
  for k in seeds:
    for i, j in enumerate(hidden):
      for c in range(ds.num_classes):
        sens[k, i, c] = float(similarity.cca(ends[k][j], onehot[:, c:c + 1]).coefficients[0])
  out["class_sensitivity"] = {"layers": names, "mean": sens.mean(0).tolist(),
                              "sd": sens.std(0, ddof=1).tolist() if len(seeds) > 1 else None}
  plots.save(plots.heatmap(sens.mean(0), names, [str(c) for c in range(ds.num_classes)],
                           title="canonical correlation of a layer with each class",
                           xlabel="class", ylabel="layer"),
             os.path.join(args.out, "class_sensitivity.png"))
  # 5. CCA of conv layers: per spatial frequency (google/svcca's DFT CCA)
  # against positions as datapoints and the average over positions.
  cnn = models.make("cnn", x.shape[1:], ds.num_classes)
  cstate, chist = train.fit(cnn, x, y, ds.x_test, ds.y_test, seeds=[0, 1],
                            epochs=max(1, args.epochs // 2), tx=train.sgd(), progress=False)
  cvars = [train.select(cstate.variables, k) for k in range(2)]
  cnet = network.from_linen(cnn, cvars[0], x[:2])
  maps = [np.asarray(cnet.layer_inputs(v, xt, upto=1)[1]) for v in cvars]  # [n, H, W, C]
  conv = {"layer": cnet.names[1], "map_shape": list(maps[0].shape[1:]),
          "test_accuracy": E.mean_sd(chist.test_accuracy[-1])}
  t1 = time.time()
  fc = similarity.fourier_cca(maps[0], maps[1])
  conv["dft_mean"] = float(np.mean(fc.mean))
  conv["dft_seconds"] = time.time() - t1
  for mode in ("positions", "mean"):
    t1 = time.time()
    r = similarity.cca(similarity.features(maps[0], mode), similarity.features(maps[1], mode))
    conv[f"{mode}_mean"] = float(r.mean)
    conv[f"{mode}_seconds"] = time.time() - t1
  out["conv_cca"] = conv
  log(f"conv CCA of {conv['layer']} {conv['map_shape']}, seeds 0 vs 1: DFT (mean over"
      f" frequencies) {conv['dft_mean']:.3f}, positions as datapoints"
      f" {conv['positions_mean']:.3f}, averaged over positions {conv['mean_mean']:.3f}")
  out["seconds"] = time.time() - t0
  with open(os.path.join(args.out, "results.json"), "w") as fh:
    json.dump(out, fh, indent=1)
  print("| finding | result |\n| --- | --- |")
  print(f"| first epoch with SVCCA to the end ≥ 0.9, per layer (seeds) | {first} |")
  ft = out["freeze_training"]
  print(f"| freeze training: frozen after epoch | {ft['frozen_after_epoch']}; test accuracy"
        f" {ft['test_accuracy']['mean']:.2f} ± {ft['test_accuracy']['sd']:.2f} % vs"
        f" {ft['normal_test_accuracy']['mean']:.2f} %; FLOPs skipped"
        f" {100 * ft['backward_flops_saved_fraction']:.1f} %; wall time"
        f" {ft['train_seconds']:.2f} s vs {ft['normal_train_seconds']:.2f} s"
        f" ({100 * ft['wall_time_saved_fraction']:.1f} % saved) |")
  print("| compression, test accuracy at k = " + ", ".join(map(str, ks)) + " | SVCCA "
        + ", ".join(f"{s:.1f}" for s in sv) + "; PCA " + ", ".join(f"{p:.1f}" for p in pc)
        + f"; unprojected {np.mean(unprojected):.1f} |")
  for measure in ("pwcca", "linear_cka"):
    print(f"| {measure} between seeds per layer, true / random labels | " + "; ".join(
        f"{a['mean']:.3f} ± {a['sd']:.3f} / {b['mean']:.3f} ± {b['sd']:.3f}" for a, b in zip(
            sims[f"true labels/{measure}"], sims[f"random labels/{measure}"])) + " |")
  print("| class sensitivity (mean over layers and seeds) per class | " + ", ".join(
      f"{v:.3f}" for v in sens.mean((0, 1))) + " |")
  print(f"| conv CCA of {conv['layer']}: DFT / positions / averaged | {conv['dft_mean']:.3f}"
        f" ({conv['dft_seconds']:.1f} s) / {conv['positions_mean']:.3f}"
        f" ({conv['positions_seconds']:.1f} s) / {conv['mean_mean']:.3f} |")
  log(f"wrote {args.out}/results.json")


if __name__ == "__main__":
  main()
