"""`rainbow-jax svr`: the Singular Value Representation of a network's weights,
as a report, a figure and an interactive HTML graph.

The SVR (Meller & Berkouk, 2023) draws every layer's spectral neurons (its
singular vectors) as vertices and links spectral neurons of consecutive
layers by how strongly one reads the other; edges whose weight is unlikely
under random weights are significant. The HTML graph is self-contained SVG:
hovering a vertex shows its singular value, an edge its weight and p-value
(no JavaScript, no network access). Per chain the report also gives the
graph's path metric and each adjacency's entropy (the reference code's
summaries), and for each pair of conv layers a figure of the effective K×K
filters joining their top spectral neurons. ``method='cosvr'`` draws the
co-SVR instead (`rainbow_jax.svr`).
"""

from __future__ import annotations

import html
import argparse
import os
from typing import Any, NamedTuple, Sequence

import numpy as np

from rainbow_jax import svr
from rainbow_jax.commands import _common


class Chain(NamedTuple):
  """One chain's SVR: `layers` (indices into the network's layers),
  `result` (`svr.SVR`), `shapes` (native weight shapes, for the filters)."""

  layers: list
  result: Any
  shapes: list


def chain_svrs(kernels: Sequence[Any], chains: Sequence[Sequence[int]],
               **svr_kwargs) -> list[Chain]:
  """`svr.svr` (keywords passed on) of the Flax `kernels` along each chain of
  layer indices, chains of one layer left out."""
  out = []
  for chain in chains:
    if len(chain) >= 2:
      ws = svr.from_flax([kernels[j] for j in chain])
      out.append(Chain(list(chain), svr.svr(ws, **svr_kwargs), [tuple(w.shape) for w in ws]))
  return out


def chain_graphs(net: Any, variables: Any, x: Any, *, alpha: float = 0.15,
                 fdr: float | None = None, method: str = "svr") -> list[Chain]:
  """The SVR (or co-SVR) along each chain of consecutive weight layers of
  `net` (a `rainbow_jax.network.Network`; a residual network has one per
  block), chains of one layer left out."""
  return chain_svrs(net.kernels(variables), net.chains(variables, x), alpha=alpha, fdr=fdr,
                    method=method)


def _filter_edges(chain: Chain) -> list[tuple[int, Any]]:
  """``[(edge index, [M', M, K, K] filters)]`` for every conv → conv edge."""
  res, out = chain.result, []
  for i in range(len(chain.shapes) - 1):
    a, b = chain.shapes[i], chain.shapes[i + 1]
    if len(a) == 4 and len(b) == 4:
      kernel = a[2:] if res.method == "cosvr" else b[2:]
      out.append((i, svr.effective_filters(res.spectra[i], res.spectra[i + 1],
                                           channels=a[0], kernel=kernel)))
  return out


