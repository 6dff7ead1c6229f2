"""rainbow_jax: what has a trained network learned, and is it the same across runs?

Pure, jitted, vmapped JAX functions for streaming activation statistics,
alignment of networks, spectra, representational similarity and the rest of
the analyses of the rainbow tutorial. See README.md.

`rainbow_jax.checkpoint` (orbax), `rainbow_jax.plots` (matplotlib) and the
command line, `rainbow_jax.commands`, are imported on demand.
"""

from rainbow_jax import align as align
from rainbow_jax import compat as compat
from rainbow_jax import consensus as consensus
from rainbow_jax import data as data
from rainbow_jax import ensembles as ensembles
from rainbow_jax import gaussianity as gaussianity
from rainbow_jax import evaluate as evaluate
from rainbow_jax import fourier as fourier
from rainbow_jax import models as models
from rainbow_jax import network as network
from rainbow_jax import moments as moments
from rainbow_jax import rainbow as rainbow
from rainbow_jax import scaling as scaling
from rainbow_jax import similarity as similarity
from rainbow_jax import spectra as spectra
from rainbow_jax import streaming as streaming
from rainbow_jax import svr as svr
from rainbow_jax import train as train
from rainbow_jax import wavelets as wavelets
from rainbow_jax.align import Alignment as Alignment
from rainbow_jax.align import align_features as align_features
from rainbow_jax.align import align_moments as align_moments
from rainbow_jax.align import procrustes as procrustes
from rainbow_jax.align import stability as stability
from rainbow_jax.moments import Moments as Moments
from rainbow_jax.moments import accumulate as accumulate
from rainbow_jax.moments import accumulate_stack as accumulate_stack
from rainbow_jax.moments import covariance as covariance
from rainbow_jax.moments import layer_moments as layer_moments

__version__ = "0.1.0"

__all__ = [
    "align", "compat", "consensus", "data", "ensembles", "evaluate", "fourier", "gaussianity",
    "models",
    "moments", "network", "rainbow", "scaling", "similarity", "spectra", "streaming", "svr",
    "train", "wavelets", "Alignment", "align_features", "align_moments",
    "procrustes", "stability", "Moments", "accumulate", "accumulate_stack",
    "covariance", "layer_moments",
]
