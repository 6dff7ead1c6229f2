"""Checkpoints: interrupted-and-resumed training equals uninterrupted training,
and a process killed while saving never leaves a checkpoint that restores wrong."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from rainbow_jax import checkpoint, data, models, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from rainbow_jax import data, models, train
    ds = data.load("digits")
    model = models.make("mlp", ds.x_train.shape[1:], 10, widths=[32])
    def die_after_two(epoch, state, metrics):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)   # between epochs, after the save
    train.fit(model, ds.x_train[:500], ds.y_train[:500], seeds=[0, 1], epochs=4,
              batch_size=64, checkpoint_dir=sys.argv[1], callback=die_after_two,
              progress=False)
""")


def test_kill_between_epochs_then_resume_equals_uninterrupted(tmp_path):
  ckpt = str(tmp_path / "ckpt")
  proc = subprocess.run([sys.executable, "-c", KILLED_RUN, ckpt], capture_output=True,
                        text=True, timeout=300, cwd=ROOT)
  assert proc.returncode == -signal.SIGKILL, proc.stderr
  assert checkpoint.latest_epoch(ckpt) == 2
  ds = data.load("digits")
  model = models.make("mlp", ds.x_train.shape[1:], 10, widths=[32])
  kw = dict(seeds=[0, 1], epochs=4, batch_size=64, progress=False)
  ran = []
  resumed, hist = train.fit(model, ds.x_train[:500], ds.y_train[:500],
                            checkpoint_dir=ckpt, callback=lambda e, s, m: ran.append(e), **kw)
  assert ran == [3, 4]  # resumed, not retrained from scratch
  straight, hist2 = train.fit(model, ds.x_train[:500], ds.y_train[:500], **kw)
  assert int(resumed.epoch[0]) == 4 and hist.loss.shape == (4, 2)
  for a, b in zip(jax.tree_util.tree_leaves(resumed.params),
                  jax.tree_util.tree_leaves(straight.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(hist.loss, hist2.loss, rtol=1e-5)
  # Momentum buffers came back too (else the last epochs would differ).
  for a, b in zip(jax.tree_util.tree_leaves(resumed.opt_state),
                  jax.tree_util.tree_leaves(straight.opt_state)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


SAVER = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp
    from rainbow_jax import checkpoint, models, train
    model = models.make("mlp", (16, 16, 1), 10, widths=[256])
    state = train.init(model, train.sgd(), [0, 1], (16, 16, 1))
    for epoch in range(1, 10_000):
        # Every leaf of checkpoint `epoch` is filled with the value `epoch`.
        s = jax.tree_util.tree_map(lambda a: jnp.full_like(a, epoch), state._replace(
            data_key=state.data_key))
        s = s._replace(data_key=state.data_key)
        checkpoint.save(sys.argv[1], s, {"epoch": epoch})
        print(epoch, flush=True)
""")


@pytest.mark.parametrize("delay", [1.5, pytest.param(2.3, marks=pytest.mark.slow)])
def test_kill_during_save_restores_a_complete_checkpoint(tmp_path, delay):
  ckpt = str(tmp_path / "ckpt")
  with subprocess.Popen([sys.executable, "-c", SAVER, ckpt], cwd=ROOT,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
    # Wait for the first completed save, then kill at an arbitrary moment.
    first = proc.stdout.readline()
    assert first.strip(), proc.stderr.read()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    saved = first + proc.stdout.read()
  assert len(saved.split()) >= 1
  # A half-written save (what a kill mid-save leaves) is never restored.
  os.makedirs(os.path.join(ckpt, "99999.orbax-checkpoint-tmp", "state"))
  with open(os.path.join(ckpt, "99999.orbax-checkpoint-tmp", "state", "junk"), "w") as f:
    f.write("partial")
  model = models.make("mlp", (16, 16, 1), 10, widths=[256])
  like = train.init(model, train.sgd(), [0, 1], (16, 16, 1))
  state, history = checkpoint.restore(ckpt, like)
  epoch = int(state.epoch[0])
  assert 1 <= epoch < 99999 and history["epoch"] == epoch
  assert epoch >= int(saved.split()[-1])  # the last save reported complete
  for leaf in jax.tree_util.tree_leaves(state.params) + jax.tree_util.tree_leaves(state.opt_state):
    np.testing.assert_array_equal(np.asarray(leaf), epoch)


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path):
  ds = data.load("digits")
  model = models.make("mlp", ds.x_train.shape[1:], 10, widths=[32])
  ckpt = str(tmp_path / "ck")
  x, y = ds.x_train[:256], ds.y_train[:256]
  train.fit(model, x, y, seeds=[0, 1], epochs=2, checkpoint_dir=ckpt, progress=False)
  assert checkpoint.latest_epoch(ckpt) == 2
  # Resumed with a diverging step: epoch 3 goes non-finite and is not saved.
  with pytest.raises(ValueError, match=r"non-finite training loss at epoch 3"):
    train.fit(model, x * 1e30, y, seeds=[0, 1], epochs=4, learning_rate=1e10,
              checkpoint_dir=ckpt, progress=False)
  assert checkpoint.latest_epoch(ckpt) == 2
  like = train.init(model, train.sgd(), [0, 1], ds.x_train.shape[1:])
  state, history = checkpoint.restore(ckpt, like)
  assert int(state.epoch[0]) == 2 and len(history["loss"]) == 2
  for leaf in jax.tree_util.tree_leaves(state.params):
    assert np.all(np.isfinite(np.asarray(leaf)))
