"""`rainbow-jax analyze`: every analysis that applies to K networks of one
architecture, written up as a report with figures.

The networks are either trained here (`rainbow_jax.cli`: the tutorial's MLP
or CNN, or ResNet-20) or a user's own linen model with trained seeds read
from checkpoints (`user_networks`). Either way the analyses see them through
`rainbow_jax.network`, and `run` says in the report which analyses do not
apply to them and why (one seed: no seed comparison; no chain of weight
layers: no SVR; …).

Analyses, per weight layer: activation spectra; weight spectra against the
Marchenko–Pastur law of the layer's initialisation (learned components);
clipping curves; alignment r² and eigenvector stability between seeds 0 and
1. Across layers: layer × layer linear CKA between seeds 0 and 1 (inputs
averaged over space), the SVR's internal dimensions of every chain of weight
layers (a residual network: each block's chain), and S rainbow networks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import (
  align,
  evaluate,
  moments,
  network,
  rainbow,
  similarity,
  spectra,
  svr_report,
)


class Networks(NamedTuple):
  """What `run` analyses.

  Attributes:
    net: the `rainbow_jax.network.Network`.
    variables: one variables pytree per network (seed), seed 0 the reference.
    labels: a label per network (``'seed 0'``, a checkpoint path…).
    init_variables: variables of the same model at initialisation (the
      noise level of the weight spectra), or None.
    init_law: the initialiser for `spectra.layer_law` (``'torch'``,
      ``'flax'``, a variance or a JAX initialiser).
    arch: a short name of the architecture.
    description: one sentence on where the networks come from.
    history: a `rainbow_jax.train.History` when trained here, else None.
  """

  net: Any
  variables: list
  labels: list
  init_variables: Any
  init_law: Any
  arch: str
  description: str
  history: Any = None


# --------------------------------------------------------------------------
# A user's model and checkpoints.


def load_factory(spec: str) -> Callable[[], Any]:
  """``'path/to/file.py:FACTORY'`` → the callable ``FACTORY`` (a function
  returning a linen module, or a module class with default arguments)."""
  path, sep, name = spec.rpartition(":")
  if not sep or not path.endswith(".py") or not name:
    raise ValueError(f"--model must be FILE.py:FACTORY, got {spec!r}.")
  if not os.path.isfile(path):
    raise ValueError(f"--model: no file {path}.")
  mod_spec = importlib.util.spec_from_file_location(
      f"_rainbow_user_{abs(hash(os.path.abspath(path)))}", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  if not hasattr(mod, name):
    raise ValueError(f"--model: {path} defines no {name!r}.")
  return getattr(mod, name)


def load_variables(path: str) -> dict:
  """Variables ``{'params': …[, 'batch_stats': …]}`` from an orbax checkpoint
  directory (as `rainbow-jax train --checkpoint-dir` writes, or any orbax
  pytree checkpoint) or a Flax ``.msgpack`` file. A tree without a
  ``params`` key is taken as the params themselves."""
  from flax import serialization
  if os.path.isdir(path):
    from rainbow_jax import checkpoint
    try:
      raw, _ = checkpoint.restore_raw(path)
    except FileNotFoundError:
      import orbax.checkpoint as ocp
      raw = ocp.StandardCheckpointer().restore(os.path.abspath(path))
  elif os.path.isfile(path):
    with open(path, "rb") as f:
      raw = serialization.msgpack_restore(f.read())
  else:
    raise ValueError(f"--checkpoint: no file or directory {path}.")
  if isinstance(raw, dict) and "params" in raw:
    out = {"params": raw["params"]}
    if raw.get("batch_stats"):
      out["batch_stats"] = raw["batch_stats"]
    return out
  return {"params": raw}


def split_seeds(variables: dict, template: Any, name: str) -> list[dict]:
  """One variables tree per seed: `variables` as `template` (one network) or
  with a leading ``[K]`` seed axis on every leaf (K networks)."""
  from flax import traverse_util
  want = traverse_util.flatten_dict({k: template[k] for k in variables if k in template},
                                    sep="/")
  have = traverse_util.flatten_dict(dict(variables), sep="/")
  if set(want) != set(have):
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    raise ValueError(f"{name} does not fit the model: missing {missing[:5]}, unexpected"
                     f" {extra[:5]}.")
  leading = set()
  for k, t in want.items():
    shape = np.shape(have[k])
    if shape == tuple(t.shape):
      leading.add(None)
    elif shape[1:] == tuple(t.shape):
      leading.add(shape[0])
    else:
      raise ValueError(f"{name}: {k} has shape {shape}, the model's is {tuple(t.shape)}.")
  if len(leading) != 1:
    raise ValueError(f"{name}: some arrays have a seed axis and some not.")
  k = leading.pop()
  tree = jax.tree_util.tree_map(jnp.asarray, dict(variables))
  if k is None:
    return [tree]
  return [jax.tree_util.tree_map(lambda a, i=i: a[i], tree) for i in range(k)]


def user_networks(spec: str, checkpoints: Sequence[str], x: Any, *, init: Any = "flax",
                  seed: int = 0) -> Networks:
  """A user's linen model (`load_factory`) and its trained seeds (one or
  several checkpoints, each of one network or K stacked seeds)."""
  module = load_factory(spec)()
  if not hasattr(module, "init") or not hasattr(module, "apply"):
    raise ValueError(f"--model {spec} must return a flax.linen Module, got"
                     f" {type(module).__name__} (NNX models: use rainbow_jax.network.from_nnx"
                     " from Python).")
  if not checkpoints:
    raise ValueError("--model needs at least one --checkpoint.")
  x = jnp.asarray(x)
  template = jax.eval_shape(module.init, jax.random.key(0), x[:1])
  variables, labels = [], []
  # Figures label a checkpoint by its file name (the description keeps the
  # paths), unless two share one.
  names = [os.path.basename(os.path.normpath(p)) for p in checkpoints]
  names = names if len(set(names)) == len(names) else list(checkpoints)
  for path, name in zip(checkpoints, names):
    seeds = split_seeds(load_variables(path), template, path)
    variables += seeds
    labels += [name] if len(seeds) == 1 else [f"{name}[{i}]" for i in range(len(seeds))]
  net = network.from_linen(module, variables[0], x[:2])
  init_vars = jax.jit(module.init)(jax.random.key(seed), x[:1])
  return Networks(net, variables, labels, init_vars, init,
                  type(module).__name__,
                  f"{len(variables)} network(s) of {type(module).__name__} from {spec}, read"
                  f" from {', '.join(checkpoints)}")


# --------------------------------------------------------------------------
# The analyses.


def _ranks(d: int) -> list[int]:
  """Clipping ranks: powers of two below d, then d."""
  r = [1]
  while r[-1] * 2 < d:
    r.append(r[-1] * 2)
  return sorted(set(r + [d]))


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def _version() -> str:
  from importlib import metadata
  try:
    return metadata.version("rainbow_jax")
  except metadata.PackageNotFoundError:
    return "unknown"


def _batches(x, size):
  for i in range(0, len(x), size):
    yield x[i:i + size]


def run(nets: Networks, x, x_test, y_test, out_dir: str, *, samples: int = 8,
        batch: int = 1000, clip_layers: Sequence[int] | None = None,
        clip_samples: int | None = None, cka_samples: int = 2000, conv: str = "mean",
        align_samples: int | None = None, seed: int = 0,
        timings: dict | None = None, extra: dict | None = None) -> dict:
  """Runs every analysis that applies; writes results.json, report.md/html
  and PNG figures to `out_dir`; returns the results dict.

  Args:
    nets: the `Networks`.
    x: ``[N, ...]`` training images (moments, alignments, BatchNorm
      re-estimation of rainbow networks).
    x_test, y_test: test images and labels (accuracies, clipping, CKA).
    samples: rainbow networks S (0: none).
    batch: batch of the data passes (memory only).
    clip_layers: 1-based layers whose clipping curves are computed
      (default: all when ≤ 6 weight layers, else the first, middle, last).
    clip_samples: test images of the clipping sweeps (default: all).
    cka_samples: test images of the layer × layer CKA.
    conv: how conv inputs enter the CKA (`rainbow_jax.similarity.features`:
      ``"mean"`` over positions, or ``"flatten"`` per image).
    align_samples: training images of the rainbow alignments (default all).
    seed: PRNG seed of the rainbow samples.
    timings, extra: merged into the results.
  """
  from rainbow_jax import plots
  t_start = time.perf_counter()
  timings = dict(timings or {})
  net, vs = nets.net, nets.variables
  n_layers = len(net)
  two = len(vs) >= 2
  notes = []
  x = np.asarray(x)
  x_test, y_test = jnp.asarray(x_test), jnp.asarray(y_test)
  os.makedirs(out_dir, exist_ok=True)
  out = lambda f: os.path.join(out_dir, f)
  figures = []

  acc = np.asarray(evaluate.accuracy(net, _stack(vs), x_test, y_test, stacked=True))
  print(f"test accuracy: {', '.join(f'{a:.2f} %' for a in acc)}", flush=True)

  t0 = time.perf_counter()
  stats = moments.layer_moments(
      net, vs[0], _batches(x, batch), params2=vs[1] if two else None,
      cross="matched" if two else "none",
      progress=f"one pass: all layers, {'networks 0 and 1' if two else 'network 0'}",
      total=-(-len(x) // batch))
  timings["moments_seconds"] = time.perf_counter() - t0
  if not two:
    notes.append("Seed comparison (alignment r², eigenvector stability, CKA between"
                 " networks): needs at least 2 networks, 1 was given.")

  if clip_layers is None:
    clip_layers = (list(range(1, n_layers + 1)) if n_layers <= 6
                   else sorted({1, (n_layers + 1) // 2, n_layers}))
  clip_layers = [int(c) for c in clip_layers]
  if any(not 1 <= c <= n_layers for c in clip_layers):
    raise ValueError(f"--clip-layers must lie in [1, {n_layers}], got {clip_layers}.")
  if len(clip_layers) < n_layers:
    notes.append(f"Clipping curves were computed for layers {clip_layers} only"
                 " (--clip-layers; each costs a sweep of test-set passes).")
  xc, yc = (x_test, y_test) if not clip_samples else (x_test[:clip_samples],
                                                      y_test[:clip_samples])
  kernels = [net.kernels(v) for v in vs[:2]]
  init_kernels = None if nets.init_variables is None else net.kernels(nets.init_variables)
  example = jax.ShapeDtypeStruct((2, *x.shape[1:]), jnp.float32)
  producers = net.producers(vs[0], example)  # one trace; links and chains follow
  links = network.links_of(producers)
  chains = network.chains_of(links)
  t_clip, layers = 0.0, []
  for l in range(n_layers):
    k0, kind = kernels[0][l], net.kinds[l]
    label = f"layer {l + 1} {net.names[l]} ({kind}, input d={stats.dims[l]})"
    ev1, e1 = spectra.activation_spectrum(moments.covariance(stats, l))
    wev, wvec = spectra.weight_spectrum(k0)
    law = spectra.layer_law(k0, nets.init_law)
    learned = int(spectra.learned_components(wev, law))
    rec = {"layer": l + 1, "name": net.names[l], "kind": kind, "input_dim": stats.dims[l],
           "samples": int(stats.count[l]), "reads": [j + 1 for j in producers[l]],
           "top_activation_eigenvalues": [float(v) for v in ev1[:10]],
           "learned_components": learned,
           "marchenko_pastur": {"ratio": law.ratio, "variance": law.variance,
                                "lower": law.lower, "upper": law.upper}}
    spectra_shown = [ev1]
    if init_kernels is not None:
      wev_init, _ = spectra.weight_spectrum(init_kernels[l])
      rec["learned_components_at_init"] = int(spectra.learned_components(wev_init, law))
      figures.append(plots.save(
          plots.weight_spectrum(wev, wev_init, law,
                                title=f"Weight covariance spectrum, {label}\n"
                                      f"{learned} eigenvalues above the edge"),
          out(f"weight_spectrum_layer{l + 1}.png")))
    if two:
      ev2, e2 = spectra.activation_spectrum(moments.covariance(stats, n_layers + l))
      spectra_shown.append(ev2)
      al = align.align_moments(stats, l, n_layers + l)
      act_stab = align.stability(e1, e2, al.matrix)
      w1, w2 = (spectra.weight_matrix(k[l]) for k in kernels)
      # Layer 1 reads the same pixels in both networks: no alignment needed.
      w_stab = align.weight_stability(
          w1, w2, None if l == 0 else spectra.input_map(al.matrix, k0.shape))
      rec["r2"] = float(al.r2)
      rec["act_stability_diag_top10"] = [float(v) for v in jnp.diag(act_stab)[:10]]
      rec["weight_stability_diag_top10"] = [float(v) for v in jnp.diag(w_stab)[:10]]
      figures.append(plots.save(
          plots.stability(act_stab, title=f"Activation eigenvectors after alignment\n{label}"),
          out(f"act_stability_layer{l + 1}.png")))
      figures.append(plots.save(
          plots.stability(w_stab, title=f"Weight eigenvectors after alignment\n{label}"),
          out(f"weight_stability_layer{l + 1}.png")))
    figures.append(plots.save(
        plots.spectrum(spectra_shown, nets.labels[:len(spectra_shown)],
                       title=f"Activation covariance spectrum\n{label}"),
        out(f"activation_spectrum_layer{l + 1}.png")))
    if l + 1 in clip_layers:
      t0 = time.perf_counter()
      act_ranks, w_ranks = _ranks(e1.shape[0]), _ranks(wvec.shape[0])
      clip_act = spectra.clip_sweep(net, vs[0], l, e1, act_ranks, xc, yc)
      clip_w = spectra.clip_sweep(net, vs[0], l, wvec, w_ranks, xc, yc)
      t_clip += time.perf_counter() - t0
      rec["clipping"] = {
          "activation": {"ranks": act_ranks, "accuracy": np.asarray(clip_act).tolist()},
          "weight": {"ranks": w_ranks, "accuracy": np.asarray(clip_w).tolist()}}
      ax = plots.curve(act_ranks, np.asarray(clip_act), label="activation eigenvectors",
                       xlabel="rank k kept", ylabel="test accuracy (%)",
                       title=f"Clipping the input of {label}")
      plots.curve(w_ranks, np.asarray(clip_w), label="weight eigenvectors", ax=ax)
      unclipped = float(acc[0]) if not clip_samples else float(
          evaluate.accuracy(net, vs[0], xc, yc))
      ax.axhline(unclipped, color="k", lw=0.8, ls=":", label="unclipped")
      ax.set_xscale("log")
      ax.legend()
      figures.append(plots.save(ax, out(f"clipping_layer{l + 1}.png")))
    layers.append(rec)
  timings["clipping_seconds"] = t_clip
  short = [f"{l + 1} {n.split('/')[-2] + '/' if '/' in n else ''}{n.split('/')[-1]}"
           for l, n in enumerate(net.names)]
  r2_all = [rec["r2"] for rec in layers] if two else []
  if two:
    figures.append(plots.save(
        plots.bars(r2_all, short, ylabel="r² (alignment)",
                   title="Variance of network 1's layer inputs explained by network 0's"),
        out("r2.png")))

  cka = None
  if two:
    t0 = time.perf_counter()
    n_cka = min(cka_samples, len(x_test))
    feats = [evaluate.representations(net, v, x_test[:n_cka], conv=conv, batch_size=batch)
             for v in vs[:2]]
    cka = np.asarray(similarity.pairwise(feats[0], feats[1], measure="linear_cka"))
    timings["cka_seconds"] = time.perf_counter() - t0
    figures.append(plots.save(
        plots.heatmap(cka, short, short, xlabel=f"input of layer, {nets.labels[1]}",
                      ylabel=f"input of layer, {nets.labels[0]}",
                      title=f"Linear CKA, {n_cka} test images"),
        out("cka.png")))

  svr_chains = [{"layers": [j + 1 for j in g.layers], "names": [net.names[j] for j in g.layers],
                 "internal_dims": [list(d) for d in g.result.internal_dims]}
                for g in svr_report.chain_svrs(kernels[0], chains, with_pvalues=False)]
  if not svr_chains:
    notes.append("SVR: no two consecutive weight layers where the second alone reads the"
                 " first's output, so there is no chain for an SVR graph.")
  elif len(chains) > 1:
    notes.append("SVR: the weight layers do not form one chain (skip connections); the SVR"
                 " is computed along each chain of consecutive layers where only the next"
                 " layer reads a layer's output (a residual network: each block's convs).")

  rb_acc, rb_r2, sampled = [], [], []
  if samples:
    t0 = time.perf_counter()
    xa = x if not align_samples else x[:align_samples]
    sampled = [j for j in range(n_layers - 1) if links[j]]
    kept = [j for j in range(n_layers - 1) if j not in sampled]
    if kept:
      notes.append(
          f"Rainbow: layers {[j + 1 for j in kept]} write into a skip connection and keep the"
          " reference's neurons (realigned on their inputs); layers"
          f" {[j + 1 for j in sampled]} are sampled. See rainbow_jax.rainbow.")
    gen = rainbow.generate(jax.random.key(seed), net, vs[0], xa, num_samples=samples,
                           batch_size=batch)
    rb_acc = np.asarray(evaluate.accuracy(net, gen.params, x_test, y_test,
                                          stacked=True)).tolist()
    rb_r2 = np.asarray(gen.r2).tolist()
    timings["rainbow_seconds"] = time.perf_counter() - t0
    vals = [float(acc[0])] + rb_acc
    figures.append(plots.save(
        plots.bars(vals, ["reference"] + [f"sample {i + 1}" for i in range(len(rb_acc))],
                   ylabel="test accuracy (%)", ylim=(0, 100),
                   title=f"Rainbow networks sampled from {nets.labels[0]}"
                         f" (mean {np.mean(rb_acc):.2f} ± {np.std(rb_acc):.2f} %)"),
        out("rainbow_accuracy.png")))
    print(f"rainbow accuracy over {len(rb_acc)} samples: {np.mean(rb_acc):.2f}"
          f" ± {np.std(rb_acc):.2f} % (reference {acc[0]:.2f} %)", flush=True)
    if nets.net.norms:
      notes.append("Rainbow: the generated networks' BatchNorm statistics were re-estimated"
                   " on the training images after every sampled layer.")

  if nets.history is not None and len(nets.history.test_accuracy):
    h = nets.history
    ax = None
    for k, label in enumerate(nets.labels):
      ax = plots.curve(np.arange(1, len(h.test_accuracy) + 1), h.test_accuracy[:, k],
                       label=label, ax=ax, xlabel="epoch", ylabel="test accuracy (%)",
                       title=f"{nets.arch}, {len(nets.labels)} seeds in one program")
    figures.append(plots.save(ax, out("training.png")))

  timings["analysis_seconds"] = time.perf_counter() - t_start
  results = dict(extra or {})
  results.update({
      "command": "analyze", "arch": nets.arch, "networks": nets.description,
      "labels": list(nets.labels), "layer_names": list(net.names),
      "batch_norms": list(net.norms),
      "trained_accuracy": [float(a) for a in acc],
      "r2": r2_all[1:], "r2_all_layers": r2_all,
      "learned_components": [rec["learned_components"] for rec in layers],
      "learned_components_at_init": [rec.get("learned_components_at_init") for rec in layers],
      "cka": None if cka is None else cka.tolist(),
      "cka_conv": conv,
      "svr_chains": svr_chains,
      "rainbow_accuracy": rb_acc,
      "rainbow_accuracy_mean": float(np.mean(rb_acc)) if rb_acc else None,
      "rainbow_accuracy_std": float(np.std(rb_acc)) if rb_acc else None,
      "rainbow_r2": rb_r2, "rainbow_sampled_layers": [j + 1 for j in sampled],
      "layers": layers, "notes": notes, "timings": timings,
      "versions": {"python": platform.python_version(), "jax": jax.__version__,
                   "rainbow_jax": _version()},
      "device": str(jax.devices()[0]),
      "figures": [os.path.basename(f) for f in figures],
  })
  if nets.history is not None:
    results["history"] = {"loss": nets.history.loss.tolist(),
                          "test_accuracy": nets.history.test_accuracy.tolist(),
                          "epoch_seconds": nets.history.seconds.tolist()}
  timings["total_seconds"] = timings.get("train_seconds", 0.0) + timings["analysis_seconds"]
  with open(out("results.json"), "w") as f:
    json.dump(results, f, indent=1)
  write_report(results, out("report.md"), out("report.html"))
  if two:
    print(f"r² per aligned layer: {', '.join(f'{v:.3f}' for v in results['r2'])}")
  print(f"learned components {results['learned_components']}")
  print(f"wrote {out_dir}/report.md, report.html, results.json and {len(figures)} figures"
        f" in {timings['total_seconds']:.1f} s")
  return results


_CAPTIONS = {
    "weight_spectrum": "eigenvalues of the weight covariance WᵀW/n, trained and at"
                       " initialisation, against the Marchenko–Pastur law of its shape",
    "activation_spectrum": "eigenvalues of the covariance of the layer's input, per network",
    "act_stability": "overlap of the activation-covariance eigenvectors of the two networks"
                     " after alignment (1 on the diagonal: the same direction)",
    "weight_stability": "the same for the weight-covariance eigenvectors",
    "clipping": "test accuracy when the layer's input is projected onto its top-k"
                " eigenvectors (activation or weight covariance), k on a log scale",
    "r2": "variance of network 1's layer inputs explained by network 0's, after alignment",
    "cka": "linear CKA between every layer input of the two networks",
    "rainbow_accuracy": "test accuracy of the reference and of each rainbow sample",
    "training": "test accuracy per epoch, one line per seed",
}


def _figure_sections(figures: list, fmt: str, esc=str) -> list:
  """The figures with a caption each, per-layer ones under a heading per layer."""
  import re

  out, layer = [], None
  for f in figures:
    m = re.fullmatch(r"(.+)_layer(\d+)\.png", f)
    stem, n = (m.group(1), int(m.group(2))) if m else (f.removesuffix(".png"), None)
    if n is not None and n != layer:
      layer = n
      out += [f"## Layer {n}", ""] if fmt == "md" else [f"<h2>Layer {n}</h2>"]
    elif n is None and layer is not None:
      layer = None
      out += ["## Whole network", ""] if fmt == "md" else ["<h2>Whole network</h2>"]
    cap = _CAPTIONS.get(stem, stem.replace("_", " "))
    cap = cap if n is None else f"Layer {n}: {cap}"
    out += ([f"![{f}]({f})", "", f"*{cap}.*", ""] if fmt == "md" else
            [f"<figure><img src='{f}' alt='{esc(cap)}'><figcaption>{esc(cap)}."
             "</figcaption></figure>"])
  return out


def write_report(results: dict, md_path: str, html_path: str) -> None:
  """report.md and report.html of `run`'s results."""
  acc = results["trained_accuracy"]
  t = results["timings"]
  intro = [f"{results['networks']}."]
  if "samples" in results:
    intro.append(f"{results['samples']} training images from `{results['source']}`.")
  intro.append(f"Test accuracy per network: {', '.join(f'{a:.2f} %' for a in acc)}"
               + (f" (training {t['train_seconds']:.1f} s for all seeds, one program)."
                  if "train_seconds" in t else "."))
  intro.append(f"One streamed pass computed every layer's second moments in"
               f" {t['moments_seconds']:.1f} s on {results['device']}.")
  if results["rainbow_accuracy"]:
    intro.append(
        f"Rainbow networks sampled from {results['labels'][0]}:"
        f" {results['rainbow_accuracy_mean']:.2f} ± {results['rainbow_accuracy_std']:.2f} %"
        f" (mean ± standard deviation over the samples, ddof 0)"
        f" over {len(results['rainbow_accuracy'])} samples ({t['rainbow_seconds']:.1f} s,"
        f" sampled layers"
        f" {results['rainbow_sampled_layers']}).")
  if results.get("cka") is not None:
    intro.append(f"Linear CKA between every layer input of the two networks (cka.png); conv"
                 f" inputs {evaluate.CONV_TEXT[results['cka_conv']]}.")
  for c in results["svr_chains"]:
    intro.append(f"SVR internal dimensions (d_out, d_in) along layers {c['layers']}:"
                 f" {', '.join(str(tuple(d)) for d in c['internal_dims'])}.")
  two = bool(results["r2_all_layers"])
  head = ["layer", "name", "kind", "input dim"] + (["r²"] if two else []) + [
      "learned components (init)", "top activation eigenvalue"]
  rows = []
  for rec in results["layers"]:
    init = rec.get("learned_components_at_init")
    rows.append([str(rec["layer"]), rec["name"], rec["kind"], str(rec["input_dim"])]
                + ([f"{rec['r2']:.4f}"] if two else [])
                + [f"{rec['learned_components']}" + ("" if init is None else f" ({init})"),
                   f"{rec['top_activation_eigenvalues'][0]:.4g}"])
  note = ("Layer 1 reads the pixels, identical for both networks (r² = 1). Learned"
          " components: weight-covariance eigenvalues above the Marchenko–Pastur edge of"
          " the layer's shape and initialisation (in brackets: the same count at"
          " initialisation, the noise level).")
  notes = results.get("notes", [])
  md = [f"# rainbow_jax analysis — {results.get('dataset', '')} {results['arch']}", ""]
  md += intro + [""]
  md += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  md += ["| " + " | ".join(r) + " |" for r in rows]
  md += ["", note, ""]
  if notes:
    md += ["## What did not apply, and how it was adapted", ""] + [f"- {n}" for n in notes]
    md += [""]
  md += _figure_sections(results["figures"], "md")
  with open(md_path, "w") as f:
    f.write("\n".join(md))
  esc = lambda v: (str(v).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                   .replace("`", ""))
  title = f"rainbow_jax analysis — {results.get('dataset', '')} {results['arch']}"
  html = ["<!doctype html><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
          "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
          "td,th{border:1px solid #ccc;padding:3px 8px}table{border-collapse:collapse}"
          "img{max-width:100%}</style>", f"<h1>{esc(title)}</h1>"]
  html += [f"<p>{esc(p)}</p>" for p in intro]
  html += ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
  html += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
  html += ["</table>", f"<p>{esc(note)}</p>"]
  if notes:
    html += ["<h2>What did not apply, and how it was adapted</h2><ul>"]
    html += [f"<li>{esc(n)}</li>" for n in notes] + ["</ul>"]
  html += _figure_sections(results["figures"], "html", esc)
  with open(html_path, "w") as f:
    f.write("\n".join(html))


__all__ = ["Networks", "load_factory", "load_variables", "run", "split_seeds",
           "user_networks", "write_report"]
