"""The adapter from a user's network to what the analyses need.

Every analysis that touches a model — layer moments, clipping, alignment,
rainbow sampling, the SVR of a network's weights — goes through a `Network`,
built from the user's own model with no change to it:

* `from_linen(module, variables, x)` for a Flax linen module;
* `from_nnx(model, x)` for a Flax NNX module (its variables:
  `nnx_variables(model)`);
* `from_torch(module_or_state_dict)` for PyTorch weights (weight-only
  analyses: spectra, Marchenko–Pastur, SVR).

A `Network` knows the model's **weight layers in the order the forward pass
calls them** (discovered by running the model once, abstractly, under
Flax's own method interception — `nn.intercept_methods` for linen, the
module graph for NNX), each with its parameter path, kind and kernel shape.

Canonical layout, used by every module of rainbow_jax: Flax's. A dense
kernel is ``[in, out]``; a conv kernel ``[*window, C_in, C_out]`` (2-D:
``[K, K, C_in, C_out]``) whose fan-in flattens in ``(*window, C_in)`` order
(`rainbow_jax.spectra.weight_matrix`). PyTorch weights are converted to it
once, in `from_torch`.

Weight layers: ``nn.Dense``, ``nn.Conv`` (any stride, padding, dilation; no
feature groups), ``nn.DenseGeneral`` where it is a plain matrix product,
`rainbow_jax.models.PatchConv`; NNX ``Linear`` and ``Conv``. BatchNorm is
always evaluated in inference mode from its running statistics (whatever
flag the model passes), so nothing is ever written to ``batch_stats``.
Other layers (pooling, LayerNorm, dropout in deterministic mode, skip
connections) run as the model defines them.

The functions of a `Network` are pure and take the model's variables
explicitly (linen: the dict `module.init` returns, ``{'params': …,
'batch_stats': …}``; NNX: `nnx_variables(model)`), so they compose with
`jax.jit` and `jax.vmap` (over seeds or samples). A `Network` is hashable
(by identity) and may be a static argument of `jax.jit`.

Layout: ``_core`` (`Layer`, `Network`, the tap, the structure helpers),
``_linen``, ``_nnx``, ``_torch`` (one adapter per framework). A new layer
kind is read by the adapters (``_linen_kind``, ``_nnx_kind``) and, if its
input is not a plain matrix product's, by the tap.
"""

from rainbow_jax.network._core import Layer as Layer
from rainbow_jax.network._core import Network as Network
from rainbow_jax.network._core import chains_of as chains_of
from rainbow_jax.network._core import consumers_of as consumers_of
from rainbow_jax.network._core import links_of as links_of
from rainbow_jax.network._linen import from_linen as from_linen
from rainbow_jax.network._nnx import from_nnx as from_nnx
from rainbow_jax.network._nnx import nnx_variables as nnx_variables
from rainbow_jax.network._torch import TorchWeights as TorchWeights
from rainbow_jax.network._torch import from_torch as from_torch

__all__ = ["Layer", "Network", "TorchWeights", "chains_of", "consumers_of", "from_linen", "from_nnx", "from_torch", "links_of", "nnx_variables"]
