"""`rainbow-jax analyze`: every analysis that applies to K networks of one
architecture, written up as a report with figures.

The networks are either trained here (`rainbow-jax analyze`: the tutorial's MLP
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

import argparse
import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import _compile, align, evaluate, moments, network, rainbow, similarity, spectra
from rainbow_jax.commands import _common
from rainbow_jax.commands import svr as svr_report
from rainbow_jax.commands._common import Networks


# --------------------------------------------------------------------------
# The analyses.


def _ranks(d: int) -> list[int]:
  """Clipping ranks: powers of two below d, then d."""
  r = [1]
  while r[-1] * 2 < d:
    r.append(r[-1] * 2)
  return sorted(set(r + [d]))


@jax.jit
def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)


def run(nets: Networks, x, x_test, y_test, out_dir: str, *, samples: int = 8,
        batch: int = 1000, clip_layers: Sequence[int] | None = None,
        clip_samples: int | None = None, cka_samples: int = 2000, conv: str = "mean",
        align_samples: int | None = None, seed: int = 0, streams: bool = False,
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
    streams: also sample the layers that write into residual streams,
      jointly per stream channel (`rainbow_jax.rainbow.generate`).
    timings, extra: merged into the results.
  """
  t_start, c_start = time.perf_counter(), _common.compile_seconds()
  net, vs = nets.net, nets.variables
  two = len(vs) >= 2
  x = np.asarray(x)
  x_test, y_test = np.asarray(x_test), np.asarray(y_test)  # batched on the host per pass
  os.makedirs(out_dir, exist_ok=True)
  ctx = _Context(nets, out_dir, batch, dict(timings or {}), tuple(x.shape[1:]))
  hist = nets.history
  if hist is not None and len(hist.test_accuracy):  # trained here: `fit` scored these networks
    acc = np.asarray(hist.test_accuracy[-1], np.float64)
  else:
    acc = np.asarray(evaluate.accuracy(net, _stack(vs), x_test, y_test, stacked=True))
  print(f"test accuracy: {', '.join(f'{a:.2f} %' for a in acc)}", flush=True)
  stats = _moments_step(ctx, x)
  if not two:
    ctx.notes.append("Seed comparison (alignment r², eigenvector stability, CKA between"
                     " networks): needs at least 2 networks, 1 was given.")
  layers = _layer_steps(ctx, stats, acc, x_test, y_test, clip_layers, clip_samples)
  short = [f"{l + 1} {n.split('/')[-2] + '/' if '/' in n else ''}{n.split('/')[-1]}"
           for l, n in enumerate(net.names)]
  r2_all = [rec["r2"] for rec in layers] if two else []
  _summary_figure(ctx, layers, short)
  if two:
    ctx.figure(_plots().bars(r2_all, short, ylabel="r² (alignment)",
                            title="Variance of network 1's layer inputs explained by"
                                  " network 0's"), "r2.png")
  cka = _cka_step(ctx, x_test[:cka_samples], conv, short) if two else None
  svr_chains = _svr_step(ctx)
  rb_acc, rb_r2, sampled = ([], [], []) if not samples else _rainbow_step(
      ctx, x if not align_samples else x[:align_samples], x_test, y_test, samples, seed,
      float(acc[0]), streams)
  _training_step(ctx)

  timings = ctx.timings
  timings["analysis_seconds"] = time.perf_counter() - t_start
  timings["analysis_compile_seconds"] = _common.compile_seconds() - c_start
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
      "layers": layers, "notes": ctx.notes, "timings": timings,
      **_common.environment(),
      "figures": [os.path.basename(f) for f in ctx.figures],
  })
  if nets.history is not None:
    results["history"] = {"loss": nets.history.loss.tolist(),
                          "test_accuracy": nets.history.test_accuracy.tolist(),
                          "epoch_seconds": nets.history.seconds.tolist()}
  timings["total_seconds"] = timings.get("train_seconds", 0.0) + timings["analysis_seconds"]
  _common.save_results(out_dir, results)
  write_report(results, ctx.out("report.md"), ctx.out("report.html"))
  if two:
    print(f"r² per aligned layer: {', '.join(f'{v:.3f}' for v in results['r2'])}")
  print(f"learned components {results['learned_components']}")
  print(f"wrote {out_dir}/report.md, report.html, results.json and {len(ctx.figures)} figures"
        f" in {timings['total_seconds']:.1f} s")
  return results