def html_graph(result: Any, names: Sequence[str], *, title: str = "",
               max_vertices: int = 64) -> str:
  """A self-contained HTML page drawing `result` (an `svr.SVR`) as SVG.

  Columns are layers, vertices their spectral neurons in order of singular
  value (the largest at the top; at most `max_vertices` per layer, the rest
  summarised), vertex area ∝ singular value, significant edges drawn with
  opacity ∝ weight. Hover: σ of a vertex; weight and p-value of an edge.
  """
  esc = html.escape
  sv = [np.asarray(sp.s, np.float64) for sp in result.spectra]
  shown = [min(len(s), max_vertices) for s in sv]
  dx, dy, top, left = 220, 14, 60, 80
  width = left * 2 + dx * (len(sv) - 1)
  height = top + dy * max(shown) + 60
  pos = lambda i, k: (left + dx * i, top + dy * k)
  parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
           ' font-family="sans-serif" font-size="11">']
  for i, (a, m) in enumerate(zip(result.adjacency, result.significant)):
    a, m = np.asarray(a), np.asarray(m)
    p = None if result.pvalues[i] is None else np.asarray(result.pvalues[i])
    peak = max(float(a[m].max()) if m.any() else 0.0, 1e-12)
    tgt, src = np.nonzero(m)
    for t, s in zip(tgt, src):
      if s >= shown[i] or t >= shown[i + 1]:
        continue
      (x1, y1), (x2, y2) = pos(i, s), pos(i + 1, t)
      pv = "" if p is None else f", p = {p[t, s]:.2e}"
      parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#333"'
                   f' stroke-width="1.2" stroke-opacity="{0.15 + 0.85 * a[t, s] / peak:.3f}">'
                   f'<title>{esc(names[i])} #{s} → {esc(names[i + 1])} #{t}: weight'
                   f' {a[t, s]:.4f}{pv}</title></line>')
  for i, s in enumerate(sv):
    smax = max(float(s.max()), 1e-12)
    x0, _ = pos(i, 0)
    dims = "" if i >= len(result.internal_dims) else (
        f" · internal dims → next: {result.internal_dims[i][1]}")
    parts.append(f'<text x="{x0}" y="{top - 30}" text-anchor="middle" font-weight="bold">'
                 f'{esc(names[i])}</text><text x="{x0}" y="{top - 16}" text-anchor="middle">'
                 f'{len(s)} spectral neurons{esc(dims)}</text>')
    for k in range(shown[i]):
      x, y = pos(i, k)
      r = 1.5 + 4.5 * np.sqrt(s[k] / smax)
      parts.append(f'<circle cx="{x}" cy="{y}" r="{r:.2f}" fill="#2b6cb0">'
                   f'<title>{esc(names[i])} spectral neuron #{k}: σ = {s[k]:.4g}</title>'
                   '</circle>')
    if len(s) > shown[i]:
      x, y = pos(i, shown[i])
      parts.append(f'<text x="{x}" y="{y + 4}" text-anchor="middle">… {len(s) - shown[i]}'
                   ' more</text>')
  parts.append("</svg>")
  return (f"<!doctype html><meta charset='utf-8'><title>{esc(title)}</title>"
          f"<h2>{esc(title)}</h2><p>Hover a vertex for its singular value, an edge for its"
          " weight and p-value. Only significant edges are drawn.</p>" + "".join(parts))


def _chance(expected: float | None) -> str:
  return "—" if expected is None else f"{expected:.0f}"


def write(graphs: list[Chain], names: Sequence[str], out: str, *,
          title: str, alpha: float = 0.15, fdr: float | None = None,
          extra: dict | None = None) -> dict:
  """results.json, report.md, and per chain a PNG, an HTML graph and the
  effective filters of its conv → conv edges, in `out`."""
  from rainbow_jax import plots
  os.makedirs(out, exist_ok=True)
  test = (f"Benjamini–Hochberg at false-discovery rate {fdr:g}" if fdr is not None else
          f"p < {alpha:g} under the null law of random weights, edge by edge")
  md = [f"# {title}", "",
        "Per chain of consecutive weight layers: each edge layer's internal dimensions"
        " (d_out, d_in) = the numbers i, j of leading spectral neurons of the next and the"
        " previous layer maximising B_ij − ij/n (B_ij the summed edge weights of that"
        " block, 1/n an edge's mean under random weights: `svr.internal_dimensions`), its"
        f" number of significant edges ({test}) beside the number expected by chance,"
        " and the entropy −Σ a log a of its adjacency; the"
        " chain's path metric sums every input → output path through spectral neurons,"
        " weighted by edges and singular values (unscaled: edges only). Open the HTML"
        " graph to hover vertices and edges.", ""]
  chains = []
  for c, chain in enumerate(graphs):
    layers, res = chain.layers, chain.result
    chain_names = [names[j] for j in layers]
    page = os.path.join(out, f"svr_chain{c}.html")
    with open(page, "w") as f:
      f.write(html_graph(res, chain_names, title=f"{title} — chain {c}"))
    png = plots.save(plots.svr_graph(res, title=" → ".join(chain_names)),
                     os.path.join(out, f"svr_chain{c}.png"))
    entropy = np.asarray(svr.entropy(res), np.float64)
    edge_rows = []
    for i in range(len(layers) - 1):
      edge_rows.append({"from": chain_names[i], "to": chain_names[i + 1],
                        "internal_dims": list(res.internal_dims[i]),
                        "significant_edges": int(np.sum(np.asarray(res.significant[i]))),
                        "edges": int(np.asarray(res.significant[i]).size),
                        "expected_by_chance": (None if fdr is not None else
                                               alpha * int(np.asarray(res.significant[i]).size)),
                        "entropy": float(entropy[i]),
                        "sampled_null": bool(res.sampled[i])})
    filters = []
    for i, f in _filter_edges(chain):
      fig = plots.effective_filters(
          f, title=f"effective filters {chain_names[i]} → {chain_names[i + 1]}")
      filters.append(os.path.basename(plots.save(
          fig, os.path.join(out, f"svr_chain{c}_filters{i}.png"))))
    path = {"path_metric": float(svr.path_metric(res)),
            "path_metric_unscaled": float(svr.path_metric(res, scale=False))}
    chains.append({"layers": [j + 1 for j in layers], "names": chain_names,
                   "method": res.method, "edge_layers": edge_rows, **path,
                   "html": os.path.basename(page), "figure": os.path.basename(png),
                   "filters": filters})
    md += [f"## Chain {c}: {' → '.join(chain_names)}", "",
           f"{'co-SVR' if res.method == 'cosvr' else 'SVR'}; path metric"
           f" {path['path_metric']:.4g} (unscaled {path['path_metric_unscaled']:.4g}).", "",
           "| from | to | internal dims (d_out, d_in) | significant edges | expected by"
           " chance | entropy |",
           "| --- | --- | --- | --- | --- | --- |"]
    md += [f"| {r['from']} | {r['to']} | {tuple(r['internal_dims'])} |"
           f" {r['significant_edges']} of {r['edges']}"
           f"{' (sampled null)' if r['sampled_null'] else ''} |"
           f" {_chance(r['expected_by_chance'])}"
           f" | {r['entropy']:.3f} |"
           for r in edge_rows]
    md += ["", "Significant edges near the number expected by chance say the layer's"
           " spectral neurons connect no more than random weights' do."]
    md += ["", f"![chain {c}]({os.path.basename(png)})",
           f"[interactive graph]({os.path.basename(page)})", ""]
    md += [f"![effective filters]({f})" for f in filters] + ([""] if filters else [])
  results = {"command": "svr", "title": title, "chains": chains, **(extra or {})}
  _common.save_results(out, results, md)
  return results


