"""The table of similarity measures: one row per measure, read by
`pairwise` (the rows that stream), ``rainbow-jax compare`` and its command
line. A new measure is its function in one file of this package and one row
here (plus, to stream, its per-layer and per-pair steps in ``_pairwise``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax

from rainbow_jax.similarity import neighbors, rsa
from rainbow_jax.similarity._cca import cca, pwcca, svcca
from rainbow_jax.similarity._cka import linear_cka
from rainbow_jax.similarity._procrustes import procrustes_distance

Array = jax.Array


class Measure(NamedTuple):
  """One row of `TABLE`.

  Attributes:
    fn: ``fn(x [n, d_x], y [n, d_y], **options) -> []`` on in-memory
      representations of the same n inputs, jittable.
    similarity: True for a similarity in [0, 1] (1: the same
      representation), False for a distance (0: the same).
    streams: computed from covariances as well (`pairwise`,
      `pairwise_moments`), so it runs on data of any size.
    options: keyword options of `fn` that callers may set (e.g. ``k``).
    about: one line for reports and ``--help``.
  """

  fn: Callable[..., Array]
  similarity: bool
  streams: bool
  options: tuple = ()
  about: str = ""


TABLE = {
    "cca": Measure(lambda x, y: cca(x, y).mean, True, True, (),
                   "mean canonical correlation (google/svcca's mean, threshold 0.98)"),
    "svcca": Measure(lambda x, y: svcca(x, y).mean, True, True, (),
                     "CCA of the directions holding 99 % of each side's variance"),
    "pwcca": Measure(lambda x, y: pwcca(x, y).value, True, True, (),
                     "projection-weighted CCA (Morcos et al. 2018, google/svcca's number)"),
    "linear_cka": Measure(linear_cka, True, True, (), "linear CKA (Kornblith et al. 2019)"),
    "procrustes_distance": Measure(procrustes_distance, False, True, (),
                                   "orthogonal Procrustes distance, in [0, 2]"),
    "mutual_knn": Measure(neighbors.mutual_knn, True, False, ("k",),
                          "mutual k-nearest-neighbour alignment (Huh et al. 2024)"),
    "rsa": Measure(functools.partial(rsa.compare, method="corr", rdm1="correlation"), True,
                   False, (), "Pearson correlation of correlation-distance RDMs (rsatoolbox)"),
}
"""Every measure by name (`Measure`)."""

MEASURES = tuple(name for name, m in TABLE.items() if m.streams)
"""Measures `pairwise` knows (the rows of `TABLE` that stream). All but
``procrustes_distance`` are similarities."""
