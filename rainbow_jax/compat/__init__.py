"""Drop-in replacements for other similarity toolkits.

`rainbow_jax.compat.svcca` mirrors google/svcca's ``cca_core`` and
``pwcca`` modules: change the import, keep the code.
"""

from rainbow_jax.compat import svcca as svcca

__all__ = ["svcca"]
