"""`rainbow-jax spectra`: per weight layer, the Marchenko–Pastur reading
(learned components of C = WᵀW/n above the edge of the layer's
initialisation) beside WeightWatcher's heavy-tail reading (power-law α of
the empirical spectral density, x_min, KS distance, α-weighted, correlation
traps), as a table and a figure per layer."""

from __future__ import annotations

import argparse
import os
from typing import Any

import jax
import numpy as np

from rainbow_jax import spectra
from rainbow_jax.commands import _common


MIN_TAIL = 10
"""Fewer tail eigenvalues than this, and a power-law fit is flagged."""
MAX_KS = 0.15
"""A KS distance above this, and a power-law fit is flagged (the fitted law
does not describe the tail)."""


def fit_warning(num_tail: int, ks_distance: float) -> str | None:
  """Why a power-law fit should not be read, or None."""
  why = []
  if num_tail < MIN_TAIL:
    why.append(f"only {num_tail} eigenvalues in the tail (< {MIN_TAIL})")
  if ks_distance > MAX_KS:
    why.append(f"KS distance {ks_distance:.2f} > {MAX_KS}: the law does not fit the tail")
  return "; ".join(why) or None


def layer_rows(net: Any, variables: Any, init: Any, *, seed: int = 0
               ) -> tuple[list[dict], list[tuple[Any, Any]]]:
  """One dict per weight layer of `net` (a `rainbow_jax.network.Network`)
  with its variables: shape, Marchenko–Pastur edge and learned components
  (`init` as `spectra.layer_law` takes it), power-law fit of its ESD and
  correlation traps; and per layer ``(esd, fit)`` (fit None when the ESD
  has fewer than 2 eigenvalues above WeightWatcher's threshold), what
  `write` plots."""
  return kernel_rows(net.names, net.kinds, net.kernels(variables), init, seed=seed)


def kernel_rows(names, kinds, kernels, init: Any, *, seed: int = 0
                ) -> tuple[list[dict], list[tuple[Any, Any]]]:
  """`layer_rows` of canonical kernels with their names and kinds (a
  `rainbow_jax.network.TorchWeights`' fields, or a Network's); `init` is
  one initialiser or one per layer."""
  rows, fits = [], []
  inits = list(init) if isinstance(init, (list, tuple)) else [init] * len(kernels)
  for j, (name, kind, kernel) in enumerate(zip(names, kinds, kernels)):
    ev, _ = spectra.weight_spectrum(kernel)
    law = spectra.layer_law(kernel, inits[j])
    esd = spectra.esd(kernel)
    row = {"layer": j + 1, "name": name, "kind": kind, "kernel_shape": list(kernel.shape),
           "mp_upper_edge": law.upper,
           "learned_components": int(spectra.learned_components(ev, law)),
           "num_eigenvalues": int(esd.shape[0])}
    fit = None
    if int(np.sum(np.asarray(esd) > 1e-5)) >= 2:
      fit = spectra.power_law(esd)
      traps, _, _ = spectra.correlation_traps(jax.random.fold_in(jax.random.key(seed), j),
                                              kernel)
      row.update(alpha=float(fit.alpha), alpha_sigma=float(fit.sigma), xmin=float(fit.xmin),
                 ks_distance=float(fit.ks_distance), num_tail=int(fit.num_tail),
                 alpha_weighted=float(fit.alpha_weighted), correlation_traps=int(traps),
                 fit_warning=fit_warning(int(fit.num_tail), float(fit.ks_distance)))
    rows.append(row)
    fits.append((esd, fit))
  return rows, fits


