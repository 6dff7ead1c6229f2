"""One process of tests/test_multihost.py's K-seed training: ``python
multihost_train_worker.py PROCESS_ID NUM_PROCESSES PORT CHECKPOINT_DIR OUT.npz``.
Joins a JAX multi-controller run on localhost (2 CPU devices per process,
collectives over gloo), trains 4 seeds of an MLP on scikit-learn's digits
with the seeds sharded over every process's devices, checkpointing each
epoch, and process 0 writes the gathered parameters and history."""

import sys

import jax
import numpy as np


def main():
  pid, nproc, port, ckpt, out = sys.argv[1:6]
  pid, nproc = int(pid), int(nproc)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_num_cpu_devices", 2)
  jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)

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
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
