"""K seeds sharded over 8 CPU devices (set by conftest) train like one device."""

import chex
import jax
import numpy as np

from rainbow_jax import data, models, train

from conftest import NUM_CPU_DEVICES


def test_seeds_sharded_over_devices():
  assert jax.device_count() == NUM_CPU_DEVICES
  ds = data.load("digits")
  model = models.make("mlp", ds.x_train.shape[1:], 10, widths=[32])
  kw = dict(seeds=list(range(8)), epochs=2, batch_size=64, progress=False)
  sharded, h1 = train.fit(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                          devices=jax.devices(), **kw)
  leaf = jax.tree_util.tree_leaves(sharded.params)[0]
  assert len(leaf.sharding.device_set) == NUM_CPU_DEVICES, leaf.sharding
  single, h2 = train.fit(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test, **kw)
  chex.assert_trees_all_close(jax.device_get(sharded.params), jax.device_get(single.params),
                              rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h1.test_accuracy, h2.test_accuracy, atol=1e-3)
