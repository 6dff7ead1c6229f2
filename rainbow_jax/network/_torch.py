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
    dropped: names of the tensors left out (biases, BatchNorm vectors and
      statistics), as the SVR reference code drops them.
  """

  names: tuple
  kernels: list
  dropped: tuple


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
  """
  if hasattr(weights, "state_dict") and callable(weights.state_dict):
    weights = weights.state_dict()
  if isinstance(weights, Mapping):
    items = list(weights.items())
  else:
    items = [(f"weights[{i}]", w) for i, w in enumerate(weights)]
  if not items:
    raise ValueError("no weights given.")
  names, kernels, dropped = [], [], []
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
    if a.ndim < 2:
      dropped.append(name)
      i += 1
      continue
    if not np.issubdtype(a.dtype, np.floating):
      raise TypeError(f"{name}: weights must be floating, got {a.dtype}.")
    if a.ndim == 2 and kernels and kernels[-1].ndim >= 3:
      # A linear layer after a conv reads PyTorch's (C, *space) flatten;
      # canonical is Flax's (*space, C).
      a = _linalg.reorder_flatten(a, kernels[-1].shape[-1], channels_first=True, name=name)
    kernels.append(_torch_kernel(a, name))
    names.append(name)
    pending = len(kernels) - 1
    i += 1
  if not kernels:
    raise ValueError("no weight of rank ≥ 2 among the given tensors.")
  return TorchWeights(tuple(names), [jnp.asarray(k) for k in kernels], tuple(dropped))