# --------------------------------------------------------------------------
# The steps of `run`: each computes its numbers, saves its figures and says
# what did not apply, through the `_Context`.


def _plots():
  """`rainbow_jax.plots`, imported on first use (matplotlib)."""
  from rainbow_jax import plots as p
  return p


@dataclasses.dataclass
class _Context:
  """What the steps of `run` share: the networks, where figures go, and the
  figures, notes and timings collected so far."""

  nets: Networks
  out_dir: str
  batch: int
  timings: dict
  example: tuple  # per-example shape of the inputs
  figures: list = dataclasses.field(default_factory=list)
  notes: list = dataclasses.field(default_factory=list)

  def out(self, name: str) -> str:
    return os.path.join(self.out_dir, name)

  @contextlib.contextmanager
  def timed(self, stage: str):
    """Adds the block's wall seconds and XLA compile seconds to
    ``timings[stage + '_seconds']`` and ``[stage + '_compile_seconds']``."""
    t0, c0 = time.perf_counter(), _common.compile_seconds()
    try:
      yield
    finally:
      for key, value in ((f"{stage}_seconds", time.perf_counter() - t0),
                         (f"{stage}_compile_seconds", _common.compile_seconds() - c0)):
        self.timings[key] = self.timings.get(key, 0.0) + value

  def figure(self, ax, name: str) -> None:
    self.figures.append(_plots().save(ax, self.out(name)))

  @functools.cached_property
  def kernels(self) -> list:
    return [self.nets.net.kernels(v) for v in self.nets.variables[:2]]

  @functools.cached_property
  def producers(self) -> list:
    """One trace of the forward pass; links and chains follow."""
    net, v = self.nets.net, self.nets.variables[0]
    return net.producers(v, jax.ShapeDtypeStruct((2, *self.example), jnp.float32))


