"""google/svcca-compatible CCA: ``import rainbow_jax.compat.svcca as cca_core``.

`get_cca_similarity` and `compute_pwcca` take and return what google/svcca's
``cca_core.get_cca_similarity`` and ``pwcca.compute_pwcca`` do (neurons ×
datapoints arrays, numpy results, the same dict keys), computed by
`rainbow_jax.similarity.svcca_compat`, which documents the precision, the
speed and every difference from the reference.
"""

from rainbow_jax.similarity.svcca_compat import compute_pwcca as compute_pwcca
from rainbow_jax.similarity.svcca_compat import get_cca_similarity as get_cca_similarity

__all__ = ["compute_pwcca", "get_cca_similarity"]
