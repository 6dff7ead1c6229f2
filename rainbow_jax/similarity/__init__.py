"""Representational similarity: CCA, SVCCA, PWCCA (google/svcca semantics),
CKA (linear, RBF, debiased, minibatch) and the Procrustes distance.

The CCA family and linear CKA work from covariance matrices, so the same
functions serve in-memory activations (`cca`, `pwcca`, `linear_cka`, …) and
streamed statistics of any dataset size (`cca_moments`, `pwcca_moments`,
`linear_cka_moments` on `rainbow_jax.moments`: O(d²) memory, conv layers with
positions as datapoints). `pairwise` computes the whole layer × layer matrix
of a measure between two models in one jitted call, and `null_baseline`
the score of unrelated data of the same shapes. Inputs of this native API are
**datapoints × neurons** (``[n, d]``); `rainbow_jax.compat.svcca` takes the
google/svcca convention (neurons × datapoints) and returns its dict.

Similarities lie in [0, 1] (1: a representation against itself); the
debiased CKA estimators lie in [-1, 1] and are centred at 0 for unrelated
data. Distances (`procrustes_distance`, `cca_distance`) are 0 for identical
representations.

CCA follows `cca_core.get_cca_similarity` of google/svcca step by step:
the centred joint covariance; Σxx, Σyy divided by their largest absolute
entry and Σxy by the square root of both; neurons whose rescaled variance is
below `epsilon` removed; `epsilon` added to the kept diagonals; inverse
square roots from the eigendecomposition of the pseudo-inverse; coefficients
the singular values of Σxx^-½ Σxy Σyy^-½, descending; `mean` the mean of the
first i coefficients, i the first index with sum(s[:i]) / sum(s) ≥
`threshold` (all when there is none), and `sum` their sum.

Differences from the reference, all where it fails:
  * removal is a mask, so shapes stay static under `jit`: ``coefficients`` has
    ``min(d_x, d_y)`` entries, the last ``min(d_x, d_y) − num_coefficients``
    of them exactly 0 (the reference's array is shorter by that much);
  * `cca` whitens the diagonally rescaled covariance (same coefficients,
    float32-accurate for badly scaled neurons), and eigenvalues that rounding
    made slightly negative are dropped like pinv's small ones (the reference
    takes their square root: NaN);
  * all neurons removed gives zero coefficients, as the reference's zero dict;
  * fewer datapoints than neurons is allowed (finite results; the reference
    refuses it) — but CCA is then high by chance: compare with
    `null_baseline`.

PWCCA (`compute_pwcca` of google/svcca, Morcos et al. 2018) is documented at
`pwcca_from_covariance`, with its three differences from the reference.

Numerics: float32 resolves directions whose variance is above roughly
1e-5 of the largest (the coefficients of weaker directions are float32
rounding noise); pass float64 arrays with x64 enabled for finer structure.

Layout (one file per family; this package re-exports their public names):
  ``_cca`` (CCA, SVCCA, PWCCA, `resolution_floor`; real or Hermitian
  covariances), ``_dft`` (`fourier_cca`: CCA per spatial frequency of conv
  maps, google/svcca's ``dft_ccas``), ``_cka`` (linear, RBF,
  debiased, minibatch), ``_procrustes``, ``_pairwise`` (layer × layer
  matrices, `features`), ``_table`` (`TABLE`: every measure by name, what
  `pairwise`, ``rainbow-jax compare`` and the command line read), ``_null``
  (`null_baseline`); the public modules `neighbors` (mutual k-NN, CKNNA), `rsa` (RDMs and their comparison),
  `shape_metrics` (Williams et al.'s generalized shape metrics) and
  `svcca_compat` (google/svcca's API, imported as `rainbow_jax.compat.svcca`).

References:
  Raghu et al., "SVCCA", NeurIPS 2017. Morcos et al., "Insights on
  representational similarity in neural networks with canonical correlation",
  NeurIPS 2018. Kornblith et al., "Similarity of neural network
  representations revisited", ICML 2019. Nguyen et al., "Do wide and deep
  networks learn the same things?", ICLR 2021. Williams et al., "Generalized
  shape metrics on neural representations", NeurIPS 2021.
"""

