"""Two JAX processes on localhost (jax.distributed, CPU collectives over
gloo), each reading only its shard of the data: the merged statistics equal
one process's, and numpy's on the whole data."""

import os
import socket
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

from rainbow_jax import moments, similarity

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_merge_to_the_single_process_statistics(tmp_path):
  out, port, nproc = tmp_path / "merged.npz", _free_port(), 2
  env = dict(os.environ)
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "multihost_worker.py"),
                             str(p), str(nproc), str(port), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for p in range(nproc)]
  logs = [p.communicate(timeout=120)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  got = np.load(out)
  assert int(got["processes"]) == 2
  x = load_digits().data.astype(np.float32)
  assert int(got["count"]) == len(x) and int(got["local_count"]) == len(x) // 2 + 1
  proj = np.random.default_rng(0).normal(size=(64, 24)).astype(np.float32) / 8  # the worker's
  y = np.tanh(x @ proj)
  # Against numpy on the whole data (float64).
  np.testing.assert_allclose(got["cov_x"], np.cov(x.astype(np.float64), rowvar=False, bias=True),
                             rtol=1e-5, atol=1e-4)
  full = np.cov(np.concatenate([x, y], 1).astype(np.float64), rowvar=False, bias=True)
  np.testing.assert_allclose(got["cov_xy"], full[:64, 64:], atol=1e-5)
  np.testing.assert_allclose(got["second_y"], y.T.astype(np.float64) @ y / len(y), atol=1e-5)
  # Against one process accumulating everything.
  one = moments.accumulate([x[i:i + 100] for i in range(0, len(x), 100)],
                           lambda b: [b, jnp.tanh(b @ proj)], cross=[(0, 1)])
  np.testing.assert_allclose(got["cka"], similarity.linear_cka_moments(one, 0, 1), rtol=1e-5)
  np.testing.assert_allclose(got["cca"],
                             similarity.cca_moments(one, 0, 1, epsilon=1e-4).coefficients,
                             atol=1e-4)
