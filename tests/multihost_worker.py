"""One process of tests/test_multihost.py: ``python multihost_worker.py
PROCESS_ID NUM_PROCESSES PORT OUT_DIR``. Joins a JAX multi-controller run on
localhost (2 CPU devices per process, collectives over gloo), then

1. accumulates the moments of its own shard of scikit-learn's digits and
   merges them across processes (process 0 writes ``merged.npz``);
2. trains 4 seeds of an MLP on digits with the seeds sharded over every
   process's devices, checkpointing each epoch to ``OUT_DIR/ckpt``
   (process 0 writes the gathered parameters and history, ``trained.npz``).
"""

import os
import sys

import jax
import numpy as np


def merge_moments(pid, nproc, out):
  from sklearn.datasets import load_digits

  from rainbow_jax import moments, similarity

  x = load_digits().data.astype(np.float32)  # [1797, 64] pixels
  proj = np.random.default_rng(0).normal(size=(64, 24)).astype(np.float32) / 8
  mine = np.array_split(np.arange(len(x)), nproc)[pid]  # this host's shard only
  batches = [x[mine[i:i + 100]] for i in range(0, len(mine), 100)]
  local = moments.accumulate(batches, lambda b: [b, jax.numpy.tanh(b @ proj)], cross=[(0, 1)])
  merged = moments.process_merge(local)
  if pid == 0:
    np.savez(out, count=np.asarray(merged.count[0]), local_count=np.asarray(local.count[0]),
             cov_x=np.asarray(moments.covariance(merged, 0, 0, centered=True)),
             cov_xy=np.asarray(moments.covariance(merged, 0, 1, centered=True)),
             second_y=np.asarray(moments.covariance(merged, 1, 1)),
             cka=np.asarray(similarity.linear_cka_moments(merged, 0, 1)),
             cca=np.asarray(similarity.cca_moments(merged, 0, 1, epsilon=1e-4).coefficients),
             processes=jax.process_count())


def train_seeds(pid, nproc, ckpt, out):
  from multihost_setup import digits_mlp  # this script's directory
  from rainbow_jax import train

  model, (x, y, xt, yt), seeds, epochs = digits_mlp()
  assert len(jax.devices()) == 2 * nproc and len(jax.local_devices()) == 2
  state, hist = train.fit(model, x, y, xt, yt, seeds=seeds, epochs=epochs,
                          devices=jax.devices(), checkpoint_dir=ckpt, progress=False)
  # Each process holds only its own devices' seeds.
  local = {int(s.index[0].start or 0) for s in state.epoch.addressable_shards}
  params = train.to_host(state.params)
  if pid == 0:
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    np.savez(out, processes=jax.process_count(), local_seed_slots=len(local),
             test_accuracy=hist.test_accuracy, loss=hist.loss, **flat)


def main():
  pid, nproc, port, out_dir = sys.argv[1:5]
  pid, nproc = int(pid), int(nproc)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_num_cpu_devices", 2)
  jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)
  merge_moments(pid, nproc, os.path.join(out_dir, "merged.npz"))
  train_seeds(pid, nproc, os.path.join(out_dir, "ckpt"), os.path.join(out_dir, "trained.npz"))
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
