"""K seeds trained as one jitted, vmapped program.

One seed's epoch is a pure function — a `lax.scan` over minibatches drawn
from an on-device dataset in that seed's own order — and K seeds are that
function under `jax.vmap` (or `lax.map` on CPU, see `train_epoch`), so a
whole epoch of K networks is one XLA program. Seed ``s`` gets ``jax.random.key(s)``, split into an init key and a
data-order key, so a seed trained inside a batch of K gives the same
parameters (to float tolerance) as the same seed trained alone.

Defaults are the tutorial's: SGD with momentum 0.9, learning rate 0.01,
batch 128, 5 epochs, cross-entropy, the last partial batch kept (masked).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rainbow_jax import _axis, _batches, _compile, moments

Array = jax.Array


class TrainState(NamedTuple):
  """State of K seeds (every leaf has a leading ``[K]`` axis).

  Attributes:
    params: the models' parameters.
    opt_state: optax state.
    data_key: ``[K]`` per-seed data-order keys (typed PRNG keys).
    epoch: ``[K]`` int32, epochs completed.
    batch_stats: the models' BatchNorm statistics (None for a model
      without BatchNorm).
  """

  params: Any
  opt_state: Any
  data_key: Array
  epoch: Array
  batch_stats: Any = None

  @property
  def variables(self) -> dict:
    """``{'params': …, 'batch_stats': …}`` of the K seeds, what
    ``model.apply`` and `rainbow_jax.network` take (vmapped or `select`-ed)."""
    if self.batch_stats is None:
      return {"params": self.params}
    return {"params": self.params, "batch_stats": self.batch_stats}


class EpochMetrics(NamedTuple):
  """Per-seed training metrics of one epoch: ``loss [K]``, ``accuracy [K]`` (%)."""

  loss: Array
  accuracy: Array


def sgd(learning_rate: float = 0.01, momentum: float = 0.9):
  """The tutorial's optimiser (PyTorch SGD with momentum, no dampening)."""
  return optax.sgd(learning_rate, momentum=momentum)


def adamw(learning_rate: float = 1e-3, *, weight_decay: float = 0.05, warmup_steps: int = 0,
          total_steps: int | None = None) -> optax.GradientTransformation:
  """AdamW with a linear warm-up over `warmup_steps` and, given
  `total_steps`, a cosine decay to 0 by then (the usual ViT recipe)."""
  if total_steps is None:
    lr = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
  else:
    lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1),
                                            max(total_steps, warmup_steps + 1))
  return optax.adamw(lr, weight_decay=weight_decay)


def _path_name(keypath) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in keypath)


