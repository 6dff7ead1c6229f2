"""Flax models: the rainbow tutorial's bias-free MLP and CNN, a
CIFAR-style ResNet with BatchNorm, a small VGG, the rainbow paper's learned
scattering network, a small Vision Transformer, and a decoder-only
transformer on token ids (modular addition).

Architectures (``../shared/seeds/000_…``, PyTorch there):

* MLP ``dims = [d_in, n₁, …, classes]``: flatten, then Dense(n₁), ReLU, …,
  Dense(classes), no biases.
* CNN ``channels = [c_in, c₁, …]``: Conv(cᵢ, 5×5, stride 2, VALID), ReLU, …,
  flatten (in Flax's H, W, C order), Dense(classes), no biases.

They are ordinary linen modules: the analyses see them, like any user's
model, through `rainbow_jax.network.from_linen`.

Initialisation (``initializer=`` on the modules, ``init=`` in `make`): ``'flax'`` uses Flax's default (LeCun normal);
``'torch'`` uses PyTorch's default for Linear/Conv2d, uniform on
±1/√fan_in, so results compare with the tutorial's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rainbow_jax import wavelets

Array = jax.Array


def kernel_init(init: str):
  """Kernel initialiser by name: ``'flax'`` (LeCun normal) or ``'torch'``."""
  if init == "flax":
    return nn.initializers.lecun_normal()
  if init == "torch":
    # Uniform on ±sqrt(3·scale/fan_in) = ±1/sqrt(fan_in) with scale = 1/3.
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
  raise ValueError(f"init must be 'flax' or 'torch', got {init!r}.")


class MLP(nn.Module):
  """Bias-free ReLU MLP.

  Attributes:
    dims: ``[d_in, n₁, …, classes]``; ``d_in`` is checked against the
      flattened input.
    initializer: ``'flax'`` or ``'torch'`` kernel initialisation.
  """

  dims: Sequence[int]
  initializer: str = "torch"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Args: x ``[B, ...]`` (flattened to ``[B, d_in]``). Returns logits
    ``[B, classes]``."""
    x = x.reshape(x.shape[0], -1)
    if x.shape[-1] != self.dims[0]:
      raise ValueError(
          f"MLP expects {self.dims[0]} input features at layer 0, got"
          f" input of shape {x.shape} after flattening."
      )
    n_layers = len(self.dims) - 1
    for i, width in enumerate(self.dims[1:]):
      x = nn.Dense(width, use_bias=False, kernel_init=kernel_init(self.initializer),
                   name=f"dense_{i}")(x)
      if i < n_layers - 1:
        x = nn.relu(x)
    return x


def _check_images(x: Array, model: str) -> None:
  """A model's input must be a batch of images ``[B, H, W, C]``."""
  if x.ndim != 4:
    raise ValueError(f"{model} expects images [B, H, W, C], got {x.shape}.")


class PatchConv(nn.Module):
  """Bias-free strided conv as patches @ kernel (im2col by slicing).

  Same parameter (``kernel`` ``[K, K, C_in, C_out]``, Flax's layout and
  initialisation) and the same output as ``nn.Conv(..., padding=padding)``
  with symmetric integer `padding` (0: ``'VALID'``), computed as one matrix
  product over ``[K·K·C_in]`` patches. Under `vmap` over seeds this is a
  batched matmul, where XLA's CPU grouped convolution (what a vmapped
  ``nn.Conv`` becomes) is many times slower; and XLA:CPU's convolution
  gradients were far slower than these products even for one seed.
  """

  features: int
  kernel_size: int
  stride: int
  kernel_init: Any = nn.initializers.lecun_normal()
  padding: int = 0

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, s, p = self.kernel_size, self.stride, self.padding
    c_in = x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (k, k, c_in, self.features))
    if p:
      x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    if min(x.shape[1:3]) < k:
      raise ValueError(
          f"{self.name or 'PatchConv'}: a {k}×{k} kernel does not fit its {x.shape[1]}×"
          f"{x.shape[2]} input (padding {p} included); the layers before shrank the image too"
          " far. Use larger images, fewer or smaller-stride convs, or padding.")
    h_out = (x.shape[1] - k) // s + 1
    w_out = (x.shape[2] - k) // s + 1
    patches = jnp.concatenate(
        [x[:, i:i + s * (h_out - 1) + 1:s, j:j + s * (w_out - 1) + 1:s, :]
         for i in range(k) for j in range(k)], axis=-1)  # (kh, kw, c_in) order
    # A 2-D product: XLA's CPU gradients of a 4-D dot_general were 2× slower.
    out = patches.reshape(-1, k * k * c_in) @ kernel.reshape(k * k * c_in, self.features)
    return out.reshape(x.shape[0], h_out, w_out, self.features)


