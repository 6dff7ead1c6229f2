"""Writes the notebooks in notebooks/ from the cell sources below (outputs stripped).

    python tools/make_notebooks.py

Edit the cells here, not the .ipynb, so the notebooks stay reviewable.
"""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

INSTALL = '''\
# Install on Colab (or any fresh runtime): rainbow_jax from a clone of the repository.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("rainbow_jax") is None:
    root = os.path.abspath("..")
    if not os.path.exists(os.path.join(root, "pyproject.toml")):
        raise RuntimeError("Clone the rainbow_jax repository and open this notebook"
                           " from its notebooks/ folder (or pip install it) first.")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", f"{root}[plots]"])
import jax
print("JAX devices:", jax.devices())  # GPU/TPU are used when present'''


def notebook(cells, path):
  nb = new_notebook(cells=cells, metadata={
      "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
      "language_info": {"name": "python"}})
  for i, c in enumerate(nb.cells):
    c["id"] = f"cell-{i}"
  with open(path, "w") as f:
    nbformat.write(nb, f)
  print("wrote", path)


def params_cell(src):
  c = new_code_cell(src)
  c.metadata["tags"] = ["parameters"]
  return c


def moments_and_alignment():
  return [
      new_markdown_cell(
          "# Streaming covariances and alignment of two networks\n\n"
          "One pass over a dataset gives every layer's activation second moment of two"
          " networks and their cross second moments (`rainbow_jax.moments`), in float32"
          " with Chan's pairwise update and Kahan compensation. From those,"
          " `rainbow_jax.align` finds the orthogonal map A = UVᵀ (E[ψφᵀ] = UΣVᵀ) that"
          " aligns the networks and the variance it explains,"
          " r² = tr Σ / √(E‖φ‖² E‖ψ‖²)."),
      new_code_cell(INSTALL),
      params_cell('DATASET = "auto"   # fashion_mnist when installed, else sklearn digits\n'
                  'QUICK = False      # the tests set True: fewer samples'),
      new_code_cell(
          "import jax, jax.numpy as jnp, numpy as np\n"
          "import matplotlib.pyplot as plt\n"
          "from rainbow_jax import align, data, models, moments, plots\n\n"
          'name = DATASET if DATASET != "auto" else ("fashion_mnist" if data.available("fashion_mnist") else "digits")\n'
          "ds = data.load(name)\n"
          "x = ds.x_train[:2000] if QUICK else ds.x_train\n"
          "print(name, x.shape, ds.source)"),
      new_markdown_cell("## Pixel covariance, streamed over batches\n"
                        "A host iterator of batches; the ragged last batch is padded and masked,"
                        " so it is counted exactly and compiles nothing new."),
      new_code_cell(
          "flat = x.reshape(len(x), -1)\n"
          "stats = moments.accumulate((flat[i:i + 512] for i in range(0, len(flat), 512)))\n"
          "cov = moments.covariance(stats)\n"
          "ref = flat.astype(np.float64).T @ flat.astype(np.float64) / len(flat)\n"
          'print("samples", int(stats.count[0]), " relative error vs float64:",\n'
          "      np.linalg.norm(cov - ref) / np.linalg.norm(ref))\n"
          "eigvals, _ = align.eigh_descending(cov)\n"
          'plots.spectrum([eigvals], ["pixels"], title="Pixel second-moment spectrum");'),
      new_markdown_cell("## Two networks, all layers, one pass\n"
                        "Two bias-free MLPs from different random keys (PyTorch-default init)."),
      new_code_cell(
          "model = models.make('mlp', x.shape[1:], ds.num_classes, widths=[256, 128])\n"
          "k1, k2 = jax.random.split(jax.random.key(0))\n"
          "p1 = model.init(k1, x[:1])['params']\n"
          "p2 = model.init(k2, x[:1])['params']\n"
          "taps = lambda p, xb: model.apply({'params': p}, xb, taps=True)\n"
          "stats = moments.layer_moments(taps, p1, (x[i:i + 500] for i in range(0, len(x), 500)),\n"
          "                              params2=p2, cross='matched')\n"
          "L = len(stats.dims) // 2\n"
          "alignments = [align.align_moments(stats, l, L + l) for l in range(L)]\n"
          "for l, a in enumerate(alignments):\n"
          "    print(f'input to layer {l + 1}: r² = {float(a.r2):.4f}')"),
      new_code_cell(
          "fig, axes = plt.subplots(1, 2, figsize=(10, 4))\n"
          "e1 = align.eigh_descending(moments.covariance(stats, 1))[1]\n"
          "e2 = align.eigh_descending(moments.covariance(stats, L + 1))[1]\n"
          "plots.stability(align.stability(e1, e2, alignments[1].matrix), ax=axes[0],\n"
          "                title='activation eigenvectors, aligned')\n"
          "plots.stability(align.stability(e1, e2[:, :]), ax=axes[1],\n"
          "                title='activation eigenvectors, not aligned')\n"
          "plt.tight_layout()"),
      new_markdown_cell("Aligned, the top eigenvectors of the two random networks match (bright"
                        " diagonal); without the alignment they do not."),
  ]


if __name__ == "__main__":
  here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks")
  notebook(moments_and_alignment(), os.path.join(here, "moments_and_alignment.ipynb"))
