"""Streaming first and second moments of feature maps, mergeable across shards.

The state, `Moments`, holds for each of several feature maps (layers of one or
two networks) the sample count, the mean and the *centered* sum of outer
products ``M2 = Σ (x − μ)(x − μ)ᵀ``, plus centered cross sums
``Σ (x − μₓ)(y − μ_y)ᵀ`` for chosen pairs of maps. Batches are folded in with
the pairwise update of Chan, Golub & LeVeque, with Kahan-compensated
accumulators, so float32 statistics over millions of samples keep float32
accuracy, and both the tutorial's uncentered second moment E[φφᵀ] and the
centered covariance come out of the same state.

The functions follow the optax pattern: `init` → `update` (jittable, drops
into `lax.scan`) → `merge` / `psum_merge` / `process_merge` (across
shards, devices or hosts) →
`covariance` / `mean`. `accumulate` drives a host iterator of batches with
one compiled update (a ragged last batch is padded and masked, so it is
counted exactly and compiles nothing new); `accumulate_stack` scans an
on-device stack of batches.

Conventions: a feature map of shape ``[batch, features]`` is used as is; a
conv map ``[batch, height, width, channels]`` (Flax's NHWC) has its spatial
positions folded into the samples, ``[batch * height * width, channels]``.

References:
  Chan, Golub & LeVeque, "Algorithms for computing the sample variance:
  analysis and recommendations", The American Statistician 37 (1983).

Layout: ``_state`` (the `Moments` pytree and its maths) and ``_drivers``
(loops over data and models); this package re-exports both.
"""

from rainbow_jax.moments._state import Moments as Moments
from rainbow_jax.moments._state import init as init
from rainbow_jax.moments._state import update as update
from rainbow_jax.moments._state import batch_moments as batch_moments
from rainbow_jax.moments._state import merge as merge
from rainbow_jax.moments._state import process_merge as process_merge
from rainbow_jax.moments._state import psum_merge as psum_merge
from rainbow_jax.moments._state import mean as mean
from rainbow_jax.moments._state import covariance as covariance
from rainbow_jax.moments._state import second_moment_trace as second_moment_trace
from rainbow_jax.moments._state import check as check
from rainbow_jax.moments._state import fold as fold
from rainbow_jax.moments._state import fold_pair as fold_pair
from rainbow_jax.moments._drivers import init_for as init_for
from rainbow_jax.moments._drivers import accumulate as accumulate
from rainbow_jax.moments._drivers import accumulate_stack as accumulate_stack
from rainbow_jax.moments._drivers import layer_moments as layer_moments
from rainbow_jax.moments._drivers import layer_names as layer_names
from rainbow_jax.moments._drivers import layer_pairs as layer_pairs
from rainbow_jax.moments._drivers import IN_FLIGHT as IN_FLIGHT
from rainbow_jax.moments._drivers import SEQUENCES as SEQUENCES
from rainbow_jax.moments._state import Pair as Pair

__all__ = [
    "Moments",
    "init",
    "update",
    "batch_moments",
    "merge",
    "process_merge",
    "psum_merge",
    "mean",
    "covariance",
    "second_moment_trace",
    "check",
    "fold",
    "fold_pair",
    "init_for",
    "accumulate",
    "accumulate_stack",
    "layer_moments",
    "layer_names",
    "layer_pairs",
    "SEQUENCES",
]
