"""Orbax checkpoints of any pytree of arrays (a K-seed
`rainbow_jax.train.TrainState`, a params dict…) and a JSON history.

A checkpoint per step (for training: per completed epoch), written by
orbax's `CheckpointManager`:
each is written to a temporary directory and renamed into place when
complete, so a process killed during a save leaves the previous checkpoint
as the latest one that restores (the test kills a saving process with
SIGKILL at random moments and restores). Typed PRNG keys are stored as their
raw key data and re-wrapped on restore. The tree is stored as Flax's state
dict (`flax.serialization.to_state_dict`: nested dicts with the field names
of named tuples), so `restore_raw` reads a checkpoint without knowing the
program that wrote it.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization


def _manager(directory: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=False, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _is_key(a: Any) -> bool:
  return isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key)


def _unkeyed(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda a: jax.random.key_data(a) if _is_key(a) else a, tree)


def _to_saveable(tree: Any) -> Any:
  return serialization.to_state_dict(_unkeyed(tree))


def _step_of(tree: Any, step: int | None) -> int:
  if step is not None:
    return int(step)
  if hasattr(tree, "epoch"):  # every seed's; this process's first shard holds one
    e = tree.epoch
    e = e.addressable_shards[0].data if isinstance(e, jax.Array) else e
    return int(np.asarray(e).reshape(-1)[0])
  raise ValueError("step: needed for a tree without an `epoch` field.")


def save(directory: str, tree: Any, history: dict | None = None, *,
         step: int | None = None, keep: int = 2) -> int:
  """Saves `tree` as the checkpoint of `step`; returns that step.

  Args:
    directory: checkpoint directory (created if missing).
    tree: a pytree of arrays (typed PRNG keys allowed), e.g. a K-seed
      `TrainState`.
    history: optional JSON-serialisable dict saved alongside.
    step: checkpoint number (default: ``tree.epoch``, the first seed's).
    keep: number of most recent checkpoints kept.
  """
  step = _step_of(tree, step)
  with _manager(directory, keep) as mngr:
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_to_saveable(tree)),
        history=ocp.args.JsonSave(history or {})), force=True)
    mngr.wait_until_finished()
  return step


def latest_epoch(directory: str) -> int | None:
  """Step (epoch) of the newest complete checkpoint, or None."""
  if not os.path.isdir(directory):
    return None
  with _manager(directory, 1000) as mngr:
    return mngr.latest_step()


def restore(directory: str, like: Any) -> tuple[Any, dict] | None:
  """Restores the newest complete checkpoint, shaped and placed like `like`.

  Args:
    directory: checkpoint directory.
    like: a tree of the same structure (e.g. a fresh `train.init`); its
      shardings are used for the restored arrays, its container types
      (named tuples, optax states) and key types are given back.

  Returns:
    ``(tree, history)`` or None when there is no checkpoint.
  """
  if not os.path.isdir(directory):
    return None
  with _manager(directory, 1000) as mngr:
    step = mngr.latest_step()
    if step is None:
      return None
    target = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
        _to_saveable(like))
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), history=ocp.args.JsonRestore()))
  # Back into `like`'s containers (orbax gives dicts and lists), keys re-wrapped.
  tree = serialization.from_state_dict(_unkeyed(like), out["state"])
  leaves = jax.tree_util.tree_leaves(tree)
  like_leaves, treedef = jax.tree_util.tree_flatten(like)
  tree = jax.tree_util.tree_unflatten(treedef, [
      jax.random.wrap_key_data(jnp.asarray(a), impl=jax.random.key_impl(b)) if _is_key(b)
      else a for a, b in zip(leaves, like_leaves)])
  return tree, dict(out["history"] or {})


def restore_raw(directory: str) -> tuple[dict, dict]:
  """The newest checkpoint in `directory` as nested dicts of numpy arrays
  (no target needed: e.g. ``raw['params']`` of a `TrainState`), and its
  history.

  Raises:
    FileNotFoundError: no complete checkpoint there.
  """
  step = latest_epoch(directory)
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}.")
  with _manager(directory, 1000) as mngr:
    out = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(), history=ocp.args.JsonRestore()))
  return jax.tree_util.tree_map(np.asarray, out["state"]), dict(out["history"] or {})


__all__ = ["save", "restore", "restore_raw", "latest_epoch"]