def _moments_step(ctx: _Context, x) -> moments.Moments:
  """Every layer input's second moments (and the matched cross moments of
  networks 0 and 1) in one pass over the training images."""
  vs, two = ctx.nets.variables, len(ctx.nets.variables) >= 2
  with ctx.timed("moments"):
    stats = moments.layer_moments(
        ctx.nets.net, vs[0], _common.batches(x, ctx.batch), params2=vs[1] if two else None,
        cross="matched" if two else "none",
        progress=f"one pass: all layers, {'networks 0 and 1' if two else 'network 0'}",
        total=-(-len(x) // ctx.batch))
  return stats


def _layer_steps(ctx: _Context, stats, acc, x_test, y_test, clip_layers, clip_samples
                 ) -> list[dict]:
  """Per weight layer: spectra against Marchenko–Pastur, alignment r² and
  eigenvector stability between networks 0 and 1, clipping curves."""
  nets, net = ctx.nets, ctx.nets.net
  n_layers, two = len(net), len(nets.variables) >= 2
  if clip_layers is None:
    clip_layers = (list(range(1, n_layers + 1)) if n_layers <= 6
                   else sorted({1, (n_layers + 1) // 2, n_layers}))
  clip_layers = [int(c) for c in clip_layers]
  if any(not 1 <= c <= n_layers for c in clip_layers):
    raise ValueError(f"--clip-layers must lie in [1, {n_layers}], got {clip_layers}.")
  grouped = [c for c in clip_layers if net.layers[c - 1].groups > 1]
  if grouped:
    clip_layers = [c for c in clip_layers if c not in grouped]
    ctx.notes.append(f"Clipping: layers {grouped} are grouped convolutions, whose kernels"
                     " cannot hold a clipped (channel-mixing) input; not clipped.")
  if len(clip_layers) < n_layers:
    ctx.notes.append(f"Clipping curves were computed for layers {clip_layers} only"
                     " (--clip-layers; each costs a sweep of test-set passes).")
  xc, yc = (x_test, y_test) if not clip_samples else (x_test[:clip_samples],
                                                      y_test[:clip_samples])
  unclipped = float(acc[0]) if not clip_samples else float(
      evaluate.accuracy(net, nets.variables[0], xc, yc))
  init_kernels = None if nets.init_variables is None else net.kernels(nets.init_variables)
  layers = []
  ctx.timings.setdefault("clipping_seconds", 0.0)
  ctx.timings.setdefault("clipping_compile_seconds", 0.0)
  for l in range(n_layers):
    label = f"layer {l + 1} {net.names[l]} ({net.kinds[l]}, input d={stats.dims[l]})"
    arrays = _layer_arrays(stats, ctx.kernels[0][l], ctx.kernels[1][l] if two else None,
                           None if init_kernels is None else init_kernels[l], l, n_layers)
    rec = _spectra_of_layer(ctx, arrays, stats, l, label)
    shown = [arrays["ev1"]]
    if two:
      rec.update(_seeds_of_layer(ctx, arrays, l, label))
      shown.append(arrays["ev2"])
    e1, wvec = arrays["e1"], arrays["wvec"]
    ctx.figure(_plots().spectrum(shown, nets.labels[:len(shown)],
                                title=f"Activation covariance spectrum\n{label}"),
               f"activation_spectrum_layer{l + 1}.png")
    if l + 1 in clip_layers:
      with ctx.timed("clipping"):
        rec["clipping"] = _clipping_of_layer(ctx, l, label, e1, wvec, xc, yc, unclipped)
    layers.append(rec)
  return layers


@_compile.once(static_argnames=("l", "n_layers"))
def _layer_arrays(stats, k0, k1, k_init, l: int, n_layers: int) -> dict:
  """Every array the per-layer steps read, as one compiled program per layer
  (run eagerly, these were some thirty small programs per layer; it is
  decompositions, compiled quickly by `_compile.once` on CPU): the
  spectra of network 0 (and at init), and with network 1's kernel `k1` the
  alignment at layer l's input and the eigenvector stabilities."""
  out = {}
  out["ev1"], out["e1"] = spectra.activation_spectrum(moments.covariance(stats, l))
  out["wev"], out["wvec"] = spectra.weight_spectrum(k0)
  if k_init is not None:
    out["wev_init"] = spectra.weight_spectrum(k_init)[0]
  if k1 is not None:
    out["ev2"], e2 = spectra.activation_spectrum(moments.covariance(stats, n_layers + l))
    al = align.align_moments(stats, l, n_layers + l)
    out["r2"] = al.r2
    out["act_stab"] = align.stability(out["e1"], e2, al.matrix)
    # Layer 1 reads the same pixels in both networks: no alignment needed.
    out["w_stab"] = align.weight_stability(
        spectra.weight_matrix(k0), spectra.weight_matrix(k1),
        None if l == 0 else spectra.input_map(al.matrix, k0.shape))
  return out


def _spectra_of_layer(ctx: _Context, arrays: dict, stats, l: int, label: str) -> dict:
  """The layer's record: spectra and learned components."""
  nets, net = ctx.nets, ctx.nets.net
  k0 = ctx.kernels[0][l]
  ev1, wev = arrays["ev1"], arrays["wev"]
  law = spectra.layer_law(k0, nets.init_law)
  learned = int(spectra.learned_components(wev, law))
  rec = {"layer": l + 1, "name": net.names[l], "kind": net.kinds[l],
         "input_dim": stats.dims[l], "samples": int(stats.count[l]),
         "reads": [j + 1 for j in ctx.producers[l]],
         "top_activation_eigenvalues": np.asarray(ev1, np.float64)[:10].tolist(),
         "learned_components": learned,
         "marchenko_pastur": {"ratio": law.ratio, "variance": law.variance,
                              "lower": law.lower, "upper": law.upper}}
  if "wev_init" in arrays:
    wev_init = arrays["wev_init"]
    rec["learned_components_at_init"] = int(spectra.learned_components(wev_init, law))
    ctx.figure(_plots().weight_spectrum(wev, wev_init, law,
                                       title=f"Weight covariance spectrum, {label}\n"
                                             f"{learned} eigenvalues above the edge"),
               f"weight_spectrum_layer{l + 1}.png")
  return rec


def _seeds_of_layer(ctx: _Context, arrays: dict, l: int, label: str) -> dict:
  """Alignment r² and eigenvector stability of layer l between networks 0
  and 1."""
  act_stab, w_stab = np.asarray(arrays["act_stab"]), np.asarray(arrays["w_stab"])
  ctx.figure(_plots().stability(act_stab, title=f"Activation eigenvectors after alignment"
                                               f"\n{label}"),
             f"act_stability_layer{l + 1}.png")
  ctx.figure(_plots().stability(w_stab, title=f"Weight eigenvectors after alignment\n{label}"),
             f"weight_stability_layer{l + 1}.png")
  return {"r2": float(arrays["r2"]),
          "act_stability_diag_top10": [float(v) for v in np.diag(act_stab)[:10]],
          "weight_stability_diag_top10": [float(v) for v in np.diag(w_stab)[:10]]}


def _clipping_of_layer(ctx: _Context, l: int, label: str, e1, wvec, xc, yc,
                       unclipped: float) -> dict:
  """Test accuracy with layer l's input projected onto its top-k activation
  or weight eigenvectors, for k in powers of two."""
  net, v0 = ctx.nets.net, ctx.nets.variables[0]
  act_ranks, w_ranks = _ranks(e1.shape[0]), _ranks(wvec.shape[0])
  clip_act, clip_w = spectra.clip_sweep(net, v0, l, [e1, wvec], [act_ranks, w_ranks], xc, yc)
  ax = _plots().curve(act_ranks, clip_act, label="activation eigenvectors",
                     xlabel="rank k kept", ylabel="test accuracy (%)",
                     title=f"Clipping the input of {label}")
  _plots().curve(w_ranks, clip_w, label="weight eigenvectors", ax=ax)
  ax.axhline(unclipped, color="k", lw=0.8, ls=":", label="unclipped")
  ax.set_xscale("log")
  ax.legend()
  ctx.figure(ax, f"clipping_layer{l + 1}.png")
  return {"activation": {"ranks": act_ranks, "accuracy": clip_act.tolist()},
          "weight": {"ranks": w_ranks, "accuracy": clip_w.tolist()}}


def _cka_step(ctx: _Context, x_test, conv: str, short: list) -> np.ndarray:
  """Layer × layer linear CKA of networks 0 and 1 on the test images."""
  nets = ctx.nets
  with ctx.timed("cka"):
    feats = [evaluate.representations(nets.net, v, x_test, conv=conv, batch_size=ctx.batch)
             for v in nets.variables[:2]]
    cka = np.asarray(similarity.pairwise(feats[0], feats[1], measure="linear_cka"))
  ctx.figure(_plots().heatmap(cka, short, short, xlabel=f"input of layer, {nets.labels[1]}",
                             ylabel=f"input of layer, {nets.labels[0]}",
                             title=f"Linear CKA, {len(x_test)} test images"), "cka.png")
  return cka


def _svr_step(ctx: _Context) -> list[dict]:
  """The SVR's internal dimensions along every chain of weight layers."""
  net = ctx.nets.net
  chains = network.chains_of(network.links_of(ctx.producers))
  svr_chains = [{"layers": [j + 1 for j in g.layers], "names": [net.names[j] for j in g.layers],
                 "internal_dims": [list(d) for d in g.result.internal_dims]}
                for g in svr_report.chain_svrs(ctx.kernels[0], chains, with_pvalues=False)]
  if not svr_chains:
    ctx.notes.append("SVR: no two consecutive weight layers where the second alone reads the"
                     " first's output, so there is no chain for an SVR graph.")
  elif len(chains) > 1:
    ctx.notes.append("SVR: the weight layers do not form one chain (skip connections); the"
                     " SVR is computed along each chain of consecutive layers where only the"
                     " next layer reads a layer's output (a residual network: each block's"
                     " convs).")
  return svr_chains


def _rainbow_step(ctx: _Context, xa, x_test, y_test, samples: int, seed: int,
                  reference: float, streams: bool = False) -> tuple[list, list, list]:
  """S rainbow networks sampled from network 0: their accuracies, their
  alignment r², and the layers sampled."""
  nets, net = ctx.nets, ctx.nets.net
  with ctx.timed("rainbow"):
    links = network.links_of(ctx.producers)
    sampled = rainbow.sampleable(net, links)
    grouped = [j for j in range(len(net) - 1) if links[j] and j not in sampled]
    kept = [j for j in range(len(net) - 1) if not links[j]]
    found = False  # the residual streams, found once for the note and the draw
    if kept and streams:
      found = rainbow.stream_lineages(net, nets.variables[0], xa[:8])
      writers = found.writers
      sampled = sorted({*sampled, *writers})
      ctx.notes.append(
          f"Rainbow: layers {[j + 1 for j in writers]} write into residual streams and are"
          " sampled jointly, one draw per stream channel across its writers (--rainbow-streams);"
          f" layers {[j + 1 for j in sampled]} are sampled. See rainbow_jax.rainbow.")
    elif kept:
      ctx.notes.append(
          f"Rainbow: layers {[j + 1 for j in kept]} write into a skip connection and keep the"
          " reference's neurons (realigned on their inputs; --rainbow-streams samples them"
          f" jointly); layers {[j + 1 for j in sampled]} are sampled. See rainbow_jax.rainbow.")
    if grouped:
      ctx.notes.append(
          f"Rainbow: layers {[j + 1 for j in grouped]} are, or feed, grouped convolutions, whose"
          " kernels cannot hold new or realigned channels across groups: their neurons are"
          " kept.")
    gen = rainbow.generate(jax.random.key(seed), net, nets.variables[0], xa,
                           num_samples=samples, batch_size=ctx.batch,
                           streams=found)
    rb_acc = np.asarray(evaluate.accuracy(net, gen.params, x_test, y_test,
                                          stacked=True)).tolist()
  ctx.figure(_plots().bars([reference] + rb_acc,
                          ["reference"] + [f"sample {i + 1}" for i in range(len(rb_acc))],
                          ylabel="test accuracy (%)", ylim=(0, 100),
                          title=f"Rainbow networks sampled from {nets.labels[0]}"
                                f" (mean {np.mean(rb_acc):.2f} ± {np.std(rb_acc):.2f} %)"),
             "rainbow_accuracy.png")
  print(f"rainbow accuracy over {len(rb_acc)} samples: {np.mean(rb_acc):.2f}"
        f" ± {np.std(rb_acc):.2f} % (reference {reference:.2f} %)", flush=True)
  r2 = np.asarray(gen.r2)  # [S, L − 1], inputs of layers 2…L
  if r2.size:
    idx = np.arange(2, r2.shape[1] + 2)
    ax = _plots().curve(idx, r2.mean(0), label="mean over samples", xlabel="weight layer",
                        ylabel="alignment r²",
                        title="Rainbow networks aligned to the reference, per layer input")
    ax.fill_between(idx, r2.min(0), r2.max(0), alpha=0.3, label="min–max")
    ax.set_xticks(idx)
    ax.legend()
    ctx.figure(ax, "rainbow_r2.png")
  if net.norms:
    ctx.notes.append("Rainbow: the generated networks' BatchNorm statistics were"
                     " re-estimated on the training images after every sampled layer.")
  return rb_acc, np.asarray(gen.r2).tolist(), sampled


def _summary_figure(ctx: _Context, layers: list, short: list) -> None:
  """Learned components of every layer (and at initialisation): the
  per-layer spectra in one figure."""
  idx = np.arange(1, len(layers) + 1)
  ax = _plots().curve(idx, [r["learned_components"] for r in layers], label="trained",
                      xlabel="weight layer", ylabel="eigenvalues above the MP edge",
                      title="Learned components per layer")
  if all("learned_components_at_init" in r for r in layers):
    _plots().curve(idx, [r["learned_components_at_init"] for r in layers],
                   label="at initialisation", ax=ax)
  ax.set_xticks(idx, short, rotation=90 if len(layers) > 8 else 0, fontsize=7)
  ctx.figure(ax, "learned_components.png")


def _training_step(ctx: _Context) -> None:
  """Test accuracy per epoch of the networks trained here."""
  h, nets = ctx.nets.history, ctx.nets
  if h is None or not len(h.test_accuracy):
    return
  ax = None
  for k, label in enumerate(nets.labels):
    ax = _plots().curve(np.arange(1, len(h.test_accuracy) + 1), h.test_accuracy[:, k],
                       label=label, ax=ax, xlabel="epoch", ylabel="test accuracy (%)",
                       title=f"{nets.arch}, {len(nets.labels)} seeds in one program")
  ctx.figure(ax, "training.png")


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
    "learned_components": "weight-covariance eigenvalues above the Marchenko–Pastur edge per"
                          " layer, trained and at initialisation (the noise level)",
    "rainbow_r2": "alignment r² between the reference and the rainbow networks at each"
                  " layer input (mean, and the spread over samples)",
}

INLINE_LAYERS = 6
"""Networks with more weight layers than this get their per-layer figures
on a page of their own (layers.md / layers.html), so the report opens on
the whole-network figures."""


def _layer_of(figure: str) -> int | None:
  """1-based layer of a per-layer figure (``…_layer<n>.png``), else None."""
  import re
  m = re.fullmatch(r".+_layer(\d+)\.png", figure)
  return int(m.group(1)) if m else None


def _figure_sections(figures: list, fmt: str, esc=str) -> list:
  """The figures with a caption each: the whole network's first, then the
  per-layer ones under a heading per layer."""
  whole = [f for f in figures if _layer_of(f) is None]
  out, layer = ([], None) if not whole else (
      (["## Whole network", ""] if fmt == "md" else ["<h2>Whole network</h2>"]), None)
  for f in whole + [f for f in figures if _layer_of(f) is not None]:
    n = _layer_of(f)
    stem = f.removesuffix(".png") if n is None else f.rsplit("_layer", 1)[0]
    if n is not None and n != layer:
      layer = n
      out += [f"## Layer {n}", ""] if fmt == "md" else [f"<h2>Layer {n}</h2>"]
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
  stages = [(name, t[f"{key}_seconds"], t.get(f"{key}_compile_seconds"))
            for name, key in (("training", "train"), ("moments", "moments"),
                              ("clipping", "clipping"), ("CKA", "cka"), ("rainbow", "rainbow"))
            if f"{key}_seconds" in t]
  intro.append("Seconds per stage, of which XLA compilation: " + "; ".join(
      f"{name} {sec:.1f}" + ("" if comp is None else f" ({comp:.1f})")
      for name, sec, comp in stages) + ".")
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
  figures = results["figures"]
  inline = len(results["layers"]) <= INLINE_LAYERS
  shown = figures if inline else [f for f in figures if _layer_of(f) is None]
  md += _figure_sections(shown, "md")
  if not inline:
    md += [f"Per-layer figures (spectra, stability, clipping of each of the"
           f" {len(results['layers'])} weight layers): [layers.md](layers.md)."]
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
  html += _figure_sections(shown, "html", esc)
  if not inline:
    html += ["<p><a href='layers.html'>Per-layer figures</a> (spectra, stability, clipping"
             f" of each of the {len(results['layers'])} weight layers).</p>"]
  with open(html_path, "w") as f:
    f.write("\n".join(html))
  if not inline:
    per_layer = [f for f in figures if _layer_of(f) is not None]
    base = os.path.dirname(md_path)
    with open(os.path.join(base, "layers.md"), "w") as f:
      f.write("\n".join([f"# {title}: per layer", "", "[Back to the report](report.md)",
                         ""] + _figure_sections(per_layer, "md")))
    with open(os.path.join(base, "layers.html"), "w") as f:
      f.write("\n".join(html[:3] + [f"<h1>{esc(title)}: per layer</h1>",
                                     "<p><a href='report.html'>Back to the report</a></p>"]
                        + _figure_sections(per_layer, "html", esc)))


def add_parser(sub) -> argparse.ArgumentParser:
  """The ``analyze`` subcommand's arguments."""
  c = sub.add_parser("analyze", formatter_class=_common.DEFAULTS, help="the tutorial end to end: train, spectra, clipping,"
                                       " alignment, stability, rainbow samples; a report")
  c.add_argument("--dataset", default="auto",
                 help="fashion_mnist | mnist | cifar10 | digits | auto (Fashion-MNIST"
                      " when installed, else digits)")
  c.add_argument("--data-dir", default=None, help="directory of IDX files")
  c.add_argument("--arch", default="mlp", choices=_common.ARCHS)
  c.add_argument("--widths", type=int, nargs="+", default=None,
                 help="hidden widths (mlp), conv channels (cnn) or learned 1×1 mixing"
                      " widths (scattering: fixed Morlet wavelets + learned channel"
                      " weights)")
  c.add_argument("--width", type=float, default=1.0,
                 help="resnet20 channel multiplier (16·w, 32·w, 64·w)")
  c.add_argument("--model", default=None, metavar="FILE.py:FACTORY",
                 help="analyse your own linen model: FACTORY() returns the module")
  c.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                 help="trained variables of --model (orbax directory, e.g. from"
                      " `rainbow-jax train --checkpoint-dir`, or a flax .msgpack file),"
                      " one network or K stacked seeds; repeat for more")
  c.add_argument("--init", default=None,
                 help="the initialiser of --model for the Marchenko–Pastur law:"
                      " flax (default) | torch | a variance")
  _common.optimizer_args(c)
  c.add_argument("--clip-layers", type=int, nargs="+", default=None,
                 help="layers (1-based) with clipping curves (default: all up to 6 weight"
                      " layers, else first, middle, last)")
  c.add_argument("--clip-samples", type=int, default=0,
                 help="test images of the clipping sweeps (0: all)")
  c.add_argument("--conv", choices=tuple(evaluate.CONV_TEXT), default="mean",
                 help="conv inputs (and token sequences) of the CKA averaged over positions,"
                      " flattened per image, or (cls) a sequence's first token")
  c.add_argument("--cka-samples", type=int, default=2000,
                 help="test images of the layer × layer CKA")
  c.add_argument("--align-samples", type=int, default=0,
                 help="training images of the rainbow alignments (0: all)")
  c.add_argument("--seeds", type=int, default=2,
                 help="seeds trained (≥ 2; the first two compared)")
  c.add_argument("--rainbow-samples", type=int, default=8,
                 help="rainbow networks sampled (0: none)")
  c.add_argument("--rainbow-streams", action="store_true",
                 help="also sample the layers that write into residual streams (a ResNet's"
                      " stem and blocks' last convs), jointly per stream channel")
  c.add_argument("--epochs", type=int, default=5,
                 help="epochs to train the seeds first (0: analyse at init)")
  c.add_argument("--batch", type=int, default=1000,
                 help="batch of the moments and alignment passes (memory only)")
  c.add_argument("--max-samples", type=int, default=0, help="training images used; 0: all")
  c.add_argument("--seed", type=int, default=0, help="first seed")
  c.add_argument("--out", default="reports/analyze")
  c.set_defaults(run=command)
  return c


def command(args) -> dict:
  """Trains K seeds (or reads a user's model and checkpoints), then every
  analysis that applies; writes results.json, report.md/html, figures."""

  from rainbow_jax import models, network, train

  name = _common.pick_dataset(args.dataset)
  ds = _common.load_data(name, args.data_dir)
  print(f"dataset {name}: {ds.x_train.shape[0]} train images {ds.x_train.shape[1:]}"
        f" from {ds.source}", flush=True)
  x = ds.x_train[: args.max_samples] if args.max_samples else ds.x_train
  y = ds.y_train[: len(x)]
  timings = {}
  extra = {"dataset": name, "source": ds.source, "samples": int(len(x))}
  if args.model:
    nets = _common.user_networks(args.model, args.checkpoint, x,
                                 init=_common.init_law(args), seed=args.seed)
  else:
    if args.checkpoint:
      raise ValueError("--checkpoint needs --model FILE.py:FACTORY.")
    if args.seeds < 2:
      raise ValueError("analyze compares seeds: --seeds must be at least 2.")
    model = models.make(args.arch, ds.x_train.shape[1:], ds.num_classes,
                        widths=args.widths, init="torch", width=args.width)
    seeds = list(range(args.seed, args.seed + args.seeds))
    tx, opt = _common.optimizer(args, len(x))
    t0, c0 = time.perf_counter(), _common.compile_seconds()
    start = train.init(model, tx, seeds, x.shape[1:], x.dtype)
    init_vars = train.select(start.variables, 0)
    state, hist = train.fit(model, x, y, ds.x_test, ds.y_test, seeds=seeds,
                            epochs=args.epochs, tx=tx, state=start)
    timings["train_seconds"] = time.perf_counter() - t0
    timings["train_compile_seconds"] = _common.compile_seconds() - c0
    variables = [train.select(state.variables, k) for k in range(len(seeds))]
    net = network.from_linen(model, variables[0], x[:2])
    resnet = args.arch == "resnet20"
    law = _common.arch_law(args.arch)
    if args.arch == "vit":
      extra["vit"] = {k: int(getattr(model, k)) for k in ("patch", "width", "depth", "heads")}
    elif not resnet:
      extra["widths"] = [int(w) for w in (model.dims[1:-1] if args.arch == "mlp" else
                         model.channels[1:] if args.arch == "cnn" else model.channels)]
    shape = ([int(model.dims[0])] + extra["widths"] + [int(model.dims[-1])]
             if args.arch == "mlp" else extra.get("widths"))
    if args.arch == "vit":
      arch_text = ", ".join(f"{k} {v}" for k, v in extra["vit"].items())
    elif resnet:
      arch_text = f"width ×{args.width}"
    else:
      arch_text = f"{'dims' if args.arch == 'mlp' else 'channels'} {shape}"
    init_text = {"resnet20": "He", "vit": "Flax-default"}.get(args.arch, "PyTorch-default")
    desc = (f"{args.arch.upper()} {arch_text}, seeds {seeds}, {init_text} init, trained"
              f" {args.epochs} epoch(s) with {opt}, batch 128, each its own data order")
    nets = Networks(net, variables, [f"seed {s}" for s in seeds], init_vars, law,
                            args.arch.upper(), desc, hist)
    extra["seeds"] = seeds
    extra["epochs"] = args.epochs
  results = run(
      nets, x, ds.x_test, ds.y_test, args.out, samples=args.rainbow_samples, batch=args.batch,
      clip_layers=args.clip_layers, clip_samples=args.clip_samples,
      cka_samples=args.cka_samples, conv=args.conv, align_samples=args.align_samples, seed=args.seed,
      streams=args.rainbow_streams, timings=timings, extra=extra)
  return results


__all__ = ["Networks", "add_parser", "command", "run", "write_report"]