from rainbow_jax.similarity import neighbors as neighbors
from rainbow_jax.similarity import rsa as rsa
from rainbow_jax.similarity import shape_metrics as shape_metrics
from rainbow_jax.similarity._cca import CCAResult as CCAResult
from rainbow_jax.similarity._cca import PWCCAResult as PWCCAResult
from rainbow_jax.similarity._cca import SIGNS as SIGNS
from rainbow_jax.similarity._cca import cca as cca
from rainbow_jax.similarity._cca import cca_distance as cca_distance
from rainbow_jax.similarity._cca import cca_from_covariance as cca_from_covariance
from rainbow_jax.similarity._cca import cca_moments as cca_moments
from rainbow_jax.similarity._cca import pwcca as pwcca
from rainbow_jax.similarity._cca import pwcca_from_covariance as pwcca_from_covariance
from rainbow_jax.similarity._cca import pwcca_moments as pwcca_moments
from rainbow_jax.similarity._cca import resolution_floor as resolution_floor
from rainbow_jax.similarity._cca import svcca as svcca
from rainbow_jax.similarity._cca import svcca_from_covariance as svcca_from_covariance
from rainbow_jax.similarity._cka import MinibatchCKA as MinibatchCKA
from rainbow_jax.similarity._cka import cka_from_gram as cka_from_gram
from rainbow_jax.similarity._cka import gram_linear as gram_linear
from rainbow_jax.similarity._cka import gram_rbf as gram_rbf
from rainbow_jax.similarity._cka import linear_cka as linear_cka
from rainbow_jax.similarity._cka import linear_cka_debiased as linear_cka_debiased
from rainbow_jax.similarity._cka import linear_cka_from_covariance as linear_cka_from_covariance
from rainbow_jax.similarity._cka import linear_cka_moments as linear_cka_moments
from rainbow_jax.similarity._cka import minibatch_cka as minibatch_cka
from rainbow_jax.similarity._cka import minibatch_cka_init as minibatch_cka_init
from rainbow_jax.similarity._cka import minibatch_cka_update as minibatch_cka_update
from rainbow_jax.similarity._cka import minibatch_cka_value as minibatch_cka_value
from rainbow_jax.similarity._cka import rbf_cka as rbf_cka
from rainbow_jax.similarity._procrustes import procrustes_distance as procrustes_distance
from rainbow_jax.similarity._procrustes import procrustes_distance_from_covariance as procrustes_distance_from_covariance
from rainbow_jax.similarity._dft import FourierCCAResult as FourierCCAResult
from rainbow_jax.similarity._dft import fourier_cca as fourier_cca
from rainbow_jax.similarity._pairwise import CONV as CONV
from rainbow_jax.similarity._table import MEASURES as MEASURES
from rainbow_jax.similarity._table import TABLE as TABLE
from rainbow_jax.similarity._table import Measure as Measure
from rainbow_jax.similarity._pairwise import features as features
from rainbow_jax.similarity._pairwise import pairwise as pairwise
from rainbow_jax.similarity._pairwise import pairwise_moments as pairwise_moments
from rainbow_jax.similarity._null import NullBaseline as NullBaseline
from rainbow_jax.similarity._null import null_baseline as null_baseline

__all__ = [
    "CCAResult",
    "CONV",
    "FourierCCAResult",
    "fourier_cca",
    "MEASURES",
    "Measure",
    "TABLE",
    "MinibatchCKA",
    "NullBaseline",
    "PWCCAResult",
    "SIGNS",
    "cca",
    "cca_distance",
    "cca_from_covariance",
    "cca_moments",
    "cka_from_gram",
    "features",
    "gram_linear",
    "gram_rbf",
    "linear_cka",
    "linear_cka_debiased",
    "linear_cka_from_covariance",
    "linear_cka_moments",
    "minibatch_cka",
    "minibatch_cka_init",
    "minibatch_cka_update",
    "minibatch_cka_value",
    "null_baseline",
    "pairwise",
    "pairwise_moments",
    "procrustes_distance",
    "procrustes_distance_from_covariance",
    "pwcca",
    "pwcca_from_covariance",
    "pwcca_moments",
    "rbf_cka",
    "resolution_floor",
    "svcca",
    "svcca_from_covariance",
    "neighbors",
    "rsa",
    "shape_metrics",
]