def _frozen_mask(params: Any, frozen: Sequence[str]) -> Any:
  """A tree of Python bools like `params`: True under the `frozen` paths (a
  params key path joined by ``/``: ``'Dense_0'`` is that layer's kernel and
  bias, ``'Dense_0/kernel'`` one array). Raises for a path that names no
  parameter."""
  paths = [p.strip("/") for p in frozen]
  under = lambda name, p: name == p or name.startswith(p + "/")
  names = [_path_name(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  missing = [p for p in paths if not any(under(n, p) for n in names)]
  if missing:
    raise ValueError(f"frozen: no parameter under {missing}; parameters: {names}.")
  return jax.tree_util.tree_map_with_path(
      lambda kp, _: any(under(_path_name(kp), p) for p in paths), params)


def seed_keys(seeds: Sequence[int]) -> Array:
  """``[K]`` typed keys, one per seed, ``jax.random.key(seed)`` (one
  compiled program for any K)."""
  seeds = [int(s) for s in seeds]
  if all(-2**31 <= s < 2**31 for s in seeds):
    return _keys(np.asarray(seeds, np.int32))
  return jnp.stack([jax.random.key(s) for s in seeds])


_keys = _compile.once(jax.vmap(jax.random.key))


def init(model: nn.Module, tx: optax.GradientTransformation, seeds: Sequence[int],
         input_shape: Sequence[int], input_dtype: Any = jnp.float32) -> TrainState:
  """Initialises K seeds: params from each seed's init key, and optimiser state.

  Args:
    model: a Flax module mapping ``[B, *input_shape]`` to logits.
    tx: optax optimiser.
    seeds: K integer seeds.
    input_shape: one example's shape, e.g. ``(28, 28, 1)``.
    input_dtype: its dtype (an integer type for a model of token ids).
  """
  if len(seeds) == 0:
    raise ValueError("need at least one seed.")

  def one(key):
    init_key, data_key = jax.random.split(key)
    variables = model.init(init_key, jnp.zeros((1, *input_shape), input_dtype))
    params = variables["params"]
    return TrainState(params, tx.init(params), data_key, jnp.zeros((), jnp.int32),
                      variables.get("batch_stats"))

  return _compile.once(jax.vmap(one))(seed_keys(seeds))


def _check_data(model, x, y, num_classes=None):
  if x.ndim >= 1 and x.shape[0] == 0:
    raise ValueError(f"no examples: images of shape {x.shape}.")
  if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
    raise ValueError(f"need images [N, ...] and labels [N], got {x.shape} and {y.shape}.")
  if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
    raise TypeError(f"inputs must be floating (images) or integer (token ids), got {x.dtype}.")
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise TypeError(f"labels must be integers, got {y.dtype}.")
  # Shape check against the model (raises the model's own ValueError).
  logits = jax.eval_shape(
      lambda a: model.apply(model.init(jax.random.key(0), a), a),
      jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype))
  classes = logits.shape[-1]
  yh = np.asarray(y)  # on the host: no program
  lo, hi = int(yh.min()), int(yh.max())
  if lo < 0 or hi >= classes:
    raise ValueError(f"labels must lie in [0, {classes}), got range [{lo}, {hi}].")
  return classes


def _sgd_step(model, tx, frozen, carry, xb, yb, mb):
  """One optimiser step of one seed on a batch with valid-example mask `mb`:
  ``carry = (params, opt_state, batch_stats)`` → (new carry, (Σ loss, #correct)).
  Parameters under the `frozen` paths are constants of the loss (their
  gradients, and the backward pass below the lowest trained layer, are
  never computed; `tx` sees zero for them) and their updates are 0."""
  params, opt_state, batch_stats = carry
  mask = _frozen_mask(params, frozen) if frozen else None

  def loss_fn(params, batch_stats):
    if mask is not None:
      params = jax.tree_util.tree_map(lambda p, f: jax.lax.stop_gradient(p) if f else p,
                                      params, mask)
    if batch_stats is None:
      logits = model.apply({"params": params}, xb)
    else:  # BatchNorm: batch statistics, running averages updated (Flax's convention)
      logits, new = model.apply({"params": params, "batch_stats": batch_stats}, xb,
                                train=True, mutable=["batch_stats"])
      batch_stats = new["batch_stats"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
    mbf = mb.astype(ce.dtype)
    loss = jnp.sum(ce * mbf) / jnp.sum(mbf)
    correct = jnp.sum((jnp.argmax(logits, -1) == yb) * mbf)
    return loss, (jnp.sum(ce * mbf), correct, batch_stats)

  (_, (loss_sum, correct, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(params, batch_stats)
  updates, opt_state = tx.update(grads, opt_state, params)
  if mask is not None:
    updates = jax.tree_util.tree_map(lambda u, f: jnp.zeros_like(u) if f else u, updates, mask)
  params = optax.apply_updates(params, updates)
  return (params, opt_state, batch_stats), (loss_sum, correct)


def _epoch_one_seed(model, tx, batch_size, frozen, state: TrainState, x, y, order_key):
  """One epoch of one seed; `order_key` fixes this epoch's data order."""
  n = x.shape[0]
  num_batches = -(-n // batch_size)
  perm = jax.random.permutation(order_key, n)
  pad = num_batches * batch_size - n
  idx = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)]).reshape(num_batches, batch_size)
  valid = (jnp.arange(num_batches * batch_size) < n).reshape(num_batches, batch_size)

  def step(carry, batch):
    ib, mb = batch
    return _sgd_step(model, tx, frozen, carry, x[ib], y[ib], mb)

  (params, opt_state, batch_stats), (losses, corrects) = jax.lax.scan(
      step, (state.params, state.opt_state, state.batch_stats), (idx, valid))
  metrics = EpochMetrics(jnp.sum(losses) / n, 100.0 * jnp.sum(corrects) / n)
  return state._replace(params=params, opt_state=opt_state, epoch=state.epoch + 1,
                        batch_stats=batch_stats), metrics


def resolve_stack_axis(stack_axis: str) -> str:
  """``'auto'`` → ``'vmap'`` on GPU/TPU, ``'map'`` on CPU."""
  return _axis.resolve(stack_axis)


@functools.partial(jax.jit, static_argnames=("model", "tx", "batch_size", "shared_order",
                                             "stack_axis", "frozen"))
def train_epoch(state: TrainState, x: Array, y: Array, *, model: nn.Module,
                tx: optax.GradientTransformation, batch_size: int = 128,
                shared_order: bool = False, stack_axis: str = "auto",
                frozen: tuple[str, ...] = ()) -> tuple[TrainState, EpochMetrics]:
  """One epoch of K seeds as one program.

  Args:
    state: K-seed `TrainState`.
    x: ``[N, ...]`` training images (on device, shared by all seeds).
    y: ``[N]`` int labels.
    model, tx: the Flax module and optax optimiser (static).
    batch_size: minibatch size; the last partial batch is kept, masked.
    shared_order: all seeds use seed 0's data order (default: each its own).
    stack_axis: how the one-seed epoch is lifted to K seeds, inside the same
      compiled program: ``'vmap'`` batches the seeds (what pays on GPU/TPU
      and what shards over devices), ``'map'`` runs them in turn with
      `lax.map` (on CPU, vmapped convolutions become batched small products
      that ran 2× slower per seed than one seed alone); ``'auto'`` picks
      ``'map'`` on CPU, ``'vmap'`` elsewhere. Same numbers either way.
    frozen: parameter paths held fixed for every seed (see `fit`).

  Returns:
    The new state and `EpochMetrics` with per-seed ``[K]`` training loss and
    accuracy over the epoch (running, as the tutorial prints them).
  """
  order = jax.vmap(jax.random.fold_in)(state.data_key, state.epoch)
  if shared_order:
    order = jnp.broadcast_to(order[0], order.shape)
  run = functools.partial(_epoch_one_seed, model, tx, batch_size, tuple(frozen))
  return _axis.over_stack(lambda a: run(a[0], x, y, a[1]), (state, order),
                          resolve_stack_axis(stack_axis))


@functools.partial(jax.jit, static_argnames=("model", "batch_size", "stack_axis"))
def accuracy(params: Any, x: Array, y: Array, *, model: nn.Module,
             batch_size: int = 1000, stack_axis: str = "auto") -> Array:
  """Test accuracy (%) of K models at once (BatchNorm in inference mode).

  Args:
    params: K-seed parameters (leading ``[K]`` axis), or K-seed variables
      ``{'params': …, 'batch_stats': …}`` (`TrainState.variables`).
    x: ``[N, ...]`` images; y: ``[N]`` labels.
    model: the Flax module (static).
    batch_size: evaluation batch (memory only; results do not depend on it).
    stack_axis: ``'auto'``, ``'vmap'`` or ``'map'`` (see `train_epoch`).

  Returns:
    ``[K]`` accuracies in percent.
  """
  n = x.shape[0]
  xp, yp = _batches.eval_batches(x, y, batch_size)

  variables = params if isinstance(params, dict) and "params" in params else {
      "params": params}

  def count(variables):
    return _batches.count_correct(model.apply, variables, xp, yp)

  return 100.0 * _axis.over_stack(count, variables, resolve_stack_axis(stack_axis)) / n


class History(NamedTuple):
  """Per-epoch records: ``loss``/``train_accuracy``/``test_accuracy`` are
  ``[epochs, K]`` numpy arrays; ``seconds`` ``[epochs]``."""

  loss: np.ndarray
  train_accuracy: np.ndarray
  test_accuracy: np.ndarray
  seconds: np.ndarray


def _check_finite_loss(loss: np.ndarray, seeds: Sequence[int], epoch: int) -> None:
  if not np.all(np.isfinite(loss)):
    bad = [int(s) for s, l in zip(seeds, loss) if not np.isfinite(l)]
    raise ValueError(f"non-finite training loss at epoch {epoch} for seed(s) {bad};"
                     " lower the learning rate or check the data.")


def _history(rec: dict, num_seeds: int) -> History:
  """`History` of the per-epoch records ``loss``/``train``/``test``/``sec``."""
  stack = lambda v: np.stack(v) if v else np.zeros((0, num_seeds))
  return History(stack(rec["loss"]), stack(rec["train"]), stack(rec["test"]),
                 np.asarray(rec["sec"]))


def _on_device(a: Any) -> Array:
  """`jnp.asarray`, with numpy arrays copied by `jax.device_put` (JAX 0.10's
  `jnp.asarray` compiles a copy program per numpy shape)."""
  return jax.device_put(a) if isinstance(a, np.ndarray) else jnp.asarray(a)


def fit(model: nn.Module, x_train, y_train, x_test=None, y_test=None, *,
        seeds: Sequence[int] = (0,), epochs: int = 5, batch_size: int = 128,
        learning_rate: float = 0.01, momentum: float = 0.9,
        shared_order: bool = False, state: TrainState | None = None,
        checkpoint_dir: str | None = None, devices: Sequence[Any] | None = None,
        stack_axis: str = "auto", callback: Any = None,
        progress: bool = True, tx: optax.GradientTransformation | None = None,
        frozen: Sequence[str] = ()) -> tuple[TrainState, History]:
  """Trains K seeds for `epochs` epochs, one vmapped program per epoch.

  Args:
    model: Flax module.
    x_train, y_train: training data ``[N, ...]``, ``[N]`` (moved to device once).
    x_test, y_test: optional test data, evaluated after every epoch.
    seeds: K integer seeds.
    epochs: total epochs; a resumed run trains only the missing ones.
    batch_size, learning_rate, momentum: the tutorial's defaults.
    shared_order: every seed sees the same data order.
    state: resume from this state instead of initialising.
    checkpoint_dir: save an orbax checkpoint after every epoch, and resume
      from the newest one found there (same seeds and data required).
    devices: shard the K seeds over these devices (K must be a multiple of
      their number, and the seeds are vmapped); the data is replicated.
      Default: one device.
    stack_axis: ``'auto'``, ``'vmap'`` or ``'map'`` (see `train_epoch`).
    callback: ``callback(epoch, state, metrics)`` after every epoch (after
      its checkpoint is saved).
    progress: per-epoch progress bar with per-seed loss/accuracy.
    tx: the optax optimiser (default: the tutorial's `sgd` with
      `learning_rate` and `momentum`, which are then ignored).
    frozen: parameter paths held fixed, for every seed (SVCCA's freeze
      training): a params key path joined by ``/`` (``'dense_0'`` is that
      layer's kernel and bias, ``'dense_0/kernel'`` one array). They are
      constants of the loss, so their gradients and the backward pass below
      the lowest trained layer are not computed: a frozen bottom layer
      saves its backward time. `tx` sees a zero gradient for them and their
      update is 0; the other parameters train exactly as with `tx` alone
      (element-wise optimisers: SGD, momentum, Adam, AdamW). Each distinct
      set compiles its own epoch program.

  A model with BatchNorm is trained as Flax's examples do: called with
  ``train=True`` and ``mutable=['batch_stats']``; its statistics are carried
  in ``TrainState.batch_stats`` and evaluation uses them (``train=False``).

  Returns:
    The final `TrainState` and the `History`.

  Raises:
    ValueError: labels out of range, images of the wrong shape for the model,
      or a non-finite loss (names the epoch and seeds).
  """
  x_train, y_train = _on_device(x_train), _on_device(y_train)
  _check_data(model, x_train, y_train)
  if x_test is not None:
    x_test, y_test = _on_device(x_test), _on_device(y_test)
    _check_data(model, x_test, y_test)
  tx = sgd(learning_rate, momentum) if tx is None else tx
  if state is None:
    state = init(model, tx, seeds, x_train.shape[1:], x_train.dtype)
  frozen = tuple(frozen)
  if frozen:
    _frozen_mask(state.params, frozen)  # every path names a parameter
  if devices is not None:
    state = shard_seeds(state, devices)
    stack_axis = "vmap"
    # The data, replicated over the same mesh (over several processes, jit
    # needs every argument global).
    everywhere = jax.sharding.NamedSharding(_mesh(devices), jax.sharding.PartitionSpec())
    x_train, y_train = _place((x_train, y_train), everywhere)
    if x_test is not None:
      x_test, y_test = _place((x_test, y_test), everywhere)
  rec = {"loss": [], "train": [], "test": [], "sec": []}
  if checkpoint_dir is not None:
    from rainbow_jax import checkpoint  # orbax, imported on demand (it never imports train)
    restored = checkpoint.restore(checkpoint_dir, state)
    if restored is not None:
      state, saved = restored
      if saved.get("seeds", list(seeds)) != [int(v) for v in seeds]:
        raise ValueError(f"checkpoint in {checkpoint_dir} is of seeds {saved['seeds']},"
                         f" not {list(seeds)}; use another directory.")
      rec = {k: [np.asarray(v) for v in saved.get(k, [])] for k in rec}
  done = int(to_host(state.epoch)[0])
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=epochs, initial=min(done, epochs),
               desc=f"training {len(seeds)} seed(s)", unit="epoch")
  for _ in range(max(epochs - done, 0)):
    t0 = time.perf_counter()
    epoch = done + 1
    new_state, m = train_epoch(state, x_train, y_train, model=model, tx=tx,
                               batch_size=batch_size, shared_order=shared_order,
                               stack_axis=stack_axis, frozen=frozen)
    loss, train_acc = to_host((m.loss, m.accuracy))
    _check_finite_loss(loss, seeds, epoch)
    state, done = new_state, epoch
    rec["loss"].append(loss)
    rec["train"].append(train_acc)
    if x_test is not None:
      rec["test"].append(to_host(accuracy(state.variables, x_test, y_test, model=model,
                                          stack_axis=stack_axis)))
    rec["sec"].append(time.perf_counter() - t0)
    if checkpoint_dir is not None:
      history = {k: np.asarray(v).tolist() for k, v in rec.items()}
      checkpoint.save(checkpoint_dir, state, dict(history, seeds=[int(v) for v in seeds]),
                      step=epoch)
    if callback is not None:
      callback(epoch, state, m)
    if bar is not None:
      shown = rec["test"][-1] if rec["test"] else rec["train"][-1]
      bar.set_postfix_str(
          f"loss {' '.join(f'{v:.3f}' for v in loss)}"
          f" | {'test' if rec['test'] else 'train'} acc"
          f" {' '.join(f'{v:.1f}' for v in shown)}")
      bar.update(1)
  if bar is not None:
    bar.close()
  return state, _history(rec, len(seeds))


@functools.partial(jax.jit, static_argnames=("model", "tx", "classes", "stack_axis"),
                   donate_argnums=(0,))
def _stream_step(state: TrainState, xb: Array, yb: Array, mb: Array, *, model: nn.Module,
                 tx: optax.GradientTransformation, classes: int, stack_axis: str):
  """One step of K seeds (lifted by `stack_axis`) on one shared batch; also
  counts the batch's labels outside [0, classes)."""
  (params, opt_state, batch_stats), sums = _axis.over_stack(
      lambda carry: _sgd_step(model, tx, (), carry, xb, yb, mb),
      (state.params, state.opt_state, state.batch_stats), resolve_stack_axis(stack_axis))
  bad = jnp.sum(((yb < 0) | (yb >= classes)) & mb)
  return state._replace(params=params, opt_state=opt_state, batch_stats=batch_stats), sums, bad


def fit_stream(model: nn.Module, epoch_batches: Any, *, seeds: Sequence[int] = (0,),
               epochs: int = 1, x_test=None, y_test=None, learning_rate: float = 0.01,
               momentum: float = 0.9, state: TrainState | None = None,
               tx: optax.GradientTransformation | None = None, stack_axis: str = "auto",
               progress: bool = True) -> tuple[TrainState, History]:
  """Trains K seeds on data streamed from the host (larger than memory).

  Every seed sees the same batches, in the stream's order (`fit`'s
  ``shared_order=True``); one compiled step (all K seeds) per batch,
  a ragged last batch padded and masked so it reuses that step. Memory is
  the stream's few batches in flight, whatever the dataset's size.

  Args:
    model: Flax module.
    epoch_batches: ``epoch_batches(epoch)`` → an iterable of ``(images
      [B, ...], labels [B])`` for that epoch (0-based), e.g.
      ``lambda e: streaming.batches(source, 128, shuffle_seed=e)``.
    seeds, epochs, learning_rate, momentum, tx, state: as in `fit`.
    x_test, y_test: optional in-memory test set, evaluated after each epoch.
    stack_axis: ``'auto'``, ``'vmap'`` or ``'map'`` (see `train_epoch`).
    progress: a progress bar over each epoch's batches.

  Returns:
    The final `TrainState` and the `History`.

  Raises:
    ValueError: an empty epoch, a batch larger than the first, labels out of
      range, or a non-finite loss.
  """
  tx = sgd(learning_rate, momentum) if tx is None else tx
  resolve_stack_axis(stack_axis)  # a wrong name fails before any data is read
  rec = {"loss": [], "train": [], "test": [], "sec": []}
  if x_test is not None:
    x_test, y_test = jnp.asarray(x_test), jnp.asarray(y_test)
  done = 0 if state is None else int(to_host(state.epoch)[0])
  if state is not None:  # the steps donate their state: keep the caller's intact
    state = jax.tree_util.tree_map(jnp.copy, state)
  classes = None
  for epoch in range(done, epochs):
    t0 = time.perf_counter()
    loss_sum = correct = bad = 0
    n, size, steps = 0, None, 0
    it = epoch_batches(epoch)
    if progress:
      from tqdm.auto import tqdm
      it = tqdm(it, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
    for xb, yb in it:
      b = int(xb.shape[0])
      if size is None:
        size = b
        if state is None:
          state = init(model, tx, seeds, xb.shape[1:], xb.dtype)
        if classes is None:  # shapes and dtypes, once (labels: counted in every step)
          classes = _check_data(model, jnp.asarray(xb[:1]), jnp.asarray(yb[:1]))
      if b > size:
        raise ValueError(f"batch of {b} after a first batch of {size}: only the last"
                         " batch may differ (be smaller).")
      if not b:
        continue
      mb = np.arange(size) < b
      if b < size:  # ragged last batch: pad, mask, same compiled step
        pad = [(0, size - b)] + [(0, 0)] * (xb.ndim - 1)
        xb, yb = jnp.pad(jnp.asarray(xb), pad), jnp.pad(jnp.asarray(yb), [(0, size - b)])
      state, (ls, cs), nb = _stream_step(state, xb, yb, jnp.asarray(mb), model=model, tx=tx,
                                         classes=classes, stack_axis=stack_axis)
      loss_sum, correct, bad, n = loss_sum + ls, correct + cs, bad + nb, n + b
      steps += 1
      if steps % moments.IN_FLIGHT == 0:  # bound the batches queued ahead of the device
        jax.block_until_ready(loss_sum)
    if size is None:
      raise ValueError(f"epoch {epoch}'s stream is empty.")
    state = state._replace(epoch=state.epoch + 1)
    loss, acc, bad = to_host((loss_sum / n, 100.0 * correct / n, bad))
    if bad:
      raise ValueError(f"{int(bad)} label(s) of epoch {epoch + 1} lie outside [0, {classes}).")
    _check_finite_loss(loss, seeds, epoch + 1)
    rec["loss"].append(loss)
    rec["train"].append(acc)
    if x_test is not None:
      rec["test"].append(to_host(accuracy(state.variables, x_test, y_test, model=model,
                                          stack_axis=stack_axis)))
    rec["sec"].append(time.perf_counter() - t0)
  return state, _history(rec, len(seeds))


def _place(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """`jax.device_put` of a pytree that every process holds whole, also onto
  devices of other processes (a multi-process mesh): each process then
  supplies its own devices' slices (typed PRNG keys via their key data)."""
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)

  def one(a):
    if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(a)),
                                      impl=jax.random.key_impl(a))
    host = np.asarray(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])
  return jax.tree_util.tree_map(one, tree)


