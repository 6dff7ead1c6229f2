"""K seeds sharded over 8 forced host devices train like one device."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, numpy as np
    from rainbow_jax import data, models, train
    assert jax.device_count() == 8
    ds = data.load("digits")
    model = models.make("mlp", ds.x_train.shape[1:], 10, widths=[32])
    kw = dict(seeds=list(range(8)), epochs=2, batch_size=64, progress=False)
    sharded, h1 = train.fit(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                            devices=jax.devices(), **kw)
    leaf = jax.tree_util.tree_leaves(sharded.params)[0]
    assert len(leaf.sharding.device_set) == 8, leaf.sharding
    single, h2 = train.fit(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test, **kw)
    for a, b in zip(jax.tree_util.tree_leaves(sharded.params),
                    jax.tree_util.tree_leaves(single.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h1.test_accuracy, h2.test_accuracy, atol=1e-3)
    print("OK")
""")


def test_seeds_sharded_over_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert proc.stdout.strip().endswith("OK")
