"""Orbax checkpoints of a K-seed `TrainState` (and its training history).

A checkpoint per completed epoch, written by orbax's `CheckpointManager`:
each is written to a temporary directory and renamed into place when
complete, so a process killed during a save leaves the previous checkpoint
as the latest one that restores (the test kills a saving process with
SIGKILL at random moments and restores). Typed PRNG keys are stored as their
raw key data and re-wrapped on restore.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rainbow_jax.train import TrainState


def _manager(directory: str, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=False, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _to_saveable(state: TrainState) -> dict:
  return {"params": state.params, "opt_state": state.opt_state,
          "data_key": jax.random.key_data(state.data_key), "epoch": state.epoch}


def save(directory: str, state: TrainState, history: dict | None = None, *,
         keep: int = 2) -> int:
  """Saves `state` as the checkpoint of its epoch; returns that epoch.

  Args:
    directory: checkpoint directory (created if missing).
    state: K-seed `TrainState`.
    history: optional JSON-serialisable dict saved alongside.
    keep: number of most recent checkpoints kept.
  """
  step = int(np.asarray(state.epoch).reshape(-1)[0])
  with _manager(directory, keep) as mngr:
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_to_saveable(state)),
        history=ocp.args.JsonSave(history or {})), force=True)
    mngr.wait_until_finished()
  return step


def latest_epoch(directory: str) -> int | None:
  """Epoch of the newest complete checkpoint, or None."""
  if not os.path.isdir(directory):
    return None
  with _manager(directory, 1000) as mngr:
    return mngr.latest_step()


def restore(directory: str, like: TrainState) -> tuple[TrainState, dict] | None:
  """Restores the newest complete checkpoint, shaped and placed like `like`.

  Args:
    directory: checkpoint directory.
    like: a `TrainState` of the same structure (e.g. a fresh `train.init`);
      its shardings are used for the restored arrays.

  Returns:
    ``(state, history)`` or None when there is no checkpoint.
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
  s = out["state"]
  impl = jax.random.key_impl(like.data_key)
  state = TrainState(params=s["params"], opt_state=s["opt_state"],
                     data_key=jax.random.wrap_key_data(jnp.asarray(s["data_key"]), impl=impl),
                     epoch=s["epoch"])
  # Restore the optimiser state's container types (orbax gives dicts/lists).
  state = state._replace(opt_state=jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(like.opt_state),
      jax.tree_util.tree_leaves(state.opt_state)))
  return state, dict(out["history"] or {})


__all__ = ["save", "restore", "latest_epoch"]