def write(rows: list[dict], fits: list[tuple[Any, Any]], out: str, *, title: str,
          extra: dict | None = None) -> dict:
  """Writes ``results.json``, ``report.md`` and one PNG per layer with a
  fit to `out` (`rows` and `fits` from `layer_rows`)."""
  from rainbow_jax import plots
  os.makedirs(out, exist_ok=True)
  for row, (esd, fit) in zip(rows, fits):
    if fit is not None:
      ax = plots.power_law(esd, fit, title=f"layer {row['layer']} ({row['name']})")
      row["figure"] = os.path.basename(
          plots.save(ax, os.path.join(out, f"esd_layer{row['layer']}.png")))
  results = {"command": "spectra", "title": title, "layers": rows, **(extra or {})}
  md = [f"# {title}", "",
        "Per weight layer: eigenvalues of C = WᵀW/n above the Marchenko–Pastur edge of the"
        " layer's initialisation (learned components), and WeightWatcher's power-law fit of"
        " the empirical spectral density (α ± σ, x_min chosen by the KS distance D;"
        " α-weighted = α·log₁₀ λ_max; correlation traps of the element-wise shuffled"
        " weights). α ≲ 2: very heavy tails; 2–6: the range WeightWatcher calls well"
        " trained; ≳ 6: close to random.", "",
        "| layer | name | kind | kernel | learned components | α ± σ | x_min | D |"
        " α-weighted | traps |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    mark = " †" if r.get("fit_warning") else ""
    fit = (f"{r['alpha']:.2f} ± {r['alpha_sigma']:.2f}{mark} | {r['xmin']:.3g} |"
           f" {r['ks_distance']:.3f} | {r['alpha_weighted']:.2f} | {r['correlation_traps']}"
           if "alpha" in r else "— | — | — | — | —")
    md.append(f"| {r['layer']} | {r['name']} | {r.get('kind', '')} | {r['kernel_shape']} |"
              f" {r['learned_components']} | {fit} |")
  md.append("")
  flagged = [r for r in rows if r.get("fit_warning")]
  if flagged:
    md += ["† Not to be read as a heavy-tail measurement:"]
    md += [f"- layer {r['layer']} ({r['name']}): {r['fit_warning']}." for r in flagged]
    md.append("")
  md += [f"![layer {r['layer']}]({r['figure']})" for r in rows if "figure" in r]
  _common.save_results(out, results, md)
  return results


def _torch_weights(path: str):
  """`network.from_torch` of a ``torch.save`` file (a module or a state dict)."""
  from rainbow_jax import network
  try:
    import torch
  except ImportError:
    raise ValueError("--torch needs PyTorch: pip install torch.") from None
  if not os.path.exists(path):
    raise ValueError(f"--torch {path}: no such file.")
  obj = torch.load(path, map_location="cpu", weights_only=False)
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]  # a training checkpoint's usual layout
  return network.from_torch(obj)


def _torch_inits(tw) -> list:
  """PyTorch's default initialiser of each layer, for its Marchenko–Pastur
  law: ``nn.Linear`` / ``nn.Conv`` uniform ±1/√fan_in ('torch'),
  ``nn.MultiheadAttention``'s packed ``in_proj_weight`` Xavier-uniform over
  ``[3·d, d_model]`` (variance 2 / (d_model + 3·d)), ``nn.Embedding``
  N(0, 1)."""
  out = []
  for name, kind, k in zip(tw.names, tw.kinds, tw.kernels):
    if name.endswith(("in_proj_weight[q]", "in_proj_weight[k]", "in_proj_weight[v]")):
      out.append(2.0 / (k.shape[0] + 3 * k.shape[1]))
    elif kind == "embedding":
      out.append(1.0)
    else:
      out.append("torch")
  return out


def add_parser(sub) -> argparse.ArgumentParser:
  """The ``spectra`` subcommand's arguments."""
  sp = _common.network_arguments(
      sub, "spectra", help="per-layer Marchenko–Pastur and power-law (WeightWatcher) report"
      " of a trained network", dataset_help="for the input shape (and training)",
      checkpoint_help="its trained variables (orbax directory or .msgpack); the first"
                      " network is reported", init=True)
  sp.add_argument("--torch", default=None, metavar="FILE",
                  help="a PyTorch checkpoint instead (torch.save of a module or a state dict:"
                       " a transformer's attention, embeddings and GPT-2 Conv1D are read);"
                       " without --init each layer's law is PyTorch's default initialiser")
  sp.set_defaults(run=command)
  return sp


def command(args) -> dict:
  """Per-layer Marchenko–Pastur and power-law report of a user's trained
  network (--model/--checkpoint, the first one) or of one seed of --arch
  trained here."""
  if args.torch:
    tw = _torch_weights(args.torch)
    law = _common.init_law(args) if args.init else _torch_inits(tw)
    rows, fits = kernel_rows(tw.names, tw.kinds, tw.kernels, law, seed=args.seed)
    what = f"PyTorch weights {os.path.basename(args.torch)}"
    results = write(rows, fits, args.out, title=f"rainbow_jax spectra — {what}",
                    extra={"networks": what, "dropped": list(tw.dropped)})
  else:
    nets = _common.networks(args)
    net, variables, what, name = nets.net, nets.variables[0], nets.what, nets.dataset
    rows, fits = layer_rows(net, variables, nets.law, seed=args.seed)
    results = write(rows, fits, args.out, title=f"rainbow_jax spectra — {what}",
                    extra={"dataset": name, "networks": what})
  for r in rows:
    if r.get("fit_warning"):
      print(f"warning: layer {r['layer']} {r['name']}: power-law fit unreliable,"
            f" {r['fit_warning']}")
    print(f"layer {r['layer']} {r['name']} {r['kernel_shape']}: learned components"
          f" {r['learned_components']}"
          + (f", α {r['alpha']:.2f} ± {r['alpha_sigma']:.2f} (x_min {r['xmin']:.3g},"
             f" D {r['ks_distance']:.3f}), traps {r['correlation_traps']}" if "alpha" in r
             else ""))
  print(f"wrote {args.out}/report.md, results.json and {len(rows)} figure(s)")
  return results


__all__ = ["MAX_KS", "MIN_TAIL", "add_parser", "command", "fit_warning", "kernel_rows",
           "layer_rows", "write"]
