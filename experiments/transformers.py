"""The seeds' questions asked of transformers: a ViT on Fashion-MNIST and a
decoder-only transformer trained on modular addition.

ViT (``models.ViT``, K seeds trained as one program with AdamW, warm-up
and cosine decay), beside the tutorial's CNN (K seeds, SGD):

1. test accuracy per seed;
2. linear CKA, layer × layer, between two ViT seeds and between a ViT and a
   CNN (Raghu et al. 2021's "do ViTs see like CNNs" figure): every weight
   layer's input, tokens (or conv positions) averaged per image, on the
   same test images; q/k/v read one input, so only the query is kept;
3. alignment r² between seeds 0 and 1 at every block's (LayerNorm'd)
   residual stream — the input of its query projection — and its MLP
   hidden layer, tokens as samples;
4. power-law α (WeightWatcher's fit) of every projection, by type
   (q, k, v, out, MLP up, MLP down);
5. rainbow networks that resample each block's MLP hidden neurons (the
   up → GELU → down link is a chain link; the writers into the residual
   stream keep the reference's neurons, realigned): accuracy vs trained.

Modular addition (``data.modular_addition``, ``models.Transformer``: one
block, no LayerNorm, ReLU; AdamW with weight decay 1, full batch, K seeds
as one program), after Power et al. (2022) and Nanda et al. (2023):

6. train / test accuracy along training (grokking);
7. the embedding's power per frequency (``fourier.frequency_power``) and
   each seed's key frequencies; whether seeds agree on them, and the r²
   and CKA between seeds of the embedding and MLP hidden layer on all p²
   inputs;
8. learned components (eigenvalues above the Marchenko–Pastur edge of the
   Flax initialisation) of every weight layer along training.

    python experiments/transformers.py --out results/transformers [--quick]

Writes ``results.json`` and PNG figures; prints the README's tables.
Fashion-MNIST when Debian's ``dataset-fashion-mnist`` is installed, else
scikit-learn's digits (8×8 images: patch 4).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np
import optax

from rainbow_jax import (align, data, evaluate, fourier, models, network, plots, rainbow,
                         similarity, spectra, train)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as E  # noqa: E402


def _short(name):
  return (name.replace("block_", "b").replace("attention/", "").replace("patch_embed", "patch")
          .replace("Conv_", "conv").replace("Dense_", "dense"))


def _train(model, ds, x, y, seeds, epochs, tx):
  state, hist = train.fit(model, x, y, ds.x_test, ds.y_test, seeds=seeds, epochs=epochs,
                          tx=tx, progress=False)
  variables = [train.select(state.variables, k) for k in range(len(seeds))]
  return variables, hist


def vit_part(ds, args, log):
  x, y = (ds.x_train[:args.train], ds.y_train[:args.train]) if args.train else (
      ds.x_train, ds.y_train)
  seeds = list(range(args.seeds))
  vit = models.make("vit", x.shape[1:], ds.num_classes, widths=args.vit)
  steps = args.epochs * -(-len(x) // 128)
  t0 = time.time()
  vit_vars, vit_hist = _train(vit, ds, x, y, seeds, args.epochs,
                              train.adamw(1e-3, weight_decay=0.05, warmup_steps=steps // 10,
                                          total_steps=steps))
  vit_s = time.time() - t0
  cnn = models.make("cnn", x.shape[1:], ds.num_classes)
  cnn_vars, cnn_hist = _train(cnn, ds, x, y, seeds, args.epochs, train.sgd())
  out = {"vit": {"patch": vit.patch, "width": vit.width, "depth": vit.depth, "heads": vit.heads},
         "train_images": len(x), "epochs": args.epochs, "vit_train_seconds": vit_s,
         "vit_accuracy": E.mean_sd(vit_hist.test_accuracy[-1]),
         "cnn_accuracy": E.mean_sd(cnn_hist.test_accuracy[-1])}
  log(f"ViT accuracy {out['vit_accuracy']['values']}, CNN {out['cnn_accuracy']['values']}")
  net = network.from_linen(vit, vit_vars[0], x[:2])
  cnet = network.from_linen(cnn, cnn_vars[0], x[:2])
  xt = ds.x_test[:args.eval]

  # CKA, layer × layer: ViT seed 0 × seed 1, ViT seed 0 × CNN seed 0.
  keep = [j for j, n in enumerate(net.names) if not n.endswith(("/key", "/value"))]
  reps = [evaluate.representations(net, v, xt, conv="mean") for v in vit_vars[:2]]
  reps = [[r[j] for j in keep] for r in reps]
  crep = evaluate.representations(cnet, cnn_vars[0], xt, conv="mean")
  vv = np.asarray(similarity.pairwise(reps[0], reps[1], measure="linear_cka"))
  vc = np.asarray(similarity.pairwise(reps[0], crep, measure="linear_cka"))
  labels = [_short(net.names[j]) for j in keep]
  out["cka"] = {"vit_layers": labels, "cnn_layers": [_short(n) for n in cnet.names],
                "vit_vit": vv.tolist(), "vit_cnn": vc.tolist(),
                "vit_vit_diagonal": np.diag(vv).tolist()}
  plots.save(plots.heatmap(vv, labels, labels, title="linear CKA, ViT seed 0 × seed 1",
                           xlabel="seed 1", ylabel="seed 0"),
             os.path.join(args.out, "cka_vit_vit.png"))
  plots.save(plots.heatmap(vc, labels, out["cka"]["cnn_layers"],
                           title="linear CKA, ViT × CNN", xlabel="CNN", ylabel="ViT"),
             os.path.join(args.out, "cka_vit_cnn.png"))

  # r² between seeds at every block's stream and MLP hidden layer (tokens as samples).
  ins = [net.layer_inputs(v, xt[:args.align_eval]) for v in vit_vars[:2]]
  r2 = {"stream": [], "mlp_hidden": []}
  for b in range(vit.depth):
    for kind, name in (("stream", f"block_{b}/attention/query"),
                       ("mlp_hidden", f"block_{b}/mlp_down")):
      j = net.names.index(name)
      f0, f1 = (similarity.features(i[j], "positions") for i in ins)
      r2[kind].append(float(align.align_features(f0, f1).r2))
  out["r2_seed0_seed1"] = r2
  log(f"r² stream {np.round(r2['stream'], 3).tolist()}, MLP hidden"
      f" {np.round(r2['mlp_hidden'], 3).tolist()}")
  ax = plots.curve(range(vit.depth), r2["stream"], label="residual stream (LayerNorm'd)",
                   xlabel="block", ylabel="r² (seed 1 from seed 0)",
                   title="ViT: alignment between seeds")
  plots.save(plots.curve(range(vit.depth), r2["mlp_hidden"], label="MLP hidden", ax=ax),
             os.path.join(args.out, "r2_blocks.png"))

  # Power-law α per projection type, over blocks and seeds.
  kinds = {"q": "/query", "k": "/key", "v": "/value", "out": "/out", "mlp_up": "/mlp_up",
           "mlp_down": "/mlp_down"}
  alphas = {k: [] for k in kinds}
  for v in vit_vars:
    for name, kernel in zip(net.names, net.kernels(v)):
      for k, suffix in kinds.items():
        if name.endswith(suffix):
          alphas[k].append(float(spectra.power_law(spectra.esd(kernel)).alpha))
  out["alpha"] = {k: E.mean_sd(a) for k, a in alphas.items()}
  plots.save(plots.bars([out["alpha"][k]["mean"] for k in kinds], list(kinds),
                        ylabel="power-law α", title="ViT projections (mean over blocks, seeds)",
                        ylim=(0, max(8.0, max(out["alpha"][k]["mean"] for k in kinds) + 1))),
             os.path.join(args.out, "alpha_projections.png"))

  # Rainbow networks: each block's MLP hidden neurons resampled.
  t0 = time.time()
  gen = rainbow.generate(jax.random.key(args.seed), net, vit_vars[0], x[:args.align],
                         num_samples=args.samples, progress=False)
  acc = np.asarray(evaluate.accuracy(net, gen.params, ds.x_test, ds.y_test, stacked=True))
  ref = float(vit_hist.test_accuracy[-1][0])
  out["rainbow_mlp"] = dict(E.mean_sd(acc), trained=ref, ratio=float(acc.mean() / ref),
                            sampled_layers=[net.names[j] for j, link in enumerate(
                                net.chain_links(vit_vars[0], x[:2])) if link],
                            seconds=time.time() - t0)
  log(f"rainbow (MLP hidden neurons resampled): {acc.mean():.2f} ± {acc.std(ddof=1):.2f} %"
      f" vs {ref:.2f} % trained")
  return out


def modular_part(args, log):
  p = args.p
  ds = data.modular_addition(p, train_fraction=args.fraction, seed=args.seed)
  model = models.Transformer(vocab=p + 1, num_classes=p, width=args.width, heads=4)
  seeds = list(range(args.seeds))
  snaps = []

  def keep(epoch, state, metrics):
    if epoch % args.every == 0 or epoch == args.steps:
      snaps.append((epoch, state.params))

  tx = optax.adamw(args.lr, b1=0.9, b2=0.98, weight_decay=1.0)
  t0 = time.time()
  state, hist = train.fit(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test, seeds=seeds,
                          epochs=args.steps, batch_size=len(ds.x_train), tx=tx,
                          progress=False, callback=keep)
  secs = time.time() - t0
  params = [train.select(state.params, k) for k in range(len(seeds))]
  net = network.from_linen(model, params[0], ds.x_train[:2])
  test = np.asarray(hist.test_accuracy)
  out = {"p": p, "train_fraction": args.fraction, "width": args.width, "steps": args.steps,
         "train_seconds": secs, "test_accuracy": E.mean_sd(test[-1]),
         "train_accuracy": E.mean_sd(np.asarray(hist.train_accuracy)[-1]),
         "step_to_90": [int(np.argmax(test[:, k] > 90)) + 1 if (test[:, k] > 90).any()
                        else None for k in range(len(seeds))]}
  log(f"modular addition p={p}: test accuracy {np.round(test[-1], 1).tolist()}, step"
      f" to 90 % {out['step_to_90']}")
  ax = None
  for k in range(len(seeds)):
    ax = plots.curve(np.arange(1, args.steps + 1), np.asarray(hist.train_accuracy)[:, k],
                     label=f"train, seed {k}", ax=ax)
    ax = plots.curve(np.arange(1, args.steps + 1), test[:, k], label=f"test, seed {k}", ax=ax,
                     xlabel="step (full batch)", ylabel="accuracy (%)",
                     title=f"(a + b) mod {p}: grokking")
  for line in ax.lines:
    line.set_marker("")
  plots.save(ax, os.path.join(args.out, "modular_accuracy.png"))

  # Fourier structure of the embedding, per seed.
  powers = [fourier.frequency_power(net.kernels(v)[0], p) for v in params]
  keys = [fourier.key_frequencies(fp, 0.8).tolist() for fp in powers]
  init = model.init(jax.random.key(0), ds.x_train[:2])["params"]
  init_power = fourier.frequency_power(net.kernels(init)[0], p)
  top = lambda fp, n: float(np.sort(np.asarray(fp.power)[1:])[-n:].sum())
  out["key_frequencies"] = keys
  out["top4_power"] = {"trained": [top(fp, 4) for fp in powers], "init": top(init_power, 4)}
  sets = [set(k) for k in keys]
  out["key_frequency_jaccard"] = [
      [len(a & b) / max(1, len(a | b)) for b in sets] for a in sets]
  log(f"key frequencies per seed {keys}; top-4 power {np.round(out['top4_power']['trained'], 3)}"
      f" (init {out['top4_power']['init']:.3f})")
  ax = None
  for k, fp in enumerate(powers):
    ax = plots.curve(np.asarray(fp.frequencies)[1:], np.asarray(fp.power)[1:],
                     label=f"seed {k}", ax=ax, xlabel="frequency k",
                     ylabel="share of the embedding's power",
                     title=f"embedding power per frequency, p = {p}")
  plots.save(ax, os.path.join(args.out, "modular_frequencies.png"))

  # Aligned representations between seeds on all p² inputs.
  a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
  xs = np.stack([a.ravel(), b.ravel(), np.full(p * p, p)], 1).astype(np.int32)
  ins = [net.layer_inputs(v, xs) for v in params[:2]]
  j_up = net.names.index("block_0/mlp_up")
  j_down = net.names.index("block_0/mlp_down")
  cmp = {}
  for what, j in (("embedding_stream", j_up), ("mlp_hidden", j_down)):
    f0, f1 = (np.asarray(i[j][:, -1]) for i in ins)  # the "=" position, read by the logits
    cmp[what] = {"r2": float(align.align_features(f0, f1).r2),
                 "linear_cka": float(similarity.linear_cka(f0, f1))}
  out["seed0_seed1"] = cmp
  log(f"seeds 0 vs 1 at the last position: {cmp}")

  # Learned components along training.
  dyn = {"epoch": [], "learned_components": []}
  for epoch, st in snaps:
    v0 = train.select(st, 0)
    comps = []
    for kernel in net.kernels(v0):
      ev, _ = spectra.weight_spectrum(kernel)
      comps.append(int(spectra.learned_components(ev, spectra.layer_law(kernel, "flax"))))
    dyn["epoch"].append(int(epoch))
    dyn["learned_components"].append(comps)
  out["dynamics"] = dyn | {"layers": list(net.names)}
  ax = None
  comps = np.asarray(dyn["learned_components"])
  for j, name in enumerate(net.names):
    ax = plots.curve(dyn["epoch"], comps[:, j], label=_short(name), ax=ax, xlabel="step",
                     ylabel="learned components (seed 0)",
                     title="eigenvalues above the Marchenko–Pastur edge")
  plots.save(ax, os.path.join(args.out, "modular_learned_components.png"))
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="results/transformers")
  ap.add_argument("--dataset", default="auto", help="fashion_mnist | digits | auto")
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--epochs", type=int, default=10, help="ViT and CNN epochs")
  ap.add_argument("--train", type=int, default=0, help="training images (0: all)")
  ap.add_argument("--vit", type=int, nargs=3, default=[64, 4, 4], metavar=("WIDTH", "DEPTH",
                                                                          "HEADS"))
  ap.add_argument("--eval", type=int, default=2000, help="test images of the CKA")
  ap.add_argument("--align-eval", type=int, default=1000, help="test images of the seed r²")
  ap.add_argument("--align", type=int, default=10000, help="training images of the rainbow")
  ap.add_argument("--samples", type=int, default=4, help="rainbow networks")
  ap.add_argument("--p", type=int, default=47, help="modulus")
  ap.add_argument("--fraction", type=float, default=0.5, help="pairs used for training")
  ap.add_argument("--width", type=int, default=64, help="modular transformer's d")
  ap.add_argument("--lr", type=float, default=3e-3)
  ap.add_argument("--steps", type=int, default=3000, help="full-batch AdamW steps")
  ap.add_argument("--every", type=int, default=100, help="steps between spectra snapshots")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
  args = ap.parse_args(argv)
  if args.quick:
    args.seeds, args.epochs, args.train, args.eval, args.align_eval = 2, 1, 1000, 300, 200
    args.align, args.samples, args.vit = 500, 2, [16, 2, 2]
    args.p, args.steps, args.every, args.width = 13, 200, 50, 32
  os.makedirs(args.out, exist_ok=True)
  ds = E.dataset(args.dataset)
  t0 = time.time()
  log = lambda msg: print(f"[{time.time() - t0:5.0f} s] {msg}", flush=True)
  doc = {"dataset": ds.name, "seeds": args.seeds, "vit": vit_part(ds, args, log),
         "modular_addition": modular_part(args, log), "seconds": time.time() - t0}
  with open(os.path.join(args.out, "results.json"), "w") as fh:
    json.dump(doc, fh, indent=1)
  v, m = doc["vit"], doc["modular_addition"]
  fmt = lambda d: f"{d['mean']:.2f} ± {d['sd']:.2f}"
  print("| ViT | value |\n| --- | --- |")
  print(f"| test accuracy, ViT (%) | {fmt(v['vit_accuracy'])} |")
  print(f"| test accuracy, CNN (%) | {fmt(v['cnn_accuracy'])} |")
  print(f"| CKA seed 0 × 1, same layer (min … max) | {min(v['cka']['vit_vit_diagonal']):.3f} …"
        f" {max(v['cka']['vit_vit_diagonal']):.3f} |")
  print(f"| r² residual stream per block | {', '.join(f'{r:.3f}' for r in v['r2_seed0_seed1']['stream'])} |")
  print(f"| r² MLP hidden per block | {', '.join(f'{r:.3f}' for r in v['r2_seed0_seed1']['mlp_hidden'])} |")
  for k, a in v["alpha"].items():
    print(f"| α {k} | {fmt(a)} |")
  print(f"| rainbow (MLP neurons resampled) (%) | {fmt(v['rainbow_mlp'])} (ratio"
        f" {v['rainbow_mlp']['ratio']:.3f}) |")
  print(f"| modular addition p = {m['p']}: test accuracy (%) | {fmt(m['test_accuracy'])} |")
  print(f"| step to 90 % test accuracy | {m['step_to_90']} |")
  print(f"| key frequencies per seed | {m['key_frequencies']} |")
  print(f"| top-4 frequencies' power, trained / init | {np.round(m['top4_power']['trained'], 3).tolist()}"
        f" / {m['top4_power']['init']:.3f} |")
  log(f"wrote {args.out}/results.json")


if __name__ == "__main__":
  main()
