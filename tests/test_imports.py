"""`import rainbow_jax` needs only its core dependencies: accelerator images
often lack matplotlib and tensorflow-datasets (and torch, scikit-learn)."""

import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent("""
    import importlib.abc
    import sys

    BLOCKED = {"matplotlib", "tensorflow_datasets", "tensorflow", "sklearn", "torch",
               "networkx", "nbformat", "array_record"}

    class Block(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
          raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Block())
    import numpy as np
    import rainbow_jax
    from rainbow_jax import commands, data, network, plots, similarity, streaming  # noqa: F401
    from rainbow_jax.commands import analyze  # noqa: F401
    import rainbow_jax.compat.svcca  # noqa: F401

    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    print(round(float(similarity.linear_cka(x, 2 * x)), 4))
    try:
      plots.bars([1.0], ["a"])
    except ImportError as e:
      print("plots:", e)
    try:
      data.load("cifar10", data_dir="/nonexistent", tfds_dir="/nonexistent")
    except ValueError as e:
      print("data:", e)
""")


def test_import_needs_no_optional_package(tmp_path):
  out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[0] == "1.0"
  assert lines[1].startswith("plots:") and "matplotlib" in lines[1]
  assert lines[2].startswith("data:") and "tensorflow-datasets is not installed" in lines[2]
