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
  ax.set_xticks(x, labels)
  ax.set_ylim(*ylim)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  return ax


def curve(x, y, *, label: str = "", xlabel: str = "", ylabel: str = "",
          title: str = "", ax=None):
  """One labelled line (call again with the returned `ax` to add more)."""
  ax = _axes(ax)
  ax.plot(x, y, marker="o", label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  if label:
    ax.legend()
  return ax


def save(ax_or_fig, path: str) -> str:
  """Saves the figure of an Axes (or a Figure) as PNG and closes it."""
  fig = getattr(ax_or_fig, "figure", ax_or_fig)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  _plt().close(fig)
  return path


__all__ = ["spectrum", "stability", "bars", "curve", "save"]
