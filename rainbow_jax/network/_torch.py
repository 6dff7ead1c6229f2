"""PyTorch weights read into the canonical layout (weight-only analyses)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import _linalg

Array = jax.Array


class TorchWeights(NamedTuple):
  """Weights read from PyTorch, in the canonical (Flax) layout.

  Attributes:
    names: state-dict names of the weight layers, in registration order.
    kernels: kernels, Dense ``[in, out]``, Conv ``[K, K, C_in, C_out]``.
    dropped: names of the tensors left out (biases, BatchNorm and LayerNorm
      vectors and statistics, position embeddings and class tokens), as the
      SVR reference code drops them.
    kinds: per kernel ``'dense'``, ``'conv'``, ``'embedding'`` (a lookup
      table ``[vocabulary, d]``: the kernel of a dense layer reading one-hot
      tokens) or ``'attention'`` (a query, key or value projection
      ``[d_model, heads · head_dim]``; split from a packed ``in_proj_weight``
      or GPT-2's ``c_attn``, its name ends in ``[q]``, ``[k]`` or ``[v]``;
      or an output projection: ``out_proj`` of ``nn.MultiheadAttention``,
      Hugging Face's ``o_proj`` and GPT-2's ``attn.c_proj``).
  """

  names: tuple
  kernels: list
  dropped: tuple
  kinds: tuple = ()


# Module classes whose ``weight`` is stored ``[in, out]`` (no transpose):
# embedding tables and Hugging Face's GPT-2 ``Conv1D``.
_IN_OUT = {"Embedding": "embedding", "Conv1D": "dense"}
# Without a module: state-dict prefixes that name embedding tables.
_EMBED_NAMES = ("embed", "wte", "wpe")
_EMBED_SUFFIXES = ("_embed", "embedding", "embeddings")


# State-dict prefixes of attention projections: Hugging Face's names, and
# the output projection of torch's nn.MultiheadAttention.
_ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "query", "key",
                    "value", "c_proj")


def _is_attention(prefix: str, owners: dict | None) -> bool:
  parent, _, last = prefix.rpartition(".")
  if last == "c_proj":  # GPT-2: attn.c_proj is attention, mlp.c_proj is not
    return parent.rsplit(".", 1)[-1] == "attn"
  if owners is not None and last == "out_proj":
    return owners.get(parent) == "MultiheadAttention"
  return last in _ATTENTION_NAMES


def _owners(module: Any) -> dict:
  """``{module path: class name}`` of a torch module's submodules."""
  return {name: type(m).__name__ for name, m in module.named_modules()}


def _is_embedding_name(prefix: str) -> bool:
  last = prefix.rsplit(".", 1)[-1].lower()
  return last in _EMBED_NAMES or last.endswith(_EMBED_SUFFIXES)


def _numpy(t: Any) -> np.ndarray:
  if hasattr(t, "detach"):  # a torch tensor, without importing torch
    t = t.detach().cpu()
    if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
      t = t.float()
    return t.numpy()
  return np.asarray(t)


def _torch_kernel(w: np.ndarray, name: str) -> np.ndarray:
  if w.ndim == 2:
    return np.ascontiguousarray(w.T)  # [out, in] → [in, out]
  if w.ndim >= 3:
    # [C_out, C_in, *window] → [*window, C_in, C_out]
    return np.ascontiguousarray(np.transpose(w, (*range(2, w.ndim), 1, 0)))
  raise ValueError(f"{name}: a weight of shape {w.shape} is not a layer's weight.")


