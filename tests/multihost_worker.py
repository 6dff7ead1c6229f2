"""One process of tests/test_multihost.py: ``python multihost_worker.py
PROCESS_ID NUM_PROCESSES PORT OUT.npz``. Joins a JAX multi-controller run on
localhost (CPU collectives over gloo), accumulates the moments of its own
shard of scikit-learn's digits, merges them across processes, and process 0
writes what it got."""

import sys

import jax
import numpy as np


def main():
  pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_num_cpu_devices", 1)
  jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)

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
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
