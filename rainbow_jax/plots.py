"""Matplotlib figures of the analyses (optional dependency: ``[plots]``).

Every function draws on a given `matplotlib.axes.Axes` (or makes one) and
returns it, so figures compose in notebooks and reports alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _plt():
  try:
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg",) and not _interactive():
      matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError("plots need matplotlib: pip install 'rainbow-jax[plots]'") from e
  return plt


def _interactive() -> bool:
  import sys
  return "ipykernel" in sys.modules


def _axes(ax):
  if ax is None:
    _, ax = _plt().subplots(figsize=(5, 4))
  return ax


def spectrum(spectra: Sequence[np.ndarray], labels: Sequence[str], *,
             title: str = "", ax=None, logx: bool = True):
  """Eigenvalues against rank on log axes, one line per spectrum."""
  ax = _axes(ax)
  styles = ["solid", "dashed", "dotted", "dashdot"]
  for k, (s, label) in enumerate(zip(spectra, labels)):
    s = np.asarray(s)
    s = s[s > 0]
    ax.plot(1 + np.arange(len(s)), s, linestyle=styles[k % 4], label=label)
  ax.set_yscale("log")
  if logx:
    ax.set_xscale("log")
  ax.set_xlabel("rank")
  ax.set_ylabel("eigenvalue")
  ax.set_title(title)
  ax.legend(loc="upper right")
  return ax


def stability(matrix: np.ndarray, *, top: int = 50, title: str = "", ax=None):
  """Heatmap of an eigenvector stability matrix |⟨A u_i, v_j⟩| (top ranks)."""
  ax = _axes(ax)
  m = np.asarray(matrix)[:top, :top]
  im = ax.imshow(m.T, cmap="cividis", vmin=0, vmax=1, origin="upper")
  ax.figure.colorbar(im, ax=ax, shrink=0.75)
  ax.set_xlabel("rank (network 1)")
  ax.set_ylabel("rank (network 2)")
  ax.set_title(title)
  return ax


def bars(values: Sequence[float], labels: Sequence[str], *, ylabel: str = "",
         title: str = "", ax=None, ylim=(0, 1)):
  """Bar chart with the value printed on each bar."""
  ax = _axes(ax)
  x = np.arange(len(values))
  ax.bar(x, values, color="tab:blue")
  for xi, v in zip(x, values):
    ax.text(xi, v, f"{v:.3f}", ha="center", va="bottom")
  ax.set_xticks(x, labels, rotation=90 if len(labels) > 8 else 0)
  ax.set_ylim(*ylim)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  return ax


def curve(x, y, *, label: str = "", xlabel: str = "", ylabel: str = "",
          title: str = "", ax=None):
  """One labelled line (call again with the returned `ax` to add more)."""
  ax = _axes(ax)
  ax.plot(x, y, marker="o", label=label)
  # A second call on the same axes keeps the first call's labels and title.
  for text, setter in ((xlabel, ax.set_xlabel), (ylabel, ax.set_ylabel), (title, ax.set_title)):
    if text:
      setter(text)
  if label:
    ax.legend()
  return ax


def weight_spectrum(trained, init, law, *, title: str = ""):
  """Two panels: the weight-covariance eigenvalues against rank after
  training and at initialisation with the Marchenko–Pastur upper edge, and
  the histogram at initialisation against the Marchenko–Pastur density."""
  fig, (a1, a2) = _plt().subplots(1, 2, figsize=(10, 4))
  for ev, label, ls in ((trained, "trained", "solid"), (init, "initialisation", "dashed")):
    ev = np.asarray(ev)
    a1.plot(1 + np.arange(len(ev)), ev, linestyle=ls, label=label)
  a1.axhline(law.upper, color="k", lw=0.8, ls=":", label="Marchenko–Pastur edge")
  a1.set_yscale("log")
  a1.set_xlabel("rank")
  a1.set_ylabel("eigenvalue")
  a1.set_title(title)
  a1.legend(fontsize=8)
  ev = np.asarray(init, np.float64)
  a2.hist(ev[ev > 1e-12 * ev.max()], bins=40, density=True, alpha=0.6, label="initialisation")
  grid = np.linspace(law.lower, law.upper, 400)
  a2.plot(grid, law.pdf(grid) / min(1.0, 1.0 / law.ratio), "k", lw=1, label="Marchenko–Pastur")
  a2.set_xlabel("eigenvalue")
  a2.set_title("init spectrum vs Marchenko–Pastur")
  a2.legend(fontsize=8)
  return fig


def power_law(eigenvalues, fit, *, title: str = "", ax=None):
  """The empirical spectral density on log–log axes (log-spaced bins) with
  the fitted power law from its x_min (`rainbow_jax.spectra.power_law`)."""
  ax = _axes(ax)
  ev = np.asarray(eigenvalues, np.float64)
  ev = ev[ev > 0]
  bins = np.logspace(np.log10(ev.min()), np.log10(ev.max()), 40)
  dens, edges = np.histogram(ev, bins=bins, density=True)
  mid = np.sqrt(edges[1:] * edges[:-1])
  ax.loglog(mid[dens > 0], dens[dens > 0], "o", ms=3, label="ESD")
  alpha, xmin = float(fit.alpha), float(fit.xmin)
  tail = ev >= xmin
  grid = np.logspace(np.log10(xmin), np.log10(ev.max()), 50)
  # The tail's share of the mass times the normalised Pareto density.
  pdf = tail.mean() * (alpha - 1) / xmin * (grid / xmin) ** (-alpha)
  ax.loglog(grid, pdf, "r-", label=f"α = {alpha:.2f} ± {float(fit.sigma):.2f}")
  ax.axvline(xmin, color="r", ls=":", lw=0.8, label="x_min")
  ax.set_xlabel("eigenvalue of WᵀW")
  ax.set_ylabel("density")
  ax.set_title(title)
  ax.legend(fontsize=8)
  return ax


def save(ax_or_fig, path: str) -> str:
  """Saves the figure of an Axes (or a Figure) as PNG and closes it."""
  fig = getattr(ax_or_fig, "figure", ax_or_fig)
  fig.tight_layout()
  # "tight" grows the canvas to every label and title: nothing is cut off.
  fig.savefig(path, dpi=110, bbox_inches="tight")
  _plt().close(fig)
  return path


def svr_graph(result, *, title: str = "", ax=None, max_edges: int = 20000):
  """Figure-2 style SVR: x = layer, y = singular value (log), significant
  edges shaded by weight, vertices coloured by intensity.

  Args:
    result: `rainbow_jax.svr.SVR`.
    max_edges: draw at most this many edges, heaviest first.
  """
  from matplotlib.collections import LineCollection

  ax = _axes(ax)
  sv = [np.asarray(sp.s, np.float64) for sp in result.spectra]
  floor = min(float(s[s > 0].min()) for s in sv if np.any(s > 0))
  ys = [np.maximum(s, floor) for s in sv]
  segs, weights = [], []
  for i, (a, m) in enumerate(zip(result.adjacency, result.significant)):
    tgt, src = np.nonzero(np.asarray(m))
    w = np.asarray(a)[tgt, src]
    for t, s_, wt in zip(tgt, src, w):
      segs.append([(i, ys[i][s_]), (i + 1, ys[i + 1][t])])
      weights.append(wt)
  if segs:
    order = np.argsort(weights)[-max_edges:]
    w = np.asarray(weights)[order]
    lc = LineCollection([segs[k] for k in order], cmap="Greys", linewidths=0.6,
                        norm=_plt().Normalize(0, max(float(w.max()), 1e-12)))
    lc.set_array(w)
    ax.add_collection(lc)
    ax.figure.colorbar(lc, ax=ax, shrink=0.75, label="edge weight")
  for i, y in enumerate(ys):
    c = np.zeros_like(y)
    if i < len(result.intensity):
      c = np.asarray(result.intensity[i])[: len(y)]
    ax.scatter(np.full(len(y), i), y, c=c, cmap="Blues", vmin=0, vmax=1, s=12,
               edgecolors="k", linewidths=0.3, zorder=3)
  ax.set_yscale("log")
  ax.set_xticks(range(len(ys)))
  ax.set_xlabel("layer")
  ax.set_ylabel("singular value")
  ax.set_title(title)
  return ax


def heatmap(matrix, row_labels: Sequence[str], col_labels: Sequence[str], *,
            title: str = "", xlabel: str = "", ylabel: str = "", ax=None, vmin=0.0,
            vmax=1.0):
  """A labelled matrix (e.g. layer × layer similarity of two networks)."""
  m = np.asarray(matrix)
  if ax is None:
    size = min(12.0, 4.5 + 0.35 * max(m.shape))
    _, ax = _plt().subplots(figsize=(size, size * 0.85))
  im = ax.imshow(m, cmap="viridis", vmin=vmin, vmax=vmax, origin="upper")
  ax.figure.colorbar(im, ax=ax, shrink=0.75)
  ax.set_xticks(np.arange(m.shape[1]), col_labels, rotation=90, fontsize=7)
  ax.set_yticks(np.arange(m.shape[0]), row_labels, fontsize=7)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  return ax


def adjacency(matrix, *, title: str = "", ax=None, dims=None):
  """Heatmap of an SVR adjacency matrix (rows: next layer's spectral neurons,
  columns: previous layer's), with the internal dimensions marked."""
  ax = _axes(ax)
  im = ax.imshow(np.asarray(matrix), cmap="magma", origin="upper")
  ax.figure.colorbar(im, ax=ax, shrink=0.75)
  if dims is not None:
    d_out, d_in = dims
    ax.axhline(d_out - 0.5, color="c", lw=1)
    ax.axvline(d_in - 0.5, color="c", lw=1)
  ax.set_xlabel("spectral neuron, layer i")
  ax.set_ylabel("spectral neuron, layer i+1")
  ax.set_title(title)
  return ax


def effective_filters(filters, *, top: int = 8, title: str = "", ax=None):
  """The K×K effective filters between the top `top` spectral neurons of two
  consecutive conv layers (`rainbow_jax.svr.effective_filters`): row n is
  the next layer's spectral neuron, column m the previous layer's; one
  symmetric colour scale (red +, blue −)."""
  f = np.asarray(filters, np.float64)
  if f.ndim != 4:
    raise ValueError(f"filters must be [M_next, M_prev, K, K], got shape {f.shape}.")
  f = f[:top, :top]
  n, m, k1, k2 = f.shape
  mosaic = np.full((n * (k1 + 1) - 1, m * (k2 + 1) - 1), np.nan)
  for i in range(n):
    for j in range(m):
      mosaic[i * (k1 + 1):i * (k1 + 1) + k1, j * (k2 + 1):j * (k2 + 1) + k2] = f[i, j]
  if ax is None:
    size = min(10.0, 2.0 + 0.9 * max(n, m))
    _, ax = _plt().subplots(figsize=(size, size * n / max(m, 1)))
  lim = max(float(np.nanmax(np.abs(mosaic))), 1e-12)
  im = ax.imshow(mosaic, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
  ax.figure.colorbar(im, ax=ax, shrink=0.75)
  ax.set_xticks([j * (k2 + 1) + (k2 - 1) / 2 for j in range(m)], [str(j) for j in range(m)])
  ax.set_yticks([i * (k1 + 1) + (k1 - 1) / 2 for i in range(n)], [str(i) for i in range(n)])
  ax.set_xlabel("spectral neuron, layer i")
  ax.set_ylabel("spectral neuron, layer i+1")
  ax.set_title(title)
  return ax


__all__ = ["adjacency", "bars", "curve", "effective_filters", "heatmap", "save", "spectrum",
           "stability", "svr_graph", "weight_spectrum"]