def to_host(tree: Any) -> Any:
  """A pytree of arrays as numpy, whole on every process: arrays sharded over
  several processes' devices are all-gathered (every process must call)."""
  from jax.experimental import multihost_utils

  def one(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)
  return jax.tree_util.tree_map(one, tree)


def _mesh(devices: Sequence[Any]) -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.asarray(list(devices)), ("seeds",))


def shard_seeds(tree: Any, devices: Sequence[Any]) -> Any:
  """Places a K-seed pytree with its leading seed axis sharded over `devices`.

  Jitted training and evaluation then run each device's seeds locally
  (GSPMD partitions the vmapped program); the results equal one device's.
  `devices` may span several processes (``jax.devices()`` after
  `jax.distributed.initialize`): every process passes the same whole tree
  (`init` is deterministic in the seeds) and keeps its own seeds' slices.
  """
  devices = list(devices)
  k = jax.tree_util.tree_leaves(tree)[0].shape[0]
  if k % len(devices):
    raise ValueError(f"{k} seeds cannot be split evenly over {len(devices)} devices.")
  return _place(tree, jax.sharding.NamedSharding(_mesh(devices),
                                                 jax.sharding.PartitionSpec("seeds")))


def select(state_or_params: Any, k: int) -> Any:
  """Seed ``k``'s slice of a K-seed pytree (one compiled program per tree
  structure; ``k`` is traced)."""
  return _select(state_or_params, k)


@jax.jit
def _select(tree: Any, k: Array) -> Any:
  return jax.tree_util.tree_map(lambda a: a[k], tree)


__all__ = ["TrainState", "EpochMetrics", "History", "sgd", "adamw", "seed_keys", "init",
           "resolve_stack_axis", "train_epoch", "accuracy", "fit", "fit_stream", "select",
           "shard_seeds", "to_host"]