def from_torch(weights: Any, *, fold_batchnorm: bool = False, eps: float = 1e-5
               ) -> TorchWeights:
  """PyTorch weights → canonical kernels, for spectra, Marchenko–Pastur, SVR.

  Args:
    weights: a ``torch.nn.Module`` (its ``state_dict()``), a state dict
      (name → tensor or array), or a sequence of tensors/arrays in PyTorch
      layout (``[out, in]``, ``[C_out, C_in, *window]``). Order: the state
      dict's, i.e. module registration order (for the usual sequential and
      ResNet/VGG definitions, the order of the forward pass).
    fold_batchnorm: fold each BatchNorm (``weight``, ``bias``,
      ``running_mean``, ``running_var`` following a conv or linear layer in
      the state dict) into that layer's weight, W ← W·γ/√(σ² + eps) per
      output channel, as inference computes it. Default: BatchNorm vectors
      are dropped like biases (what the SVR reference code does), and listed
      in ``dropped``.
    eps: BatchNorm epsilon for folding (PyTorch's default 1e-5).

  Returns:
    `TorchWeights`. A linear layer right after a conv layer reads PyTorch's
    channels-first flatten; its input is reordered to Flax's channels-last
    one, so the kernels are those of the same network written in Flax.

  Transformers. ``nn.MultiheadAttention``'s packed ``in_proj_weight`` is
  split into its query, key and value projections (``name[q]``, ``[k]``,
  ``[v]``, kind ``'attention'``, each ``[d_model, d]``); separate
  projections (``q_proj``, ``k_proj``, ``o_proj``, ``fc1``, … as Hugging
  Face names them) are linear layers like any other. Embedding tables are
  kept as ``[vocabulary, d]`` kernels (kind ``'embedding'``), and Hugging
  Face's GPT-2 ``Conv1D``, stored ``[in, out]``, is read without a
  transpose — both recognised from the module's classes when a module is
  given; from a bare state dict, tables are recognised by name (``embed``,
  ``wte``, ``wpe``, ``*_embedding``, …) and ``Conv1D`` cannot be told from
  a linear layer (pass the module). Parameters that are not a layer's
  ``weight`` (position embeddings, class tokens) are dropped.
  """
  owners = None
  if hasattr(weights, "state_dict") and callable(weights.state_dict):
    owners = _owners(weights) if hasattr(weights, "named_modules") else None
    weights = weights.state_dict()
  if isinstance(weights, Mapping):
    items = list(weights.items())
  else:
    items = [(f"weights[{i}]", w) for i, w in enumerate(weights)]
  if not items:
    raise ValueError("no weights given.")
  names, kernels, dropped, kinds = [], [], [], []
  pending = None  # index of the last weight layer, for folding
  i = 0
  while i < len(items):
    name, t = items[i]
    a = _numpy(t)
    prefix = name.rsplit(".", 1)[0] if "." in name else name
    is_bn = isinstance(weights, Mapping) and f"{prefix}.running_var" in weights
    if is_bn and name.endswith(".weight"):
      group = {k.rsplit(".", 1)[1]: _numpy(v) for k, v in items if k.startswith(prefix + ".")
               and k.count(".") == name.count(".")}
      n_group = len(group)
      if fold_batchnorm:
        if pending is None:
          raise ValueError(f"BatchNorm {prefix} follows no conv or linear layer to fold into.")
        scale = group["weight"] / np.sqrt(group["running_var"] + eps)
        kernels[pending] = kernels[pending] * scale.astype(kernels[pending].dtype)
        pending = None
      dropped.extend(f"{prefix}.{k}" for k in group)
      i += n_group
      continue
    leaf = name.rsplit(".", 1)[-1]
    named = isinstance(weights, Mapping)
    if a.ndim < 2 or (named and not (leaf == "weight" or leaf.endswith("_weight"))):
      # Vectors, and parameters that are not a layer's weight (position
      # embeddings, class tokens, ...).
      dropped.append(name)
      i += 1
      continue
    if not np.issubdtype(a.dtype, np.floating):
      raise TypeError(f"{name}: weights must be floating, got {a.dtype}.")
    owner = None if owners is None else owners.get(prefix)
    if named and leaf == "in_proj_weight":
      # nn.MultiheadAttention's packed [q; k; v] projections, each [d, d_model].
      if a.ndim != 2 or a.shape[0] % 3:
        raise ValueError(f"{name}: a packed in_proj_weight is [3·d, d_model], got {a.shape}.")
      for part, w in zip("qkv", np.split(a, 3, axis=0)):
        kernels.append(_torch_kernel(w, name))
        names.append(f"{name}[{part}]")
        kinds.append("attention")
      pending = None
      i += 1
      continue
    layout = _IN_OUT.get(owner) if owners is not None else (
        "embedding" if named and a.ndim == 2 and _is_embedding_name(prefix) else None)
    attention = named and a.ndim == 2 and _is_attention(prefix, owners)
    if layout is not None and a.ndim == 2 and prefix.rsplit(".", 1)[-1] == "c_attn":
      # GPT-2's packed attention, a Conv1D [d_model, 3·d]: q, k, v side by side.
      for part, w in zip("qkv", np.split(a, 3, axis=1)):
        kernels.append(np.ascontiguousarray(w))
        names.append(f"{name}[{part}]")
        kinds.append("attention")
      pending = None
      i += 1
      continue
    if layout is not None and a.ndim == 2:
      kernels.append(np.ascontiguousarray(a))  # stored [in, out] already
      names.append(name)
      kinds.append("attention" if attention else layout)
      pending = len(kernels) - 1
      i += 1
      continue
    if a.ndim == 2 and kernels and kernels[-1].ndim >= 3:
      # A linear layer after a conv reads PyTorch's (C, *space) flatten;
      # canonical is Flax's (*space, C).
      a = _linalg.reorder_flatten(a, kernels[-1].shape[-1], channels_first=True, name=name)
    kernels.append(_torch_kernel(a, name))
    names.append(name)
    kinds.append("attention" if attention else "dense" if a.ndim == 2 else "conv")
    pending = len(kernels) - 1
    i += 1
  if not kernels:
    raise ValueError("no weight of rank ≥ 2 among the given tensors.")
  return TorchWeights(tuple(names), [jnp.asarray(k) for k in kernels], tuple(dropped),
                      tuple(kinds))