def conv_output_size(size: int, kernel: int = 5, stride: int = 2) -> int:
  """Spatial size after a VALID conv: ceil((size − kernel + 1) / stride)."""
  return -(-(size - kernel + 1) // stride)


class CNN(nn.Module):
  """Bias-free ReLU CNN: 5×5 stride-2 VALID convs, then a dense classifier.

  Attributes:
    channels: ``[c_in, c₁, …]`` conv channels (``c_in`` is checked).
    num_classes: classifier width.
    kernel_size: conv kernel size (5 in the tutorial).
    stride: conv stride (2 in the tutorial).
    conv: ``'patches'`` (`PatchConv`, default: fast under vmap on CPU) or
      ``'xla'`` (``nn.Conv``); same parameters, same function.
    initializer: ``'flax'`` or ``'torch'``.
  """

  channels: Sequence[int]
  num_classes: int = 10
  kernel_size: int = 5
  stride: int = 2
  initializer: str = "torch"
  conv: str = "patches"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Args: x ``[B, H, W, c_in]``. Returns logits ``[B, classes]``."""
    if x.ndim != 4 or x.shape[-1] != self.channels[0]:
      raise ValueError(
          f"CNN expects images [B, H, W, {self.channels[0]}] at layer 0, got {x.shape}."
      )
    k = self.kernel_size
    for i, c in enumerate(self.channels[1:]):
      init = kernel_init(self.initializer)
      if self.conv == "patches":
        x = PatchConv(c, k, self.stride, kernel_init=init, name=f"conv_{i}")(x)
      elif self.conv == "xla":
        x = nn.Conv(c, (k, k), strides=self.stride, padding="VALID",
                    use_bias=False, kernel_init=init, name=f"conv_{i}")(x)
      else:
        raise ValueError(f"conv must be 'patches' or 'xla', got {self.conv!r}.")
      x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)  # Flax order: (H, W, C).
    return nn.Dense(self.num_classes, use_bias=False,
                    kernel_init=kernel_init(self.initializer),
                    name=f"dense_{len(self.channels) - 1}")(x)


def _conv3(impl: str, features: int, stride: int, init: Any, name: str) -> nn.Module:
  """A bias-free 3×3 conv with padding 1: `PatchConv` or ``nn.Conv``."""
  if impl == "patches":
    return PatchConv(features, 3, stride, kernel_init=init, padding=1, name=name)
  if impl == "xla":
    return nn.Conv(features, (3, 3), strides=stride, padding=1, use_bias=False,
                   kernel_init=init, name=name)
  raise ValueError(f"conv must be 'patches' or 'xla', got {impl!r}.")


class ResidualBlock(nn.Module):
  """He et al.'s basic block: conv3×3–BN–ReLU–conv3×3–BN, plus the input,
  then ReLU. A block that changes the shape has stride 2 and, as in the
  paper's CIFAR networks (option A), a parameter-free shortcut: the input
  subsampled and its channels zero-padded."""

  features: int
  stride: int = 1
  kernel_init: Any = nn.initializers.he_normal()
  conv: str = "patches"

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    conv = lambda s, name: _conv3(self.conv, self.features, s, self.kernel_init, name)
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     name=name)
    h = nn.relu(norm("bn_0")(conv(self.stride, "conv_0")(x)))
    h = norm("bn_1")(conv(1, "conv_1")(h))
    if self.stride != 1 or x.shape[-1] != self.features:
      x = x[:, ::self.stride, ::self.stride, :]
      extra = self.features - x.shape[-1]
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return nn.relu(h + x)


class ResNet(nn.Module):
  """CIFAR-style ResNet of He et al. (2016, sec. 4.2): a 3×3 conv, three
  stages of `blocks` basic blocks with 16·w, 32·w, 64·w channels (stride 2
  between stages), global average pooling, a dense classifier. Depth
  6·blocks + 2: ``blocks=3`` is ResNet-20. BatchNorm after every conv; call
  with ``train=True`` while training (batch statistics, updating
  ``batch_stats``), the default ``train=False`` for inference.

  Attributes:
    blocks: basic blocks per stage (3: ResNet-20, 5: ResNet-32, 1: ResNet-8).
    width: channel multiplier w (the paper: 1).
    num_classes: classifier width.
    conv: ``'patches'`` (`PatchConv`, default) or ``'xla'`` (``nn.Conv``);
      same parameters, same function.
  """

  blocks: int = 3
  width: float = 1.0
  num_classes: int = 10
  conv: str = "patches"

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    """Args: x ``[B, H, W, C]``. Returns logits ``[B, classes]``."""
    _check_images(x, "ResNet")
    widths = [max(1, round(c * self.width)) for c in (16, 32, 64)]
    x = _conv3(self.conv, widths[0], 1, nn.initializers.he_normal(), "stem")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                             name="stem_bn")(x))
    for s, c in enumerate(widths):
      for b in range(self.blocks):
        x = ResidualBlock(c, 2 if (s > 0 and b == 0) else 1, conv=self.conv,
                          name=f"stage_{s}_block_{b}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name="classifier")(x)


class VGG(nn.Module):
  """A small VGG (Simonyan & Zisserman 2015) for 28–32 px images: stages of
  bias-free 3×3 convs (padding 1, He init) each followed, with
  ``batch_norm=True``, by a BatchNorm, then a ReLU; a 2×2 max-pool closes
  every stage; a bias-free dense classifier reads the flattened last map
  (Flax's H, W, C order). The SVR paper's section 5 compares such networks
  with and without BatchNorm (``experiments/svr_vgg.py``).

  Attributes:
    stages: conv widths per stage, e.g. ``((32, 32), (64, 64), (128, 128))``.
    num_classes: classifier width.
    batch_norm: a BatchNorm after every conv (call with ``train=True``
      while training, as `ResNet`).
    conv: ``'patches'`` (`PatchConv`, default) or ``'xla'`` (``nn.Conv``).
  """

  stages: Sequence[Sequence[int]] = ((32, 32), (64, 64), (128, 128))
  num_classes: int = 10
  batch_norm: bool = True
  conv: str = "patches"

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    """Args: x ``[B, H, W, C]``. Returns logits ``[B, classes]``."""
    _check_images(x, "VGG")
    i = 0
    for widths in self.stages:
      for c in widths:
        x = _conv3(self.conv, c, 1, nn.initializers.he_normal(), f"conv_{i}")(x)
        if self.batch_norm:
          x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn_{i}")(x)
        x = nn.relu(x)
        i += 1
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, use_bias=False, kernel_init=nn.initializers.he_normal(),
                    name=f"dense_{i}")(x)


class ScatteringNet(nn.Module):
  """Learned scattering network (Guth, Zarka & Mallat 2022), the
  architecture of the rainbow slides' accuracy experiment: fixed spatial
  filters, learned channel weights.

  Layer j: the fixed wavelet layer `rainbow_jax.wavelets.phase_collapse`
  (low-pass and L Morlet wavelets at scale 2, subsampling by 2, modulus of
  the wavelet coefficients: C → C·(1 + L) channels), then the learned 1×1
  channel mixing ``mix_j`` (bias-free, C·(1 + L) → ``channels[j]``; a
  `PatchConv` of size 1, so its kernel is ``[1, 1, C·(1 + L), channels[j]]``),
  then, with ``norm=True``, a standardisation of every channel (BatchNorm
  without scale or offset). A bias-free dense classifier reads the
  flattened last layer. Images are zero-padded to a square whose side is a
  multiple of 2^J (28 → 32 for J = 3), as the wavelets are periodic.

  Only the mixings and the classifier are learned, so the rainbow model
  applies to them as to any layer: their rows are neurons, C_ℓ their
  channel covariances.

  Attributes:
    channels: learned widths c₁…c_J (J wavelet layers).
    num_classes: classifier width.
    num_angles: L, wavelet orientations per layer. Guth et al. use 8; 4
      costs half and gave the same Fashion-MNIST accuracy after 2 epochs
      (85–87 %, channels (32, 64, 128)).
    norm: standardise each mixing's output channels.
    initializer: ``'flax'`` or ``'torch'`` kernel initialisation.
  """

  channels: Sequence[int] = (32, 64, 128)
  num_classes: int = 10
  num_angles: int = 4
  norm: bool = True
  initializer: str = "torch"

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    """Args: x ``[B, H, W, C]``. Returns logits ``[B, classes]``."""
    _check_images(x, "ScatteringNet")
    step = 2 ** len(self.channels)
    side = -(-max(x.shape[1:3]) // step) * step
    ph, pw = side - x.shape[1], side - x.shape[2]
    x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    for j, c in enumerate(self.channels):
      x = wavelets.phase_collapse(x, self.num_angles)
      x = PatchConv(c, 1, 1, kernel_init=kernel_init(self.initializer), name=f"mix_{j}")(x)
      if self.norm:
        x = nn.BatchNorm(use_running_average=not train, use_scale=False, use_bias=False,
                         momentum=0.9, name=f"norm_{j}")(x)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, use_bias=False,
                    kernel_init=kernel_init(self.initializer),
                    name=f"dense_{len(self.channels)}")(x)


class EncoderBlock(nn.Module):
  """Pre-norm transformer block (Dosovitskiy et al. 2021):
  ``x + attention(LayerNorm(x))``, then ``x + mlp_down(act(mlp_up(LayerNorm(x))))``.

  Attributes:
    heads: attention heads.
    mlp: hidden width of the MLP.
    causal: each token attends to itself and earlier tokens only (a
      decoder's block).
    norm: with the two LayerNorms (False: none, as Nanda et al. 2023's
      modular-addition transformer).
    activation: ``'gelu'`` or ``'relu'``.
  """

  heads: int
  mlp: int
  causal: bool = False
  norm: bool = True
  activation: str = "gelu"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Args: x ``[B, T, d]``. Returns ``[B, T, d]``."""
    d = x.shape[-1]
    act = {"gelu": nn.gelu, "relu": nn.relu}[self.activation]
    mask = nn.make_causal_mask(jnp.ones(x.shape[:2])) if self.causal else None
    y = nn.LayerNorm(name="norm_1")(x) if self.norm else x
    x = x + nn.MultiHeadDotProductAttention(self.heads, name="attention")(y, y, mask=mask)
    y = nn.LayerNorm(name="norm_2")(x) if self.norm else x
    y = act(nn.Dense(self.mlp, name="mlp_up")(y))
    return x + nn.Dense(d, name="mlp_down")(y)


class Transformer(nn.Module):
  """A decoder-only transformer reading token ids, its logits read at the
  last position: the modular-addition model of Power et al. (2022) and
  Nanda et al. (2023) (one block, d = 128, 4 heads, MLP 512, ReLU, no
  LayerNorm, untied embedding and unembedding).

  Weight layers in call order: ``embed`` (``[vocab, width]``, kind
  ``'embedding'``), per block ``attention/query, key, value, out``,
  ``mlp_up``, ``mlp_down``, then ``unembed`` ``[width, classes]``. The
  position embedding is a plain parameter.

  Attributes:
    vocab: token ids 0…vocab−1.
    num_classes: outputs (default: vocab).
    width, depth, heads, mlp: as `ViT` (mlp default 4·width).
    layer_norm: LayerNorms in the blocks and before the unembedding.
    activation: the MLPs' (``'relu'`` as Nanda et al.).
  """

  vocab: int
  num_classes: int | None = None
  width: int = 128
  depth: int = 1
  heads: int = 4
  mlp: int | None = None
  layer_norm: bool = False
  activation: str = "relu"

  @nn.compact
  def __call__(self, tokens: Array) -> Array:
    """Args: tokens ``[B, T]`` integer ids. Returns logits ``[B, classes]``."""
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"Transformer expects integer token ids [B, T], got {tokens.shape}"
                       f" {tokens.dtype}.")
    h = nn.Embed(self.vocab, self.width, name="embed")(tokens)
    h = h + self.param("position_embedding", nn.initializers.normal(0.02),
                       (1, tokens.shape[1], self.width))
    for i in range(self.depth):
      h = EncoderBlock(self.heads, self.mlp or 4 * self.width, causal=True,
                       norm=self.layer_norm, activation=self.activation,
                       name=f"block_{i}")(h)
    h = h[:, -1]
    if self.layer_norm:
      h = nn.LayerNorm(name="norm")(h)
    return nn.Dense(self.num_classes or self.vocab, use_bias=False, name="unembed")(h)


class ViT(nn.Module):
  """A small Vision Transformer (Dosovitskiy et al. 2021) for Fashion-MNIST
  or CIFAR-sized images: non-overlapping ``patch × patch`` patches embedded
  by one `PatchConv` (``patch_embed``, kernel ``[p, p, C, width]``), a learned
  class token and position embedding, `depth` pre-norm `EncoderBlock`\ s, a
  final LayerNorm and a dense classifier (``head``) on the class token.

  Weight layers per block, in call order: ``attention/query``, ``key``,
  ``value``, ``out`` (each ``[width, width]`` in the canonical layout, heads
  as metadata), ``mlp_up`` ``[width, mlp]`` and ``mlp_down``; the residual
  stream is ``[B, 1 + (H/p)·(W/p), width]``.

  Attributes:
    patch: patch side (the image sides must be multiples of it).
    width: token dimension d.
    depth: encoder blocks.
    heads: attention heads (must divide width).
    mlp: MLP hidden width (default 2·width).
    num_classes: classifier width.
  """

  patch: int = 7
  width: int = 64
  depth: int = 4
  heads: int = 4
  mlp: int | None = None
  num_classes: int = 10

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Args: x ``[B, H, W, C]``. Returns logits ``[B, classes]``."""
    _check_images(x, "ViT")
    if x.shape[1] % self.patch or x.shape[2] % self.patch:
      raise ValueError(f"ViT: image sides {x.shape[1:3]} are not multiples of patch="
                       f"{self.patch}; pick a patch size that divides them.")
    if self.width % self.heads:
      raise ValueError(f"ViT: heads={self.heads} does not divide width={self.width}.")
    h = PatchConv(self.width, self.patch, self.patch, name="patch_embed")(x)
    h = h.reshape(h.shape[0], -1, self.width)
    cls = self.param("cls_token", nn.initializers.zeros, (1, 1, self.width))
    h = jnp.concatenate([jnp.broadcast_to(cls, (h.shape[0], 1, self.width)), h], axis=1)
    h = h + self.param("position_embedding", nn.initializers.normal(0.02),
                       (1, h.shape[1], self.width))
    for i in range(self.depth):
      h = EncoderBlock(self.heads, self.mlp or 2 * self.width, name=f"block_{i}")(h)
    h = nn.LayerNorm(name="norm")(h[:, 0])
    return nn.Dense(self.num_classes, name="head")(h)


def make(arch: str, input_shape: Sequence[int], num_classes: int, *,
         widths: Sequence[int] | None = None, init: str = "torch",
         conv: str = "patches", width: float = 1.0) -> nn.Module:
  """Builds the tutorial's MLP or CNN, ResNet-20 or a learned scattering
  network for images of ``input_shape`` (H, W, C).

  Args:
    arch: ``'mlp'``, ``'cnn'``, ``'resnet20'`` (`ResNet`; He init, its
      own, whatever `init` says), ``'scattering'`` (`ScatteringNet`) or
      ``'vit'`` (`ViT`: Flax's own initialisers, whatever `init` says).
    input_shape: ``(H, W, C)`` of one image.
    num_classes: number of classes.
    widths: hidden widths (MLP, default ``[512, 256]``), conv channels
      (CNN, default ``[32, 64]``) or learned mixing widths (scattering,
      default ``[32, 64, 128]``), or the ViT's ``[width, depth, heads]``
      (default ``[64, 4, 4]``; patch 7 for 28×28 images, else 4).
    init: ``'torch'`` (default, as the tutorial) or ``'flax'``.
    conv: CNN convolution implementation (see `CNN`).
    width: ResNet channel multiplier.
  """
  h, w, c = input_shape
  if arch == "mlp":
    widths = [512, 256] if widths is None else list(widths)
    return MLP(dims=(h * w * c, *widths, num_classes), initializer=init)
  if arch == "cnn":
    widths = [32, 64] if widths is None else list(widths)
    return CNN(channels=(c, *widths), num_classes=num_classes, initializer=init,
               conv=conv)
  if arch == "resnet20":
    return ResNet(blocks=3, width=width, num_classes=num_classes, conv=conv)
  if arch == "scattering":
    widths = [32, 64, 128] if widths is None else list(widths)
    return ScatteringNet(channels=tuple(widths), num_classes=num_classes, initializer=init)
  if arch == "vit":
    width, depth, heads = [64, 4, 4] if widths is None else list(widths)
    return ViT(patch=7 if h % 7 == 0 and w % 7 == 0 else 4, width=width, depth=depth,
               heads=heads, num_classes=num_classes)
  raise ValueError(f"arch must be 'mlp', 'cnn', 'resnet20', 'scattering' or 'vit', got"
                   f" {arch!r}.")


__all__ = ["MLP", "CNN", "EncoderBlock", "PatchConv", "ResNet", "ResidualBlock", "ScatteringNet",
           "Transformer", "VGG", "ViT", "make", "kernel_init", "conv_output_size"]