def add_parser(sub) -> argparse.ArgumentParser:
  """The ``svr`` subcommand's arguments."""
  sv = _common.network_arguments(
      sub, "svr", help="Singular Value Representation graph of a network's weights:"
      " report, figure and interactive HTML", dataset_help="for the input shape (and training)",
      checkpoint_help="trained variables (orbax directory or .msgpack); the first network"
                      " is drawn")
  sv.add_argument("--alpha", type=float, default=0.15,
                  help="an edge is significant when its p-value is below this")
  sv.add_argument("--fdr", type=float, default=None,
                  help="Benjamini–Hochberg at this false-discovery rate instead")
  sv.add_argument("--method", choices=["svr", "cosvr"], default="svr",
                  help="cosvr: conv layers flattened [out·K², in], the graph the gradient sees")
  sv.set_defaults(run=command)
  return sv


def command(args) -> dict:
  """SVR graph of a user's network (--model/--checkpoint, the first network)
  or of one seed of --arch trained here: report, figure, interactive HTML."""
  nets = _common.networks(args)
  net, variables, what, name = nets.net, nets.variables[0], nets.what, nets.dataset
  graphs = chain_graphs(net, variables, nets.data.x_train[:2], alpha=args.alpha,
                                   fdr=args.fdr, method=args.method)
  if not graphs:
    raise ValueError("no two consecutive weight layers form a chain: there is no SVR graph.")
  results = write(graphs, net.names, args.out, title=f"rainbow_jax SVR — {what}",
                             alpha=args.alpha, fdr=args.fdr,
                             extra={"dataset": name, "networks": what, "alpha": args.alpha,
                                    "fdr": args.fdr})
  for chain in results["chains"]:
    for r in chain["edge_layers"]:
      print(f"{r['from']} → {r['to']}: internal dims {tuple(r['internal_dims'])},"
            f" {r['significant_edges']} significant edges of {r['edges']},"
            f" entropy {r['entropy']:.3f}")
    print(f"{' → '.join(chain['names'])}: path metric {chain['path_metric']:.4g}")
  print(f"wrote {args.out}/report.md, results.json and per chain a PNG and an HTML graph")
  return results


__all__ = ["Chain", "add_parser", "chain_graphs", "chain_svrs", "command", "html_graph", "write"]
