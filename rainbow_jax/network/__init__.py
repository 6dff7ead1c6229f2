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

Weight layers (`Layer.kind`), each with its canonical matrix:

* ``'dense'``: ``nn.Dense`` / NNX ``Linear``, and ``DenseGeneral`` /
  ``LinearGeneral`` contracting trailing input axes (the contracted axes
  flatten into the fan-in, the features into the outputs);
* ``'attention'``: the query, key, value and output projections of
  ``nn.MultiHeadDotProductAttention`` / NNX ``MultiHeadAttention``: q, k, v
  ``[d_model, heads·head_dim]`` (stored ``[d_model, heads, head_dim]``), the
  output ``[heads·head_dim, d_model]``, the heads in `Layer.heads`; their
  inputs are token sequences ``[B, T, d]`` (the output projection's, the
  heads' concatenated values);
* ``'embedding'``: ``nn.Embed`` / NNX ``Embed``, the table ``[vocab, d]``
  read as a dense layer whose input is the one-hot tokens ``[B, T, vocab]``
  (an edit of that input multiplies the table); ``Embed.attend`` (a tied
  output layer) is not a separate layer;
* ``'conv'``: ``nn.Conv`` / NNX ``Conv`` of any stride, padding, dilation and
  feature groups, and `rainbow_jax.models.PatchConv`; a grouped or depthwise
  conv is its block-diagonal ``[*window, C_in, C_out]`` kernel (the same
  operator: its spectra are the union of the per-group matrices' spectra;
  `Network.with_kernels` keeps the entries inside the groups).

A layer called several times (a shared block) is one `Layer` with
``calls > 1``: its inputs from every call are samples of that layer,
stacked on axis 1 (``[B, calls, …]``), and an edit applies at every call.
BatchNorm is always evaluated in inference mode from its running statistics
(whatever flag the model passes), so nothing is ever written to
``batch_stats``. Other layers (pooling, LayerNorm, RMSNorm, GroupNorm,
dropout in deterministic mode, skip connections, attention's softmax) run
as the model defines them. Token sequences: every statistic counts tokens
as samples (`rainbow_jax.moments.fold`, with a ``[B, T]`` padding mask in
`rainbow_jax.moments.update`); `rainbow_jax.similarity.features` turns a
sequence into one vector per sequence (``'mean'``, ``'cls'``).

The functions of a `Network` are pure and take the model's variables
explicitly (linen: the dict `module.init` returns, ``{'params': …,
'batch_stats': …}``; NNX: `nnx_variables(model)`), so they compose with
`jax.jit` and `jax.vmap` (over seeds or samples). A `Network` is hashable
(by identity) and may be a static argument of `jax.jit`.

Layout: ``_core`` (`Layer`, `Network`, the tap, the structure helpers),
``_linen``, ``_nnx``, ``_torch`` (one adapter per framework), ``_segments``
(`segments`: the forward pass cut at every weight layer's input, for
analyses that walk the layers in linear time). A new layer
kind is read by the adapters (``_linen_reader``, ``_nnx_reader``) as a
``_core._Reader``: how its input becomes the canonical one (reshape,
one-hot) and how its stored weight becomes the canonical matrix.
"""

from rainbow_jax.network._core import Layer as Layer
from rainbow_jax.network._core import Network as Network
from rainbow_jax.network._core import chains_of as chains_of
from rainbow_jax.network._core import consumers_of as consumers_of
from rainbow_jax.network._core import links_of as links_of
from rainbow_jax.network._linen import from_linen as from_linen
from rainbow_jax.network._nnx import from_nnx as from_nnx
from rainbow_jax.network._nnx import nnx_variables as nnx_variables
from rainbow_jax.network._segments import Segments as Segments
from rainbow_jax.network._segments import segments as segments
from rainbow_jax.network._torch import TorchWeights as TorchWeights
from rainbow_jax.network._torch import from_torch as from_torch

__all__ = ["Layer", "Network", "Segments", "TorchWeights", "chains_of", "consumers_of", "from_linen", "from_nnx", "from_torch", "links_of", "nnx_variables", "segments"]
