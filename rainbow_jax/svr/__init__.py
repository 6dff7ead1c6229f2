"""The Singular Value Representation (SVR) of a network's weights.

Meller & Berkouk, "Singular Value Representation: A New Graph Perspective On
Neural Networks" (AISTATS 2023). Every linear map A = U S Vᵀ contributes one
*spectral neuron* per singular value: its input representation (a column of
V) and output representation (a column of U). Spectral neurons of
consecutive layers are joined by edges weighted by how much the output
representation of one overlaps the input representation of the next.

Weight layout (the *native* one, PyTorch's): a dense layer is ``[out, in]``,
a conv layer ``[out, in, K, K]``. `from_flax` converts a list of Flax
kernels (PyTorch weights: ``from_flax(network.from_torch(m).kernels)``); a dense layer after a conv layer reads its input flattened
channels-first, ``in = C · P`` with index ``c · P + position`` (PyTorch's
``flatten`` of NCHW; `from_flax` reorders Flax's NHWC flatten to it).

Conventions:
  * conv weights are flattened to ``[out, in · K²]`` for the SVR (``[out · K², in]``
    for the co-SVR);
  * ``adjacency(prev, next)`` is ``[M_next, M_prev]``: rows are the next
    layer's spectral neurons, columns the previous layer's (the paper's
    A_{i,j} = ⟨V_i, U_j⟩²), spectral neurons in descending singular value;
  * an edge between spectral neuron m of layer i and n of layer i+1 that
    sees P positions through c shared channels has weight
    a = Σ_p (Σ_k u_{k,m} V_{k,p,n})² (dense: P = 1, a = ⟨V_n, U_m⟩²; conv:
    P = K²; conv → dense: P = the spatial positions of the flattened map);
    a ≤ 1, and a is invariant to positive rescaling of either layer.

Which layers form a graph: consecutive weight layers where each one's output
is read by the next one only. For a network with skip connections, take the
chains of `rainbow_jax.network.Network.chains` (a residual network: one per
block, its convs) and compute one SVR per chain; ``rainbow-jax analyze``
does this.

Null laws of an edge between independent uniformly random representations
(`null_law`): exactly Beta(P/2, (c − 1)P/2) (the squared norm of the
projection of a uniform unit vector of ℝ^{cP} on a P-dimensional subspace);
the paper's asymptotic χ²(P)/(cP) (χ²(1)/c for dense layers) is its c → ∞
limit and is wrong in the upper tail for small c.

The co-SVR (``svr(..., method='cosvr')``, the reference code's name; section
4.4) flattens a conv layer the other way, ``[out · K², in]``: it first mixes
the input channels, scales, then convolves. Its kernel taps sit on the
*output* side of the previous layer, so an edge reads
a_{n,m} = Σ_{p,q} (Σ_k u_{k,q,m} v_{k,p,n})² with q the previous layer's taps
and p the next layer's positions (the co-SVR of a network is the SVR of the
network reversed with every layer transposed). Where only one side carries
positions the null law is the same Beta. Where both do (a conv → dense edge
of the co-SVR) the law depends on u: with λ_j² the squared singular values
of u_m seen as a ``[c, Q]`` matrix (Σ λ_j² = 1, r = min(c, Q) of them),
a = Σ_j λ_j² X_j / (Σ_j X_j + R) exactly, X_j ~ χ²(P) and R ~ χ²((c − r)P)
independent (a uniform unit vector is a normalised Gaussian). Its p-values
are Monte Carlo estimates, (1 + #{draws ≥ a}) / (1 + draws), from
`null_draws` draws per column (`SVR.sampled`).

Graph summaries from the reference code: `path_metric` (all input→output
paths, weighted by edges and singular values), `entropy` (of each adjacency),
and `effective_filters` (the K×K filter A_{n,m} joining two spectral neurons
of consecutive conv layers, whose squared norm is the edge weight).

Pruning without data (section 5.2.2): `neuron_gains`, each neuron's row of
``U diag(s)`` against the top singular value; neurons below a tolerance
live in the near-kernel and can be removed.

Layout: ``_layout``, ``_spectral``, ``_adjacency``, ``_significance``,
``_internal``, ``_pruning`` and ``_graph`` (one step of the construction each); this
package re-exports their public names.
"""

from rainbow_jax.svr._layout import from_flax as from_flax
from rainbow_jax.svr._layout import to_flax as to_flax
from rainbow_jax.svr._layout import flatten as flatten
from rainbow_jax.svr._spectral import Spectral as Spectral
from rainbow_jax.svr._spectral import randomized_svd as randomized_svd
from rainbow_jax.svr._spectral import spectra as spectra
from rainbow_jax.svr._adjacency import adjacency as adjacency
from rainbow_jax.svr._adjacency import effective_filters as effective_filters
from rainbow_jax.svr._adjacency import svr_to_co_svr as svr_to_co_svr
from rainbow_jax.svr._significance import null_law as null_law
from rainbow_jax.svr._significance import pvalues as pvalues
from rainbow_jax.svr._significance import benjamini_hochberg as benjamini_hochberg
from rainbow_jax.svr._internal import internal_dimensions as internal_dimensions
from rainbow_jax.svr._internal import color_intensity as color_intensity
from rainbow_jax.svr._internal import noisy_block_orthogonal as noisy_block_orthogonal
from rainbow_jax.svr._pruning import neuron_gains as neuron_gains
from rainbow_jax.svr._graph import SVR as SVR
from rainbow_jax.svr._graph import svr as svr
from rainbow_jax.svr._graph import path_metric as path_metric
from rainbow_jax.svr._graph import entropy as entropy
from rainbow_jax.svr._graph import svr_stack as svr_stack
from rainbow_jax.svr._graph import take as take
from rainbow_jax.svr._graph import keep_ranks as keep_ranks
from rainbow_jax.svr._graph import low_rank as low_rank
from rainbow_jax.svr._graph import edges as edges
from rainbow_jax.svr._graph import to_networkx as to_networkx

__all__ = [
    "SVR",
    "Spectral",
    "adjacency",
    "benjamini_hochberg",
    "color_intensity",
    "edges",
    "effective_filters",
    "entropy",
    "flatten",
    "from_flax",
    "internal_dimensions",
    "keep_ranks",
    "low_rank",
    "neuron_gains",
    "noisy_block_orthogonal",
    "null_law",
    "path_metric",
    "pvalues",
    "randomized_svd",
    "spectra",
    "svr",
    "svr_stack",
    "svr_to_co_svr",
    "take",
    "to_flax",
    "to_networkx",
]
