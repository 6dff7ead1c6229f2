"""Command line: ``rainbow-jax <command> [options]``.

Commands:
  analyze  the tutorial end to end: train K seeds (one compiled program),
           stream every layer's activation covariances of seeds 0 and 1 in one
           pass, spectra against Marchenko–Pastur, clipping curves, alignment
           r² and eigenvector stability, S rainbow networks sampled in one
           vmapped program; writes results.json, report.md, report.html and
           PNG figures.
  train    train K seeds of the tutorial's MLP/CNN as one compiled program.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def _batches(x: np.ndarray, size: int):
  for i in range(0, len(x), size):
    yield x[i:i + size]


def _pick_dataset(name: str) -> str:
  from rainbow_jax import data
  if name != "auto":
    return name
  return "fashion_mnist" if data.available("fashion_mnist") else "digits"


def _load(name: str, data_dir: str | None):
  """Grayscale images; CIFAR-10 with the tutorial's normalisation, the rest
  standardised with train statistics."""
  from rainbow_jax import data
  return data.load(name, data_dir=data_dir, grayscale=True,
                   normalize="tutorial" if name == "cifar10" else True)


def _ranks(d: int) -> list[int]:
  """Clipping ranks: powers of two below d, then d."""
  r = [1]
  while r[-1] * 2 < d:
    r.append(r[-1] * 2)
  return sorted(set(r + [d]))


def analyze_report(args) -> dict:
  """The tutorial end to end: train K seeds, spectra, clipping, alignment,
  stability, rainbow samples; writes results.json, report.md/html, figures."""
  from rainbow_jax import align, evaluate, models, moments, network, plots, rainbow, spectra
  from rainbow_jax import train

  t_start = time.perf_counter()
  if args.seeds < 2:
    raise ValueError("analyze compares seeds: --seeds must be at least 2.")
  name = _pick_dataset(args.dataset)
  ds = _load(name, args.data_dir)
  print(f"dataset {name}: {ds.x_train.shape[0]} train images {ds.x_train.shape[1:]}"
        f" from {ds.source}", flush=True)
  x = ds.x_train[: args.max_samples] if args.max_samples else ds.x_train
  y = ds.y_train[: len(x)]
  x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
  model = models.make(args.arch, ds.x_train.shape[1:], ds.num_classes,
                      widths=args.widths, init="torch")
  seeds = list(range(args.seed, args.seed + args.seeds))
  timings = {}

  t0 = time.perf_counter()
  init_params = train.init(model, train.sgd(), seeds, x.shape[1:]).params
  state, hist = train.fit(model, x, y, x_test, y_test, seeds=seeds, epochs=args.epochs)
  timings["train_seconds"] = time.perf_counter() - t0
  test_acc = (hist.test_accuracy[-1] if args.epochs else
              np.asarray(train.accuracy(state.params, x_test, y_test, model=model)))
  print(f"test accuracy after {args.epochs} epoch(s): "
        f"{', '.join(f'{a:.2f} %' for a in test_acc)}", flush=True)
  params = [train.select(state.params, k) for k in range(2)]
  net = network.from_linen(model, params[0], x[:2])

  t0 = time.perf_counter()
  stats = moments.layer_moments(
      net, params[0], _batches(x, args.batch), params2=params[1],
      cross="matched", progress="one pass: all layers, seeds 0 and 1",
      total=-(-len(x) // args.batch))
  timings["moments_seconds"] = time.perf_counter() - t0
  num_layers = len(stats.dims) // 2

  os.makedirs(args.out, exist_ok=True)
  out = lambda f: os.path.join(args.out, f)
  figures, layers = [], []
  kernels = [net.kernels(p) for p in params]
  init_kernels = net.kernels(train.select(init_params, 0))
  t_clip = 0.0
  for l in range(num_layers):
    k0 = kernels[0][l]
    kind = net.kinds[l]
    label = f"layer {l + 1} {net.names[l]} ({kind}, input d={stats.dims[l]})"
    c1, c2 = moments.covariance(stats, l), moments.covariance(stats, num_layers + l)
    al = align.align_moments(stats, l, num_layers + l)
    ev1, e1 = spectra.activation_spectrum(c1)
    ev2, e2 = spectra.activation_spectrum(c2)
    act_stab = align.stability(e1, e2, al.matrix)
    w1, w2 = (spectra.weight_matrix(k[l]) for k in kernels)
    # Layer 1 reads the same pixels in both networks: no alignment needed.
    w_stab = align.weight_stability(w1, w2, None if l == 0 else spectra.input_map(al.matrix, k0.shape))
    wev, wvec = spectra.weight_spectrum(k0)
    wev_init, _ = spectra.weight_spectrum(init_kernels[l])
    law = spectra.layer_law(k0, "torch")
    learned = int(spectra.learned_components(wev, law))
    learned_init = int(spectra.learned_components(wev_init, law))

    t0 = time.perf_counter()
    act_ranks = _ranks(e1.shape[0])
    w_ranks = _ranks(wvec.shape[0])
    clip_act = spectra.clip_sweep(net, params[0], l, e1, act_ranks, x_test, y_test)
    clip_w = spectra.clip_sweep(net, params[0], l, wvec, w_ranks, x_test, y_test)
    t_clip += time.perf_counter() - t0

    figures.append(plots.save(
        plots.spectrum([ev1, ev2], [f"seed {seeds[0]}", f"seed {seeds[1]}"],
                       title=f"Activation covariance spectrum\n{label}"),
        out(f"activation_spectrum_layer{l + 1}.png")))
    figures.append(plots.save(
        plots.weight_spectrum(wev, wev_init, law,
                              title=f"Weight covariance spectrum, {label}\n"
                                    f"{learned} eigenvalues above the edge"),
        out(f"weight_spectrum_layer{l + 1}.png")))
    ax = plots.curve(act_ranks, np.asarray(clip_act), label="activation eigenvectors",
                     xlabel="rank k kept", ylabel="test accuracy (%)",
                     title=f"Clipping the input of {label}")
    plots.curve(w_ranks, np.asarray(clip_w), label="weight eigenvectors", ax=ax)
    ax.axhline(float(test_acc[0]), color="k", lw=0.8, ls=":", label="unclipped")
    ax.set_xscale("log")
    ax.legend()
    figures.append(plots.save(ax, out(f"clipping_layer{l + 1}.png")))
    figures.append(plots.save(
        plots.stability(act_stab, title=f"Activation eigenvectors after alignment\n{label}"),
        out(f"act_stability_layer{l + 1}.png")))
    figures.append(plots.save(
        plots.stability(w_stab, title=f"Weight eigenvectors after alignment\n{label}"),
        out(f"weight_stability_layer{l + 1}.png")))
    layers.append({
        "layer": l + 1, "name": net.names[l], "kind": kind, "input_dim": stats.dims[l],
        "samples": int(stats.count[l]), "r2": float(al.r2),
        "top_activation_eigenvalues": [float(v) for v in ev1[:10]],
        "learned_components": learned, "learned_components_at_init": learned_init,
        "marchenko_pastur": {"ratio": law.ratio, "variance": law.variance,
                             "lower": law.lower, "upper": law.upper},
        "clipping": {"activation": {"ranks": act_ranks, "accuracy": np.asarray(clip_act).tolist()},
                     "weight": {"ranks": w_ranks, "accuracy": np.asarray(clip_w).tolist()}},
        "act_stability_diag_top10": [float(v) for v in jnp.diag(act_stab)[:10]],
        "weight_stability_diag_top10": [float(v) for v in jnp.diag(w_stab)[:10]],
    })
  timings["clipping_seconds"] = t_clip
  r2_all = [layer["r2"] for layer in layers]
  figures.append(plots.save(
      plots.bars(r2_all, [f"layer {l + 1}" for l in range(num_layers)],
                 ylabel="r² (alignment)", title="Variance explained by alignment"),
      out("r2.png")))

  rb_acc, rb_r2 = [], []
  if args.samples:
    t0 = time.perf_counter()
    gen = rainbow.generate(jax.random.key(args.seed), net, params[0], x,
                           num_samples=args.samples, batch_size=args.batch)
    rb_acc = np.asarray(evaluate.accuracy(net, gen.params, x_test, y_test,
                                          stacked=True)).tolist()
    rb_r2 = np.asarray(gen.r2).tolist()
    timings["rainbow_seconds"] = time.perf_counter() - t0
    vals = [float(test_acc[0])] + rb_acc
    figures.append(plots.save(
        plots.bars(vals, ["reference"] + [f"sample {i + 1}" for i in range(len(rb_acc))],
                   ylabel="test accuracy (%)", ylim=(0, 100),
                   title=f"Rainbow networks sampled from seed {seeds[0]}"
                         f" (mean {np.mean(rb_acc):.2f} ± {np.std(rb_acc):.2f} %)"),
        out("rainbow_accuracy.png")))
    print(f"rainbow accuracy over {len(rb_acc)} samples: {np.mean(rb_acc):.2f}"
          f" ± {np.std(rb_acc):.2f} % (reference {test_acc[0]:.2f} %)", flush=True)

  fig = _training_figure(hist, seeds, args.arch, name, out("training.png"))
  if fig:
    figures.append(fig)

  timings["total_seconds"] = time.perf_counter() - t_start
  results = {
      "command": "analyze", "dataset": name, "source": ds.source, "samples": int(len(x)),
      "arch": args.arch,
      "widths": list(model.dims[1:-1]) if args.arch == "mlp" else list(model.channels[1:]),
      "networks": f"seeds {seeds}, PyTorch-default init, trained {args.epochs} epoch(s)"
                  " with SGD (lr 0.01, momentum 0.9, batch 128), each its own data order",
      "epochs": args.epochs, "seeds": seeds,
      "trained_accuracy": [float(a) for a in test_acc],
      "history": {"loss": hist.loss.tolist(), "test_accuracy": hist.test_accuracy.tolist(),
                  "epoch_seconds": hist.seconds.tolist()},
      "r2": r2_all[1:], "r2_all_layers": r2_all,
      "learned_components": [layer["learned_components"] for layer in layers],
      "rainbow_accuracy": rb_acc,
      "rainbow_accuracy_mean": float(np.mean(rb_acc)) if rb_acc else None,
      "rainbow_accuracy_std": float(np.std(rb_acc)) if rb_acc else None,
      "rainbow_r2": rb_r2,
      "layers": layers, "timings": timings,
      "versions": {"python": platform.python_version(), "jax": jax.__version__,
                   "rainbow_jax": _version()},
      "device": str(jax.devices()[0]),
      "figures": [os.path.basename(f) for f in figures],
  }
  with open(out("results.json"), "w") as f:
    json.dump(results, f, indent=1)
  _write_report(results, out("report.md"), out("report.html"))
  print(f"r² per aligned layer: {', '.join(f'{v:.3f}' for v in results['r2'])};"
        f" learned components {results['learned_components']}")
  print(f"wrote {args.out}/report.md, report.html, results.json and {len(figures)} figures"
        f" in {timings['total_seconds']:.1f} s")
  return results


def _training_figure(hist, seeds, arch, name, path):
  """Test accuracy per epoch, one line per seed; the path, or None untrained."""
  from rainbow_jax import plots
  ax = None
  for k, sd in enumerate(seeds):
    ax = plots.curve(np.arange(1, len(hist.test_accuracy) + 1), hist.test_accuracy[:, k],
                     label=f"seed {sd}", ax=ax, xlabel="epoch", ylabel="test accuracy (%)",
                     title=f"{arch.upper()} on {name}, {len(seeds)} seeds in one program")
  return None if ax is None else plots.save(ax, path)


def _version() -> str:
  from importlib import metadata
  try:
    return metadata.version("rainbow_jax")
  except metadata.PackageNotFoundError:
    return "unknown"


def train_report(args) -> dict:
  """Trains K seeds as one compiled program and writes per-seed accuracies."""
  from rainbow_jax import models, train

  name = _pick_dataset(args.dataset)
  ds = _load(name, args.data_dir)
  print(f"dataset {name}: {ds.x_train.shape[0]} train / {ds.x_test.shape[0]} test"
        f" images {ds.x_train.shape[1:]} from {ds.source}", flush=True)
  x, y = ds.x_train, ds.y_train
  if args.max_samples:
    x, y = x[: args.max_samples], y[: args.max_samples]
  model = models.make(args.arch, x.shape[1:], ds.num_classes, widths=args.widths,
                      init=args.init)
  seeds = list(range(args.seed, args.seed + args.seeds))
  devices = jax.devices() if args.shard and jax.device_count() > 1 else None
  t0 = time.perf_counter()
  state, hist = train.fit(model, x, y, ds.x_test, ds.y_test, seeds=seeds,
                          epochs=args.epochs, batch_size=args.batch_size,
                          learning_rate=args.lr, momentum=args.momentum,
                          shared_order=args.shared_order,
                          checkpoint_dir=args.checkpoint_dir, devices=devices)
  seconds = time.perf_counter() - t0
  acc = hist.test_accuracy[-1]
  os.makedirs(args.out, exist_ok=True)
  results = {
      "command": "train", "dataset": name, "source": ds.source, "arch": args.arch,
      "model": repr(model), "seeds": seeds, "epochs": args.epochs,
      "batch_size": args.batch_size, "learning_rate": args.lr, "momentum": args.momentum,
      "test_accuracy": [float(a) for a in acc],
      "test_accuracy_mean": float(np.mean(acc)), "test_accuracy_std": float(np.std(acc)),
      "history": {"loss": hist.loss.tolist(), "train_accuracy": hist.train_accuracy.tolist(),
                  "test_accuracy": hist.test_accuracy.tolist(),
                  "epoch_seconds": hist.seconds.tolist()},
      "seconds": seconds, "device": str(jax.devices()[0]),
      "versions": {"python": platform.python_version(), "jax": jax.__version__},
  }
  _training_figure(hist, seeds, args.arch, name, os.path.join(args.out, "test_accuracy.png"))
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(f"test accuracy per seed: {', '.join(f'{a:.2f}' for a in acc)} %"
        f" (mean {np.mean(acc):.2f} ± {np.std(acc):.2f}); {seconds:.1f} s;"
        f" wrote {args.out}/results.json")
  return results


def _write_report(results: dict, md_path: str, html_path: str) -> None:
  acc = results["trained_accuracy"]
  t = results["timings"]
  intro = [
      f"{results['samples']} training images from `{results['source']}`;"
      f" {results['arch'].upper()} with widths {results['widths']}; {results['networks']}.",
      f"Test accuracy per seed: {', '.join(f'{a:.2f} %' for a in acc)}"
      f" (training {t['train_seconds']:.1f} s for all seeds, one vmapped program).",
      f"One streamed pass computed every layer's self and cross second moments of seeds"
      f" {results['seeds'][0]} and {results['seeds'][1]} in {t['moments_seconds']:.1f} s"
      f" on {results['device']}.",
  ]
  if results["rainbow_accuracy"]:
    intro.append(
        f"Rainbow networks sampled from seed {results['seeds'][0]}:"
        f" {results['rainbow_accuracy_mean']:.2f} ± {results['rainbow_accuracy_std']:.2f} %"
        f" over {len(results['rainbow_accuracy'])} samples"
        f" ({t['rainbow_seconds']:.1f} s, all samples in one vmapped program).")
  head = ["layer", "kind", "input dim", "r²", "learned components (init)",
          "top activation eigenvalue"]
  rows = [[str(layer["layer"]), layer["kind"], str(layer["input_dim"]), f"{layer['r2']:.4f}",
           f"{layer['learned_components']} ({layer['learned_components_at_init']})",
           f"{layer['top_activation_eigenvalues'][0]:.4g}"] for layer in results["layers"]]
  note = ("Layer 1 reads the pixels, identical for both networks (r² = 1). Learned"
          " components: weight-covariance eigenvalues above the Marchenko–Pastur edge of"
          " the layer's shape and initialisation (in brackets: the same count at"
          " initialisation, the noise level).")
  md = [f"# rainbow_jax analysis — {results['dataset']}", ""] + intro + [""]
  md += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  md += ["| " + " | ".join(r) + " |" for r in rows]
  md += ["", note, ""] + [f"![{f}]({f})\n" for f in results["figures"]]
  with open(md_path, "w") as f:
    f.write("\n".join(md))
  esc = lambda v: (str(v).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                   .replace("`", ""))
  html = ["<!doctype html><meta charset='utf-8'>",
          f"<title>rainbow_jax analysis — {esc(results['dataset'])}</title>",
          "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
          "td,th{border:1px solid #ccc;padding:3px 8px}table{border-collapse:collapse}"
          "img{max-width:100%}</style>",
          f"<h1>rainbow_jax analysis — {esc(results['dataset'])}</h1>"]
  html += [f"<p>{esc(p)}</p>" for p in intro]
  html += ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
  html += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
  html += ["</table>", f"<p>{esc(note)}</p>"]
  html += [f"<p><img src='{f}' alt='{f}'></p>" for f in results["figures"]]
  with open(html_path, "w") as f:
    f.write("\n".join(html))


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="rainbow-jax", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  c = sub.add_parser("analyze", help="the tutorial end to end: train, spectra, clipping,"
                                       " alignment, stability, rainbow samples; a report")
  c.add_argument("--dataset", default="auto",
                 help="fashion_mnist | mnist | cifar10 | digits | auto (Fashion-MNIST"
                      " when installed, else digits)")
  c.add_argument("--data-dir", default=None, help="directory of IDX files")
  c.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
  c.add_argument("--widths", type=int, nargs="+", default=None,
                 help="hidden widths (mlp) or conv channels (cnn)")
  c.add_argument("--seeds", type=int, default=2, help="seeds trained (≥ 2; 0 and 1 compared)")
  c.add_argument("--samples", type=int, default=8, help="rainbow networks sampled (0: none)")
  c.add_argument("--epochs", type=int, default=5,
                 help="epochs to train the seeds first (0: analyse at init)")
  c.add_argument("--batch", type=int, default=1000,
                 help="batch of the moments and alignment passes (memory only)")
  c.add_argument("--max-samples", type=int, default=0, help="training images used; 0: all")
  c.add_argument("--seed", type=int, default=0, help="first seed")
  c.add_argument("--out", default="reports/analyze")
  c.set_defaults(run=analyze_report)

  t = sub.add_parser("train", help="train K seeds as one compiled program")
  t.add_argument("--dataset", default="auto")
  t.add_argument("--data-dir", default=None)
  t.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
  t.add_argument("--widths", type=int, nargs="+", default=None)
  t.add_argument("--init", default="torch", choices=["torch", "flax"])
  t.add_argument("--seeds", type=int, default=4, help="number of seeds K")
  t.add_argument("--seed", type=int, default=0, help="first seed")
  t.add_argument("--epochs", type=int, default=5)
  t.add_argument("--batch-size", type=int, default=128)
  t.add_argument("--lr", type=float, default=0.01)
  t.add_argument("--momentum", type=float, default=0.9)
  t.add_argument("--shared-order", action="store_true",
                 help="all seeds see the same data order")
  t.add_argument("--max-samples", type=int, default=0, help="0: all")
  t.add_argument("--checkpoint-dir", default=None,
                 help="save every epoch; resume from the newest checkpoint")
  t.add_argument("--shard", action="store_true", help="shard seeds over all devices")
  t.add_argument("--out", default="reports/train")
  t.set_defaults(run=train_report)
  return p


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  try:
    args.run(args)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
