"""Weight and activation spectra, the Marchenko–Pastur law, clipping.

The tutorial reads what a layer has learned off two spectra:

* the **activation** second moment E[φφᵀ] of the layer's input (see
  `rainbow_jax.moments`), eigenpairs largest first (`activation_spectrum`);
* the **weight covariance** C = WᵀW / n of its n neurons (rows of the
  ``[n, fan_in]`` weight; a conv kernel is flattened to
  ``[C_out, K·K·C_in]``), from the SVD W = U S Vᵀ: eigenvalues s²/n,
  eigenvectors the rows of Vᵀ (`weight_spectrum`).

At initialisation the n rows are i.i.d. with covariance σ²·I, so the
eigenvalues of C follow the Marchenko–Pastur law of ratio γ = fan_in / n
with edges σ²(1 ± √γ)² (`marchenko_pastur`); eigenvalues above the upper
edge after training are the *learned components* (`learned_components`).

*Clipping* projects a layer's input on its top-k eigenvectors (of either
spectrum) and measures the accuracy left; `clip_sweep` evaluates every k of
a list in one vmapped program (the tutorial deep-copies a model per k).

Kernels are in Flax layout (Dense ``[in, out]``, Conv ``[K, K, C_in, C_out]``)
and conv patches flatten in ``(K, K, C_in)`` order, as our models do.

Layout: ``_mp`` (spectra and Marchenko–Pastur), ``_clipping`` and
``_heavy_tails`` (WeightWatcher's measures); this package re-exports their
public names.
"""

from rainbow_jax.spectra._mp import weight_matrix as weight_matrix
from rainbow_jax.spectra._mp import weight_spectrum as weight_spectrum
from rainbow_jax.spectra._mp import activation_spectrum as activation_spectrum
from rainbow_jax.spectra._mp import init_variance as init_variance
from rainbow_jax.spectra._mp import MarchenkoPastur as MarchenkoPastur
from rainbow_jax.spectra._mp import marchenko_pastur as marchenko_pastur
from rainbow_jax.spectra._mp import learned_components as learned_components
from rainbow_jax.spectra._mp import layer_law as layer_law
from rainbow_jax.spectra._clipping import projector as projector
from rainbow_jax.spectra._clipping import clip_kernel as clip_kernel
from rainbow_jax.spectra._clipping import clip_sweep as clip_sweep
from rainbow_jax.spectra._clipping import input_map as input_map
from rainbow_jax.spectra._clipping import explained_variance as explained_variance
from rainbow_jax.spectra._heavy_tails import esd as esd
from rainbow_jax.spectra._heavy_tails import PowerLawFit as PowerLawFit
from rainbow_jax.spectra._heavy_tails import power_law as power_law
from rainbow_jax.spectra._heavy_tails import correlation_traps as correlation_traps

__all__ = [
    "MarchenkoPastur",
    "PowerLawFit",
    "activation_spectrum",
    "clip_kernel",
    "clip_sweep",
    "correlation_traps",
    "esd",
    "explained_variance",
    "init_variance",
    "input_map",
    "layer_law",
    "learned_components",
    "marchenko_pastur",
    "power_law",
    "projector",
    "weight_matrix",
    "weight_spectrum",
]
