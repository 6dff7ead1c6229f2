"""Gaussian rainbow networks: new networks sampled from a trained one.

The rainbow model (Guth, Ménard, Rochette & Mallat) says the neurons of a
trained layer behave like i.i.d. samples of a Gaussian whose covariance is
the layer's weight covariance, up to a rotation fixed by the previous
layers. `generate` samples S new networks layer by layer, as the tutorial's
``generate_network`` does, but all S at once:

1. layer j's rows are drawn from N(0, C_j), C_j = WⱼᵀWⱼ / n the reference
   weight covariance in the reference's input basis: W' = G F with G white
   ``[n', R]`` and F = S Vᵀ/√n from the SVD W = U S Vᵀ (`weight_factor`;
   with several seeds, their rows stacked after alignment, i.e. the
   averaged covariance). The tutorial's code omits the 1/√n, which scales
   every row by √n: harmless for bias-free ReLU networks, which only change
   their logits' scale, but wrong in general; we use the covariance itself;
2. the sampled weights are realigned to the generated network's own input
   basis, W' ← W' Aᵀ, with A the alignment of the previous layer (A φ ≈ ψ
   between reference and generated activations; `rainbow_jax.align`);
3. one pass over the data computes the cross second moment between the
   reference's and every generated network's input to layer j + 1 (only
   layers ≤ j are evaluated), and its Procrustes map gives the next A;
4. the classifier is the reference's, realigned.

Layers not listed in ``layers`` keep the reference weights (realigned), and a
generated network may be wider or narrower than the reference
(``gen_model``). Everything runs under `jit`, vmapped over the S samples.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rainbow_jax import align as _align
from rainbow_jax import models as _models
from rainbow_jax import spectra as _spectra
from rainbow_jax import train as _train

Array = jax.Array
_HP = lax.Precision.HIGHEST


def weight_factor(matrices: Sequence[Array]) -> Array:
  """F ``[R, fan_in]`` with FᵀF = the second moment of the rows of the
  stacked ``[n_k, fan_in]`` weight matrices (one reference: WᵀW/n; several
  seeds in the reference's input basis: their averaged covariance)."""
  w = jnp.concatenate([jnp.asarray(m) for m in matrices], axis=0)
  _, s, vh = jnp.linalg.svd(w, full_matrices=False)
  return s[:, None] * vh / jnp.sqrt(jnp.asarray(w.shape[0], w.dtype))


def sample_kernel(key: Array, factor: Array, shape: Sequence[int]) -> Array:
  """A Flax kernel of `shape` whose ``n_out`` rows are i.i.d. N(0, FᵀF)."""
  n_out = shape[-1]
  g = jax.random.normal(key, (n_out, factor.shape[0]), factor.dtype)
  w = jnp.matmul(g, factor, precision=_HP)  # [n_out, fan_in]
  return w.T.reshape(shape)


def realign(kernel: Array, a: Array) -> Array:
  """Kernel reading the reference's input → kernel reading the generated
  network's input ψ ≈ A φ (W ← W Aᵀ; ``a`` is ``[d_gen, d_ref]``). Conv
  kernels are realigned on their input channels."""
  if kernel.ndim == 4:
    return jnp.einsum("gr,abro->abgo", a, kernel, precision=_HP)
  return jnp.matmul(a, kernel, precision=_HP)


def _fold(x: Array) -> Array:
  return x.reshape(-1, x.shape[-1])


@functools.partial(jax.jit, static_argnames=("ref_model", "gen_model", "layer"))
def cross_moments(ref_model, gen_model, layer: int, ref_params, gen_params,
                  xb: Array, wb: Array):
  """One pass: Σ ψ φᵀ ``[S, d_gen, d_ref]``, Σ‖φ‖² and Σ‖ψ‖² ``[S]`` at the
  input of `layer`, over batches ``xb [nb, B, ...]`` with row weights
  ``wb [nb, B]`` (0 for padding). Conv inputs fold space into the batch."""
  def body(carry, inp):
    cross, tphi, tpsi = carry
    x, w = inp
    phi = _fold(_models.layer_inputs(ref_model, ref_params, x, upto=layer)[layer])
    reps = phi.shape[0] // x.shape[0]
    wf = jnp.repeat(w, reps)
    phi = phi * wf[:, None]
    psi = jax.vmap(
        lambda p: _fold(_models.layer_inputs(gen_model, p, x, upto=layer)[layer]))(gen_params)
    cross = cross + jnp.einsum("snd,ne->sde", psi, phi)
    tphi = tphi + jnp.sum(phi * phi)
    tpsi = tpsi + jnp.einsum("snd,n->s", psi * psi, wf)
    return (cross, tphi, tpsi), None

  s = jax.tree_util.tree_leaves(gen_params)[0].shape[0]
  probe = jax.eval_shape(lambda: (
      _fold(_models.layer_inputs(ref_model, ref_params, xb[0], upto=layer)[layer]),
      _fold(_models.layer_inputs(gen_model, jax.tree_util.tree_map(lambda a: a[0], gen_params),
                                 xb[0], upto=layer)[layer])))
  d_ref, d_gen = probe[0].shape[-1], probe[1].shape[-1]
  init = (jnp.zeros((s, d_gen, d_ref), jnp.float32), jnp.zeros((), jnp.float32),
          jnp.zeros((s,), jnp.float32))
  (cross, tphi, tpsi), _ = lax.scan(body, init, (xb, wb))
  return cross, tphi, tpsi


@jax.jit
def _align_all(cross, tphi, tpsi):
  # Sequential over samples: batched LAPACK inside larger XLA:CPU programs
  # has deadlocked (see rainbow_jax.similarity).
  return lax.map(lambda c: _align.align(c[0], tphi, c[1]), (cross, tpsi))


class Generated(NamedTuple):
  """Result of `generate`.

  Attributes:
    params: ``[S, ...]`` parameters of the S generated networks (of
      ``gen_model``).
    alignments: per layer j ≥ 1, ``[S, d_gen, d_ref]`` A with A φ ≈ ψ at its
      input.
    r2: ``[S, L − 1]`` alignment r² at the inputs of layers 1…L−1.
  """

  params: Any
  alignments: list
  r2: Array


def reference_factors(kernels_per_seed: Sequence[Sequence[Array]],
                      input_alignments: Sequence[Sequence[Array | None]] | None = None
                      ) -> list[Array]:
  """Weight factors of every layer but the classifier, from one or several
  trained seeds.

  Args:
    kernels_per_seed: K lists of Flax kernels (seed 0 is the reference).
    input_alignments: for seeds k ≥ 1, per layer the alignment ``[d_k, d_0]``
      of their input onto the reference's (A φ₀ ≈ φ_k; None for the first
      layer, which reads pixels). Their weights are brought into the
      reference's input basis (W_k A) before stacking.

  Returns:
    L − 1 factors F ``[R, fan_in]`` (`weight_factor`).
  """
  ref = kernels_per_seed[0]
  out = []
  for j in range(len(ref) - 1):
    mats = [_spectra.weight_matrix(ref[j])]
    for k in range(1, len(kernels_per_seed)):
      kern = kernels_per_seed[k][j]
      a = None if input_alignments is None else input_alignments[k - 1][j]
      if a is not None:  # kernel reading φ_k ≈ A φ₀ → reading φ₀: contract with A
        kern = realign(kern, a.T)
      elif j > 0:
        raise ValueError(f"seed {k}, layer {j}: an input alignment is needed to average"
                         " weight covariances across seeds.")
      mats.append(_spectra.weight_matrix(kern))
    out.append(weight_factor(mats))
  return out


def generate(key: Array, model: Any, params: Any, x: Array, *, num_samples: int = 1,
             gen_model: Any = None, factors: Sequence[Array] | None = None,
             layers: Sequence[int] | None = None, batch_size: int = 1000,
             progress: bool = True) -> Generated:
  """Samples `num_samples` rainbow networks from a trained reference.

  Args:
    key: PRNG key.
    model, params: the reference Flax module and its parameters (one seed).
    x: ``[N, ...]`` data for the alignments (the tutorial: the training set).
    num_samples: S, generated as one vmapped program.
    gen_model: architecture of the generated networks (default `model`); its
      hidden widths may differ from the reference's on sampled layers.
    factors: per sampled layer the weight factor (default: the reference's
      own, `weight_factor`); see `reference_factors` to average seeds.
    layers: indices of the layers to sample (default: all but the
      classifier). Others keep the reference weights, realigned.
    batch_size: batch of the alignment passes (memory only).
    progress: a progress bar over layers.

  Returns:
    `Generated`; evaluate with ``rainbow_jax.train.accuracy(result.params, …,
    model=gen_model)``.
  """
  gen_model = model if gen_model is None else gen_model
  ref_k = _models.weights(params)
  n_layers = len(ref_k)
  layers = list(range(n_layers - 1)) if layers is None else sorted(set(layers))
  if any(not 0 <= j < n_layers - 1 for j in layers):
    raise ValueError(f"layers must lie in [0, {n_layers - 2}] (the classifier is never"
                     f" sampled), got {layers}.")
  if num_samples < 1:
    raise ValueError(f"num_samples must be ≥ 1, got {num_samples}.")
  if factors is None:
    factors = {j: weight_factor([_spectra.weight_matrix(ref_k[j])]) for j in layers}
  elif not isinstance(factors, dict):
    factors = dict(enumerate(factors))
  template = gen_model.init(jax.random.key(0), jnp.zeros((1, *x.shape[1:]), x.dtype))["params"]
  gen_shapes = [k.shape for k in _models.weights(template)]
  if len(gen_shapes) != n_layers:
    raise ValueError(f"gen_model has {len(gen_shapes)} layers, the reference {n_layers}.")
  for j in range(n_layers):
    if j not in layers and gen_shapes[j][-1] != ref_k[j].shape[-1]:
      raise ValueError(f"layer {j} is not sampled, so its width must be the reference's"
                       f" ({ref_k[j].shape[-1]}), not {gen_shapes[j][-1]}.")
  s = num_samples
  # Padded batches; the padding rows get weight 0 (label −1).
  xb, yb = _train.eval_batches(jnp.asarray(x), jnp.zeros((x.shape[0],), jnp.int32), batch_size)
  wb = (yb >= 0).astype(jnp.float32)
  gen_k = [jnp.broadcast_to(jnp.asarray(k), (s, *k.shape)) for k in _models.weights(template)]
  a = None  # [S, d_gen, d_ref] at the current layer's input
  alignments, r2 = [], []
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=n_layers, desc=f"rainbow: {s} sample(s)", unit="layer")
  for j in range(n_layers):
    # Shape in the reference's input basis, the generated output width.
    ref_shape = (*ref_k[j].shape[:-1], gen_shapes[j][-1])
    if j in layers:
      keys = jax.random.split(jax.random.fold_in(key, j), s)
      w = jax.vmap(functools.partial(sample_kernel, factor=factors[j], shape=ref_shape))(keys)
    else:
      w = jnp.broadcast_to(ref_k[j], (s, *ref_k[j].shape))
    if a is not None:
      w = jax.vmap(realign)(w, a)
    if w.shape[1:] != gen_shapes[j]:
      raise ValueError(f"layer {j}: generated kernel {w.shape[1:]} ≠ gen_model's"
                       f" {gen_shapes[j]}.")
    gen_k[j] = w
    if j < n_layers - 1:
      gen_params = jax.vmap(lambda *ks: _models.with_weights(template, list(ks)))(*gen_k)
      cross, tphi, tpsi = cross_moments(model, gen_model, j + 1, params, gen_params, xb, wb)
      al = _align_all(cross, tphi, tpsi)
      a = al.matrix
      alignments.append(a)
      r2.append(al.r2)
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  gen_params = jax.vmap(lambda *ks: _models.with_weights(template, list(ks)))(*gen_k)
  return Generated(gen_params, alignments,
                   jnp.stack(r2, axis=1) if r2 else jnp.zeros((s, 0)))


__all__ = ["Generated", "cross_moments", "generate", "realign", "reference_factors",
           "sample_kernel", "weight_factor"]
