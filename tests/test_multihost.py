"""Two JAX processes on localhost (jax.distributed, CPU collectives over
gloo): each reading only its shard of the data, the merged statistics equal
one process's and numpy's on the whole data; K seeds trained sharded over
both processes' devices equal one process's training, and their orbax
checkpoint restores and resumes in one process."""

import os
import shutil
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


def test_two_processes_merge_statistics_and_train_sharded_seeds_like_one(tmp_path):
  """One run of tests/multihost_worker.py in 2 processes (starting them is
  most of the cost), checked twice."""
  out, port, nproc = tmp_path / "run", _free_port(), 2
  out.mkdir()
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "multihost_worker.py"),
                             str(p), str(nproc), str(port), str(out)], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for p in range(nproc)]
  logs = [p.communicate(timeout=180)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  _merged_statistics_equal_one_process(out)
  _sharded_training_equals_one_process_and_restores(out, tmp_path)


def _merged_statistics_equal_one_process(two_processes):
  out = two_processes / "merged.npz"
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


def _sharded_training_equals_one_process_and_restores(two_processes, tmp_path):
  import jax

  from multihost_setup import digits_mlp
  from rainbow_jax import checkpoint, train

  ckpt = tmp_path / "ckpt"  # a copy: resuming below writes to it
  shutil.copytree(two_processes / "ckpt", ckpt)
  got = dict(np.load(two_processes / "trained.npz"))
  assert int(got["processes"]) == 2 and int(got["local_seed_slots"]) == 2
  model, (x, y, xt, yt), seeds, epochs = digits_mlp()
  # One process, the same 4 seeds on 4 of its devices, from scratch.
  one, hist = train.fit(model, x, y, xt, yt, seeds=seeds, epochs=epochs,
                        devices=jax.devices()[:4], progress=False)
  np.testing.assert_allclose(got["test_accuracy"], hist.test_accuracy, atol=1e-4)
  np.testing.assert_allclose(got["loss"], hist.loss, rtol=1e-5)
  flat = lambda t: {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
                    for path, v in jax.tree_util.tree_flatten_with_path(t)[0]}
  want = flat(one.params)
  assert set(want) == {k for k in got if "/" in k}
  for k, v in want.items():
    np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
  # The 2-process checkpoint restores in this one process, onto 2 devices.
  like = train.shard_seeds(train.init(model, train.sgd(), seeds, x.shape[1:]),
                           jax.devices()[:2])
  restored, saved = checkpoint.restore(str(ckpt), like)
  assert saved["seeds"] == list(seeds) and int(np.asarray(restored.epoch)[0]) == epochs
  for k, v in flat(restored.params).items():
    np.testing.assert_array_equal(v, got[k], err_msg=k)
  assert restored.params["dense_0"]["kernel"].sharding.mesh.size == 2
  # ... and resumes: one more epoch here equals 3 epochs in one process.
  more, _ = train.fit(model, x, y, xt, yt, seeds=seeds, epochs=epochs + 1,
                      devices=jax.devices()[:2], checkpoint_dir=str(ckpt), progress=False)
  three, _ = train.fit(model, x, y, seeds=seeds, epochs=epochs + 1, state=one, progress=False,
                       devices=jax.devices()[:4])
  for k, v in flat(three.params).items():
    np.testing.assert_allclose(flat(more.params)[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
