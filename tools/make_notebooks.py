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
          "from rainbow_jax import align, data, models, moments, network, plots\n\n"
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
          'rel = float(np.linalg.norm(cov - ref) / np.linalg.norm(ref))\n'
          'print("samples", int(stats.count[0]), " relative error vs float64:", rel)\n'
          "assert int(stats.count[0]) == len(flat) and rel < 1e-5\n"
          "eigvals, _ = align.eigh_descending(cov)\n"
          'plots.spectrum([eigvals], ["pixels"], title="Pixel second-moment spectrum");'),
      new_markdown_cell("## Two networks, all layers, one pass\n"
                        "Two bias-free MLPs from different random keys (PyTorch-default init)."),
      new_code_cell(
          "model = models.make('mlp', x.shape[1:], ds.num_classes, widths=[256, 128])\n"
          "k1, k2 = jax.random.split(jax.random.key(0))\n"
          "p1 = model.init(k1, x[:1])['params']\n"
          "p2 = model.init(k2, x[:1])['params']\n"
          "net = network.from_linen(model, p1, x[:2])   # any Flax model: layers in call order\n"
          "stats = moments.layer_moments(net, p1, (x[i:i + 500] for i in range(0, len(x), 500)),\n"
          "                              params2=p2, cross='matched')\n"
          "L = len(stats.dims) // 2\n"
          "alignments = [align.align_moments(stats, l, L + l) for l in range(L)]\n"
          "for l, a in enumerate(alignments):\n"
          "    print(f'input to layer {l + 1}: r² = {float(a.r2):.4f}')\n"
          "# Both networks read the same pixels: all of the input is explained.\n"
          "assert float(alignments[0].r2) > 0.9999"),
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


def similarity():
  return [
      new_markdown_cell(
          "# Representational similarity: CCA, SVCCA, PWCCA and CKA\n\n"
          "The SVCCA tutorial's walk-through on `rainbow_jax.similarity`: toy data first"
          " (why the number of datapoints per neuron matters, and what unrelated data"
          " scores by chance), then two networks trained from different seeds, compared"
          " layer by layer. The native API takes **datapoints × neurons** arrays;"
          " `rainbow_jax.compat.svcca` takes google/svcca's neurons × datapoints."),
      new_code_cell(INSTALL),
      params_cell('DATASET = "auto"   # fashion_mnist when installed, else sklearn digits\n'
                  'QUICK = False      # the tests set True: smaller data, one epoch'),
      new_code_cell(
          "import jax, jax.numpy as jnp, numpy as np\n"
          "import matplotlib.pyplot as plt\n"
          "from rainbow_jax import data, models, network, similarity as S, train\n"
          "key = jax.random.key(0)"),
      new_markdown_cell(
          "## Toy data: an invertible map scores 1, noise lowers it\n"
          "CCA is invariant to invertible linear maps; CKA only to rotations and"
          " isotropic scaling."),
      new_code_cell(
          "ka, kt, kn = jax.random.split(key, 3)\n"
          "a = jax.random.normal(ka, (2000, 50))\n"
          "b = a @ jax.random.normal(kt, (50, 50))\n"
          "noisy = b + 2.0 * jax.random.normal(kn, b.shape)\n"
          "for name, other in [('A·T', b), ('A·T + noise', noisy)]:\n"
          "    print(f'{name:12s} mean CCA {float(S.cca(a, other).mean):.3f}   PWCCA'\n"
          "          f' {float(S.pwcca(a, other).value):.3f}   linear CKA {float(S.linear_cka(a, other)):.3f}')\n"
          "assert float(S.cca(a, b).mean) > 0.999 > float(S.cca(a, noisy).mean)  # invariance"),
      new_markdown_cell(
          "## Datapoints vs neurons\n"
          "With few datapoints per neuron, CCA of *independent* data is high by chance —"
          " the tutorial's warning. `null_baseline` gives that chance level and its spread"
          " (here: independent Gaussian data of the same shapes, 32 draws, one jitted call)."),
      new_code_cell(
          "d = 50\n"
          "sizes = [60, 100, 200, 500, 1000] if QUICK else [60, 100, 200, 500, 1000, 2000, 5000]\n"
          "fn = lambda x, y: S.cca(x, y).mean\n"
          "nulls = []\n"
          "for n in sizes:\n"
          "    z = jnp.zeros((n, d))\n"
          "    nulls.append(S.null_baseline(fn, z, z, jax.random.fold_in(key, n), num_samples=32,\n"
          "                                 method='gaussian'))\n"
          "means = np.array([float(b.mean) for b in nulls]); stds = np.array([float(b.std) for b in nulls])\n"
          "plt.errorbar(np.array(sizes) / d, means, yerr=stds, marker='o')\n"
          "plt.xscale('log'); plt.xlabel('datapoints per neuron'); plt.ylabel('mean CCA of independent data')\n"
          "plt.title('CCA is high by chance with few datapoints'); plt.grid(alpha=0.3);"),
      new_markdown_cell("## Two networks from different seeds\n"
                        "Train two MLPs (vmapped over seeds) and collect each layer's input"
                        " on test images."),
      new_code_cell(
          'name = DATASET if DATASET != "auto" else ("fashion_mnist" if data.available("fashion_mnist") else "digits")\n'
          "ds = data.load(name)\n"
          "n_train = 5000 if QUICK else len(ds.x_train)\n"
          "model = models.make('mlp', ds.x_train.shape[1:], ds.num_classes, widths=[256, 128])\n"
          "state, hist = train.fit(model, ds.x_train[:n_train], ds.y_train[:n_train], ds.x_test, ds.y_test,\n"
          "                        seeds=(0, 1), epochs=1 if QUICK else 5, progress=False)\n"
          "print(name, 'test accuracy per seed:', np.round(hist.test_accuracy[-1], 4))\n"
          "x_eval = ds.x_test[:2000]\n"
          "net = network.from_linen(model, train.select(state.params, 0), x_eval[:2])\n"
          "acts = [net.layer_inputs(train.select(state.params, k), x_eval) for k in (0, 1)]\n"
          "print('layer widths:', [a.shape[1] for a in acts[0]])"),
      new_markdown_cell("### Layer × layer, one jitted call per measure\n"
                        "Widths differ (pixels, 256, 128); every entry equals the measure on"
                        " that pair alone."),
      new_code_cell(
          "fig, axes = plt.subplots(1, 3, figsize=(13, 4))\n"
          "labels = ['pixels', 'hidden 1', 'hidden 2']\n"
          "for ax, measure in zip(axes, ['linear_cka', 'pwcca', 'svcca']):\n"
          "    kw = dict(keep=20) if measure == 'svcca' else {}\n"
          "    m = np.asarray(S.pairwise(acts[0], acts[1], measure=measure, epsilon=1e-6, **kw))\n"
          "    im = ax.imshow(m, vmin=0, vmax=1, cmap='viridis')\n"
          "    for (i, j), v in np.ndenumerate(m):\n"
          "        ax.text(j, i, f'{v:.2f}', ha='center', va='center', color='w')\n"
          "    ax.set_xticks(range(3), labels); ax.set_yticks(range(3), labels)\n"
          "    ax.set_xlabel('seed 1'); ax.set_ylabel('seed 0'); ax.set_title(measure)\n"
          "    assert abs(m[0, 0] - 1) < 1e-3  # both seeds see the same pixels\n"
          "fig.colorbar(im, ax=axes, shrink=0.8);"),
      new_markdown_cell("### Scores against the null\n"
                        "Permuting one network's datapoints keeps each layer's distribution and"
                        " destroys the correspondence: the score unrelated activations get."),
      new_code_cell(
          "h0, h1 = acts[0][1], acts[1][1]\n"
          "for label, fn in [('SVCCA (20 dirs)', lambda x, y: S.svcca(x, y, keep=20, epsilon=1e-6).mean),\n"
          "                  ('linear CKA', S.linear_cka)]:\n"
          "    null = S.null_baseline(fn, h0, h1, key, num_samples=16 if QUICK else 64)\n"
          "    score = fn(h0, h1)\n"
          "    print(f'{label:16s} {float(score):.3f}   null {float(null.mean):.3f} ± {float(null.std):.3f}'\n"
          "          f'   z = {float(null.zscore(score)):.0f}')\n"
          "    assert float(null.zscore(score)) > 5  # trained seeds share far more than chance"),
      new_markdown_cell("### Canonical correlations of the first hidden layer\n"
                        "SVCCA on the top principal directions, and PWCCA's weights."),
      new_code_cell(
          "sv = S.svcca(h0, h1, keep=20, epsilon=1e-6)\n"
          "pw = S.pwcca(h0, h1, epsilon=1e-6)\n"
          "fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))\n"
          "axes[0].plot(np.asarray(sv.coefficients[:int(sv.num_coefficients)]), marker='.')\n"
          "axes[0].set_title(f'SVCCA coefficients (mean {float(sv.mean):.3f})'); axes[0].set_xlabel('direction')\n"
          "k = int(pw.num_coefficients)\n"
          "axes[1].plot(np.asarray(pw.coefficients[:k]), label='coefficient')\n"
          "axes[1].plot(np.asarray(pw.weights[:k]) * k, label='weight × k')\n"
          "axes[1].set_title(f'PWCCA {float(pw.value):.3f}'); axes[1].legend(); axes[1].set_xlabel('direction');"),
      new_markdown_cell("## Coming from google/svcca?\n"
                        "Change the import: same signatures, same dict, numpy out."),
      new_code_cell(
          "import rainbow_jax.compat.svcca as cca_core\n"
          "res = cca_core.get_cca_similarity(np.asarray(h0).T, np.asarray(h1).T, epsilon=1e-6, verbose=False)\n"
          "print(sorted(res)); print('mean', float(res['mean'][0]))"),
  ]


def svr_notebook():
  return [
      new_markdown_cell(
          "# The Singular Value Representation (SVR) of a network\n\n"
          "Meller & Berkouk's SVR turns a network's weights into a graph: every singular"
          " value of every layer is a *spectral neuron*, and spectral neurons of"
          " consecutive layers are joined by how much one's output direction overlaps the"
          " next one's input direction. Edges are kept when they are unlikely under"
          " random weights (exact Beta null laws, or the paper's χ²), and the *internal"
          " dimensions* say how many spectral neurons a layer really uses. No data is"
          " needed — only weights. `rainbow_jax.svr` takes PyTorch-layout weights"
          " (`from_torch`) or Flax kernels (`from_flax`)."),
      new_code_cell(INSTALL),
      params_cell('DATASET = "auto"   # fashion_mnist when installed, else sklearn digits\n'
                  'QUICK = False      # the tests set True: less data, fewer epochs'),
      new_code_cell(
          "import jax, jax.numpy as jnp, numpy as np\n"
          "import matplotlib.pyplot as plt\n"
          "from rainbow_jax import data, models, network, plots, svr, train\n\n"
          'name = DATASET if DATASET != "auto" else ("fashion_mnist" if data.available("fashion_mnist") else "digits")\n'
          "ds = data.load(name)\n"
          "n_train = 5000 if QUICK else len(ds.x_train)\n"
          "epochs = 1 if QUICK else 5\n"
          "print(name, ds.x_train.shape, ds.source)"),
      new_markdown_cell(
          "## An MLP before and after training (the paper's Figure 2)\n"
          "Four seeds of a bias-free [d, 40, 40, 40, 10] ReLU MLP, trained as one vmapped"
          " program."),
      new_code_cell(
          "seeds = [0, 1, 2, 3]\n"
          "mlp = models.make('mlp', ds.x_train.shape[1:], ds.num_classes, widths=[40, 40, 40])\n"
          "init_params = train.init(mlp, train.sgd(), seeds, ds.x_train.shape[1:]).params\n"
          "state, hist = train.fit(mlp, ds.x_train[:n_train], ds.y_train[:n_train], ds.x_test, ds.y_test,\n"
          "                        seeds=seeds, epochs=epochs, progress=False)\n"
          "print('test accuracy per seed (%):', np.round(hist.test_accuracy[-1], 2))\n"
          "net = network.from_linen(mlp, train.select(state.params, 0), ds.x_train[:2])\n"
          "native = lambda params, k: svr.from_flax(net.kernels(train.select(params, k)))\n"
          "before, after = svr.svr(native(init_params, 0)), svr.svr(native(state.params, 0))\n"
          "fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))\n"
          "plots.svr_graph(before, title='random initialisation', ax=axes[0])\n"
          "plots.svr_graph(after, title='after training', ax=axes[1]);"),
      new_markdown_cell(
          "Vertices are singular values (log scale), coloured by how far their column of the"
          " next adjacency deviates from random; edges are the significant ones (p < 0.15)."
          " After training, the top spectral neurons connect strongly: a block in every"
          " adjacency matrix, whose size is the internal dimension."),
      new_code_cell(
          "fig, axes = plt.subplots(2, 3, figsize=(14, 8))\n"
          "for row, (tag, res) in enumerate([('init', before), ('trained', after)]):\n"
          "    for e in range(3):\n"
          "        plots.adjacency(res.adjacency[e], ax=axes[row, e], dims=res.internal_dims[e],\n"
          "                        title=f'{tag}: edge {e + 1}, (d_out, d_in) = {res.internal_dims[e]}')"),
      new_markdown_cell(
          "## Thresholds: exact vs asymptotic null laws\n"
          "Between independent random layers with c shared channels and P positions"
          " (dense: P = 1), an edge weight is exactly Beta(P/2, (c − 1)P/2); the paper's"
          " χ²(P)/(cP) is its large-c limit. At small c the χ² threshold is too high or"
          " too low; Benjamini–Hochberg controls the false discoveries over all edges."),
      new_code_cell(
          "for c, p in [(5, 1), (40, 1), (512, 1), (16, 9), (512, 9)]:\n"
          "    ex, asym = svr.null_law(c, p), svr.null_law(c, p, exact=False)\n"
          "    print(f'c={c:4d} P={p}: threshold at p = 0.15  exact {ex.isf(0.15):.4f}  χ² {asym.isf(0.15):.4f}'\n"
          "          f'   at p = 0.001  exact {ex.isf(1e-3):.4f}  χ² {asym.isf(1e-3):.4f}')\n"
          "    if c == 512:  # the paper's χ² law is the exact law's large-c limit\n"
          "        assert abs(asym.isf(0.15) / ex.isf(0.15) - 1) < 0.02\n"
          "fdr = svr.svr(native(state.params, 0), fdr=0.05)\n"
          "for e in range(3):\n"
          "    print(f'edge {e + 1}: significant at p < 0.15: {int(after.significant[e].sum()):5d}'\n"
          "          f'   BH at FDR 5 %: {int(fdr.significant[e].sum()):5d}   of {after.adjacency[e].size}')\n"
          "    assert int(fdr.significant[e].sum()) <= int(after.significant[e].sum())  # BH is stricter\n"
          "print('first significant edges:', {k: v[:5] for k, v in svr.edges(fdr).items()})"),
      new_markdown_cell(
          "## Internal dimensions over seeds, and pruning to them\n"
          "Keeping each layer's top spectral neurons up to its internal dimensions is an SVD"
          " compression (`keep_ranks`, `low_rank`); the paper finds it costs about 1 %"
          " accuracy."),
      new_code_cell(
          "pruned, ranks = [], []\n"
          "for k in range(len(seeds)):\n"
          "    res = svr.svr(native(state.params, k))\n"
          "    ranks.append(svr.keep_ranks(res))\n"
          "    p = train.select(state.params, k)\n"
          "    pruned.append(net.with_kernels(p, svr.to_flax(svr.low_rank(native(state.params, k), ranks[-1]))))\n"
          "    print(f'seed {k}: internal dims {res.internal_dims}, ranks kept {ranks[-1]}')\n"
          "pruned = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *pruned)\n"
          "acc_pruned = np.asarray(train.accuracy(pruned, jnp.asarray(ds.x_test), jnp.asarray(ds.y_test), model=mlp))\n"
          "print('accuracy  full:', np.round(hist.test_accuracy[-1], 2), ' pruned:', np.round(acc_pruned, 2))"),
      new_markdown_cell(
          "## A CNN\n"
          "The tutorial's CNN (two 5×5 conv layers, stride 2, then a dense classifier)."
          " Conv kernels are flattened to (C_out, C_in·K²); an edge between conv layers sees"
          " the K² kernel taps, and the conv → dense edge sees the spatial positions of the"
          " flattened map."),
      new_code_cell(
          "cnn = models.make('cnn', ds.x_train.shape[1:], ds.num_classes)\n"
          "cstate, chist = train.fit(cnn, ds.x_train[:n_train], ds.y_train[:n_train], ds.x_test, ds.y_test,\n"
          "                          seeds=[0], epochs=epochs, progress=False)\n"
          "cp = train.select(cstate.params, 0)\n"
          "cres = svr.svr(svr.from_flax(network.from_linen(cnn, cp, ds.x_train[:2]).kernels(cp)))\n"
          "print('test accuracy (%):', np.round(chist.test_accuracy[-1], 2))\n"
          "print('shared channels, positions per edge:', list(zip(cres.channels, cres.positions)))\n"
          "print('internal dimensions:', cres.internal_dims)\n"
          "fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))\n"
          "plots.svr_graph(cres, title='CNN SVR', ax=axes[0])\n"
          "for e in range(2):\n"
          "    plots.adjacency(cres.adjacency[e], ax=axes[e + 1], dims=cres.internal_dims[e],\n"
          "                    title=f'edge {e + 1}');"),
      new_markdown_cell(
          "## Large networks\n"
          "For a torchvision model: `svr.svr(svr.from_flax(network.from_torch(model).kernels))`"
          " (`network.from_torch` reads modules and state dicts)."
          " `top_k=` with a `key` switches layers larger than k to a randomized top-k SVD;"
          " `benchmarks/svr.py` times a full VGG16."),
  ]


def rainbow_tutorial():
  return [
      new_markdown_cell(
          "# The rainbow tutorial with rainbow_jax\n\n"
          "What has a trained network learned, and is it the same across training runs?"
          " This notebook runs the whole tutorial as jitted, vmapped functions: K seeds"
          " trained as one program, activation and weight spectra (against the"
          " Marchenko–Pastur law), clipping, alignment of two seeds, eigenvector"
          " stability, and Gaussian *rainbow* networks sampled from a trained one."
          " Fashion-MNIST offline; on Colab set `DATASET = 'cifar10'` (grayscale, through"
          " tensorflow-datasets) for the tutorial's own data."),
      new_code_cell(INSTALL),
      params_cell('DATASET = "auto"   # fashion_mnist when installed, else digits; or cifar10 (tfds)\n'
                  'ARCH = "mlp"       # or "cnn"\n'
                  'QUICK = False      # the tests set True: less data, fewer epochs and samples'),
      new_code_cell(
          "import jax, jax.numpy as jnp, numpy as np\n"
          "import matplotlib.pyplot as plt\n"
          "from rainbow_jax import align, data, evaluate, models, moments, network, plots, rainbow, spectra, train\n\n"
          'name = DATASET if DATASET != "auto" else ("fashion_mnist" if data.available("fashion_mnist") else "digits")\n'
          "ds = data.load(name, grayscale=True, normalize='tutorial' if name == 'cifar10' else True)\n"
          "n_train = 2000 if QUICK else len(ds.x_train)\n"
          "x, y = ds.x_train[:n_train], ds.y_train[:n_train]\n"
          "x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)\n"
          "arch = ARCH if name != 'digits' else 'mlp'  # 8×8 digits are too small for the CNN\n"
          "print(name, x.shape, ds.source)"),
      new_markdown_cell("## Train K seeds as one program\n"
                        "The tutorial's hyperparameters: SGD, learning rate 0.01, momentum 0.9,"
                        " batch 128, PyTorch-default initialisation, no biases."),
      new_code_cell(
          "seeds = [0, 1, 2]\n"
          "model = models.make(arch, x.shape[1:], ds.num_classes)\n"
          "init_params = train.init(model, train.sgd(), seeds, x.shape[1:]).params\n"
          "state, hist = train.fit(model, x, y, x_test, y_test, seeds=seeds, epochs=1 if QUICK else 5)\n"
          "params = [train.select(state.params, k) for k in range(len(seeds))]\n"
          "net = network.from_linen(model, params[0], x[:2])  # the analyses see any model this way\n"
          "print('weight layers in call order:', net.names)\n"
          "print('test accuracy per seed (%):', np.round(hist.test_accuracy[-1], 2))"),
      new_markdown_cell("## Activation covariances of two seeds, one streamed pass\n"
                        "Every layer's input, self and cross second moments of seeds 0 and 1."),
      new_code_cell(
          "batches = [x[i:i + 1000] for i in range(0, len(x), 1000)]\n"
          "stats = moments.layer_moments(net, params[0], batches, params2=params[1], cross='matched')\n"
          "L = len(stats.dims) // 2\n"
          "fig, axes = plt.subplots(1, L, figsize=(4.5 * L, 3.8))\n"
          "act = []\n"
          "for l in range(L):\n"
          "    ev0, e0 = spectra.activation_spectrum(moments.covariance(stats, l))\n"
          "    ev1, e1 = spectra.activation_spectrum(moments.covariance(stats, L + l))\n"
          "    act.append((ev0, e0, e1))\n"
          "    plots.spectrum([ev0, ev1], ['seed 0', 'seed 1'], title=f'input to layer {l + 1}', ax=axes[l])"),
      new_markdown_cell("## Weight spectra against Marchenko–Pastur\n"
                        "At initialisation the weight covariance follows the Marchenko–Pastur law;"
                        " eigenvalues above its edge after training are the learned components."),
      new_code_cell(
          "kernels = net.kernels(params[0])\n"
          "init_kernels = net.kernels(train.select(init_params, 0))\n"
          "for l, (k, k0) in enumerate(zip(kernels, init_kernels)):\n"
          "    ev, _ = spectra.weight_spectrum(k)\n"
          "    ev0, _ = spectra.weight_spectrum(k0)\n"
          "    law = spectra.layer_law(k, 'torch')\n"
          "    n = int(spectra.learned_components(ev, law))\n"
          "    plots.weight_spectrum(ev, ev0, law, title=f'layer {l + 1}: {n} learned components')"),
      new_markdown_cell("## Clipping\n"
                        "Project layer 2's input on its top-k eigenvectors (activation or weight)"
                        " and measure the accuracy left; every k in one vmapped evaluation."),
      new_code_cell(
          "layer = 1\n"
          "_, wvec = spectra.weight_spectrum(kernels[layer])\n"
          "_, e_act, _ = act[layer]\n"
          "ranks = [1, 2, 4, 8, 16, 32, 64, 128, e_act.shape[0]]\n"
          "acc_act = spectra.clip_sweep(net, params[0], layer, e_act, ranks, x_test, y_test)\n"
          "w_ranks = [r for r in ranks if r <= wvec.shape[0]]\n"
          "acc_w = spectra.clip_sweep(net, params[0], layer, wvec, w_ranks, x_test, y_test)\n"
          "plt.figure(figsize=(5, 3.8))\n"
          "plt.plot(ranks, acc_act, 'o-', label='activation eigenvectors')\n"
          "plt.plot(w_ranks, acc_w, 's-', label='weight eigenvectors')\n"
          "plt.axhline(hist.test_accuracy[-1][0], color='k', ls=':', label='unclipped')\n"
          "plt.xscale('log'); plt.xlabel('rank k'); plt.ylabel('test accuracy (%)'); plt.legend();"),
      new_markdown_cell("## Alignment of two seeds and eigenvector stability\n"
                        "A = UVᵀ from E[ψφᵀ] = UΣVᵀ; r² = tr Σ / √(E‖φ‖² E‖ψ‖²). After alignment"
                        " the top eigenvectors of the two seeds coincide."),
      new_code_cell(
          "r2 = []\n"
          "fig, axes = plt.subplots(1, L, figsize=(4.5 * L, 3.8))\n"
          "for l in range(L):\n"
          "    al = align.align_moments(stats, l, L + l)\n"
          "    r2.append(float(al.r2))\n"
          "    ev0, e0, e1 = act[l]\n"
          "    plots.stability(align.stability(e0, e1, al.matrix), title=f'layer {l + 1}, r² = {r2[-1]:.3f}', ax=axes[l])\n"
          "print('r² per layer:', np.round(r2, 4))\n"
          "assert all(0.0 < v <= 1.0 + 1e-6 for v in r2)"),
      new_markdown_cell("## Rainbow networks\n"
                        "Sample new networks layer by layer from the weight covariances of seed 0,"
                        " realigning each layer with one data pass; all samples in one vmapped"
                        " program. Then: covariances averaged over the three seeds, and a wider"
                        " network."),
      new_code_cell(
          "S = 2 if QUICK else 8\n"
          "gen = rainbow.generate(jax.random.key(0), net, params[0], x, num_samples=S)\n"
          "acc = np.asarray(evaluate.accuracy(net, gen.params, x_test, y_test, stacked=True))\n"
          "print(f'reference {hist.test_accuracy[-1][0]:.2f} %; rainbow {acc.mean():.2f} ± {acc.std():.2f} %')\n"
          "print('alignment r² per sample and layer:', np.round(np.asarray(gen.r2), 3))\n"
          "assert acc.mean() > 100 / ds.num_classes  # rainbow networks are far above chance\n"
          "assert np.all((np.asarray(gen.r2) > 0) & (np.asarray(gen.r2) <= 1 + 1e-6))"),
      new_code_cell(
          "# Average the weight covariances over seeds: bring seeds 1, 2 into seed 0's basis.\n"
          "alignments = []\n"
          "for k in (1, 2):\n"
          "    st = moments.layer_moments(net, params[0], batches, params2=params[k], cross='matched')\n"
          "    alignments.append([None] + [align.align_moments(st, l, L + l).matrix for l in range(1, L)])\n"
          "factors = rainbow.reference_factors([net.kernels(p) for p in params], alignments)\n"
          "gen_avg = rainbow.generate(jax.random.key(1), net, params[0], x, num_samples=S, factors=factors)\n"
          "acc_avg = np.asarray(evaluate.accuracy(net, gen_avg.params, x_test, y_test, stacked=True))\n"
          "print(f'averaged over {len(params)} seeds: {acc_avg.mean():.2f} ± {acc_avg.std():.2f} %')\n"
          "if arch == 'mlp':\n"
          "    wide = models.make('mlp', x.shape[1:], ds.num_classes, widths=[1024, 512])\n"
          "    wide_p = wide.init(jax.random.key(0), x[:1])['params']\n"
          "    wide_net = network.from_linen(wide, wide_p, x[:2])\n"
          "    gw = rainbow.generate(jax.random.key(2), net, params[0], x, num_samples=S, gen=(wide_net, wide_p))\n"
          "    acc_w = np.asarray(evaluate.accuracy(wide_net, gw.params, x_test, y_test, stacked=True))\n"
          "    print(f'twice as wide: {acc_w.mean():.2f} ± {acc_w.std():.2f} %')"),
  ]


def rainbow_paper():
  return [
      new_markdown_cell(
          "# The rainbow paper's experiments\n\n"
          "\"A Rainbow in Deep Network Black Boxes\" (Guth, Ménard, Rochette & Mallat, 2023)"
          " says the neurons of a trained layer are random samples of one distribution —"
          " for Gaussian rainbow networks, of a Gaussian of covariance C_ℓ — up to a rotation"
          " fixed by the previous layers, and that seeds converge to one network as the"
          " widths grow. Each section tests one claim with rainbow_jax's functions:\n\n"
          "1. a learned scattering network (fixed Morlet wavelets, learned 1×1 channel mixings);\n"
          "2. its Gaussian rainbow networks: trained vs rainbow accuracy;\n"
          "3. rainbow networks at other widths, and r² between seeds against the width;\n"
          "4. K seeds aligned to their mean network; rainbow networks from the seed average;\n"
          "5. is a trained layer Gaussian?\n"
          "6. training dynamics.\n\n"
          "`experiments/rainbow_accuracy.py` and `experiments/rainbow_paper.py` run the same at"
          " full size and write JSON and figures."),
      new_code_cell(INSTALL),
      params_cell('DATASET = "auto"   # fashion_mnist when installed, else digits; or cifar10 (tfds)\n'
                  'QUICK = False      # the tests set True: digits, small widths, few epochs'),
      new_code_cell(
          "import jax, jax.numpy as jnp, numpy as np\n"
          "import matplotlib.pyplot as plt\n"
          "from rainbow_jax import (align, consensus, data, evaluate, gaussianity, models, network,\n"
          "                         rainbow, scaling, spectra, train, wavelets)\n\n"
          'name = "digits" if QUICK else DATASET\n'
          'if name == "auto":\n'
          '    name = "fashion_mnist" if data.available("fashion_mnist") else "digits"\n'
          "ds = data.load(name, grayscale=True, normalize='tutorial' if name == 'cifar10' else True)\n"
          "x, y = ds.x_train, ds.y_train\n"
          "x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)\n"
          "x_align = x[:1000 if QUICK else 10000]  # images of the rainbow alignments\n"
          "SEEDS, EPOCHS, S = (3, 2, 2) if QUICK else (4, 3, 8)\n"
          "WIDTHS = [8, 16] if QUICK else [32, 64, 128]\n"
          "print(name, x.shape, ds.source)"),
      new_markdown_cell(
          "## 1. A learned scattering network\n"
          "Every layer filters each channel with a fixed low-pass φ and L Morlet wavelets ψ_θ"
          " (scale 2, subsampled by 2), keeps the modulus of the wavelet coefficients (phase"
          " collapse), then mixes channels with a learned 1×1 convolution (Guth, Zarka & Mallat,"
          " 2022). Only the mixings and the classifier are learned. The filters in space:"),
      new_code_cell(
          "bank = wavelets.filter_bank(32, 4)  # [1 + L, N, N], Fourier domain\n"
          "space = np.fft.fftshift(np.fft.ifft2(bank), axes=(1, 2))[:, 8:24, 8:24]\n"
          "fig, axes = plt.subplots(1, len(space), figsize=(2.2 * len(space), 2.4))\n"
          "for f, ax in enumerate(axes):\n"
          "    ax.imshow(space[f].real, cmap='RdBu_r'); ax.axis('off')\n"
          "    ax.set_title('φ' if f == 0 else f'Re ψ, θ = {f - 1}π/4')"),
      new_code_cell(
          "model = models.make('scattering', x.shape[1:], ds.num_classes, widths=WIDTHS)\n"
          "seeds = list(range(SEEDS))\n"
          "per_epoch = [train.init(model, train.sgd(), seeds, x.shape[1:]).variables]\n"
          "state, hist = train.fit(model, x, y, x_test, y_test, seeds=seeds, epochs=EPOCHS,\n"
          "                        callback=lambda e, st, m: per_epoch.append(st.variables))\n"
          "vs = [train.select(state.variables, k) for k in seeds]\n"
          "net = network.from_linen(model, vs[0], x[:2])\n"
          "print('weight layers:', net.names, net.shapes)\n"
          "print('test accuracy per seed (%):', np.round(hist.test_accuracy[-1], 2))"),
      new_markdown_cell(
          "## 2. Gaussian rainbow networks\n"
          "New networks whose mixing weights are Gaussian with the trained layers' aligned"
          " covariances, sampled layer by layer, S at once. The paper, on CIFAR-10:"
          " 91.6 % trained → 81.4 % rainbow (ratio 0.89)."),
      new_code_cell(
          "def rainbow_accuracy(key, gen=None, factors=None, variables=None, samples=S):\n"
          "    g = rainbow.generate(key, net, vs[0] if variables is None else variables, x_align,\n"
          "                         num_samples=samples, gen=gen, factors=factors, progress=False)\n"
          "    scorer = net if gen is None else gen[0]\n"
          "    return np.asarray(evaluate.accuracy(scorer, g.params, x_test, y_test, stacked=True))\n\n"
          "trained = float(hist.test_accuracy[-1][0])\n"
          "acc = rainbow_accuracy(jax.random.key(0))\n"
          "print(f'trained {trained:.2f} %, rainbow {acc.mean():.2f} ± {acc.std(ddof=1):.2f} %,'\n"
          "      f' ratio {acc.mean() / trained:.3f} (paper: 0.89)')\n"
          "assert acc.mean() > 100 / ds.num_classes"),
      new_markdown_cell(
          "## 3. Width\n"
          "Rainbow networks with other numbers of neurons per layer than the trained one."),
      new_code_cell(
          "factors = [2.0] if QUICK else [0.25, 0.5, 1.0, 2.0, 4.0]\n"
          "wacc = []\n"
          "for f in factors:\n"
          "    gm = models.make('scattering', x.shape[1:], ds.num_classes,\n"
          "                     widths=[max(1, round(w * f)) for w in WIDTHS])\n"
          "    gv = gm.init(jax.random.key(1), x[:1])\n"
          "    wacc.append(rainbow_accuracy(jax.random.key(2), gen=(network.from_linen(gm, gv, x[:2]), gv)))\n"
          "plt.errorbar(factors, [a.mean() for a in wacc], yerr=[a.std(ddof=1) for a in wacc], marker='o', capsize=3)\n"
          "plt.axhline(trained, ls=':', color='k', label='trained')\n"
          "plt.xscale('log', base=2); plt.xlabel('rainbow width / trained width')\n"
          "plt.ylabel('test accuracy (%)'); plt.legend();"),
      new_markdown_cell(
          "The slides' theorem: A_ℓ φ_ℓ → φ_ℓ^∞ polynomially in the widths. Two seeds of the"
          " MLP [d, n, n, classes] at growing n: 1 − r² between their aligned layers, and its"
          " power law."),
      new_code_cell(
          "ns = [16, 32, 64] if QUICK else [64, 128, 256, 512]\n"
          "gap = []\n"
          "for n in ns:\n"
          "    mlp = models.make('mlp', x.shape[1:], ds.num_classes, widths=[n, n])\n"
          "    st, _ = train.fit(mlp, x, y, seeds=[0, 1], epochs=1 if QUICK else 2, progress=False)\n"
          "    mnet = network.from_linen(mlp, train.select(st.params, 0), x[:2])\n"
          "    f0, f1 = (mnet.layer_inputs(train.select(st.params, k), x_test)[2] for k in (0, 1))\n"
          "    gap.append(1 - float(align.align_features(f0, f1).r2))\n"
          "fit = scaling.fit_power_law(jnp.asarray(ns, jnp.float32), jnp.asarray(gap, jnp.float32))\n"
          "print(f'1 − r² ∝ n^{float(fit.exponent):.2f} ± {float(fit.exponent_se):.2f}')\n"
          "plt.loglog(ns, gap, 'o-'); plt.xlabel('width n'); plt.ylabel('1 − r² (layer 2, seed 0 vs 1)');"),
      new_markdown_cell(
          "## 4. Many seeds\n"
          "The K seeds aligned to one mean network at every mixing layer's input (generalised"
          " Procrustes), each seed's distance to the seed-averaged covariance, and rainbow"
          " networks sampled from that average."),
      new_code_cell(
          "stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *vs)\n"
          "x_mean = x_align[:500 if QUICK else 2000]\n"
          "for j in range(1, len(net) - 1):\n"
          "    feats = jax.vmap(lambda v: net.layer_inputs(v, x_mean, upto=j)[j])(stacked)\n"
          "    cross = consensus.seed_cross_moments(feats)\n"
          "    mean = consensus.align_to_mean(cross)\n"
          "    own = cross[jnp.arange(len(vs)), jnp.arange(len(vs))]\n"
          "    dist = consensus.covariance_distances(own, mean.alignments)\n"
          "    print(f'input of {net.names[j]}: r² to the mean {np.round(np.asarray(mean.r2), 3)},'\n"
          "          f' covariance distance {np.round(np.asarray(dist), 3)}')\n"
          "avg_factors, _ = rainbow.seed_averaged_factors(net, vs, x_mean)\n"
          "acc_avg = rainbow_accuracy(jax.random.key(3), factors=avg_factors)\n"
          "print(f'rainbow from seed 0: {acc.mean():.2f} %; from the {len(vs)}-seed average: {acc_avg.mean():.2f} ± {acc_avg.std(ddof=1):.2f} %')"),
      new_markdown_cell(
          "## 5. Is a trained layer Gaussian?\n"
          "One-dimensional projections of a layer's neurons against N(0, C): KS distance and"
          " excess kurtosis, p-values from exact Gaussian layers of the same size. Trained vs"
          " initialisation (PyTorch's uniform init: light tails, negative kurtosis)."),
      new_code_cell(
          "j = 1  # the second mixing layer: rows are neurons\n"
          "for label, v in (('trained', vs[0]), ('init', train.select(per_epoch[0], 0))):\n"
          "    rows = spectra.weight_matrix(net.kernels(v)[j])\n"
          "    for kind in ('random', 'principal'):\n"
          "        g = gaussianity.layer_test(jax.random.key(4), rows, num_directions=8,\n"
          "                                   num_null=19 if QUICK else 99, directions=kind)\n"
          "        print(f'{label:8s} {kind:9s} KS {float(g.ks_mean):.3f} (p {float(g.pvalue_ks):.2f}),'\n"
          "              f' kurtosis {float(g.kurtosis_mean):+.2f} (p {float(g.pvalue_kurtosis):.2f})')"),
      new_markdown_cell(
          "## 6. Training dynamics\n"
          "Per epoch, from the weights kept during training: learned components above the"
          " Marchenko–Pastur edge of each layer's initialisation, r² between seeds 0 and 1 at"
          " every mixing layer's input, and rainbow accuracy."),
      new_code_cell(
          "comps, r2s, racc = [], [], []\n"
          "for e, ve in enumerate(per_epoch):\n"
          "    v0, v1 = train.select(ve, 0), train.select(ve, 1)\n"
          "    comps.append([int(spectra.learned_components(spectra.weight_spectrum(k)[0],\n"
          "                                                 spectra.layer_law(k, 'torch')))\n"
          "                  for k in net.kernels(v0)])\n"
          "    f0, f1 = net.layer_inputs(v0, x_test[:1000])[1:], net.layer_inputs(v1, x_test[:1000])[1:]\n"
          "    r2s.append([float(align.align_features(a, b).r2) for a, b in zip(f0, f1)])\n"
          "    racc.append(rainbow_accuracy(jax.random.key(5 + e), variables=v0, samples=2).mean())\n"
          "fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.5))\n"
          "a1.plot(comps, marker='o'); a1.set_ylabel('learned components')\n"
          "a2.plot(r2s, marker='o'); a2.set_ylabel('r², seed 0 vs 1')\n"
          "a3.plot(racc, marker='o', label='rainbow'); a3.plot(range(1, len(per_epoch)), hist.test_accuracy[:, 0], marker='s', label='trained')\n"
          "a3.set_ylabel('test accuracy (%)'); a3.legend()\n"
          "for a in (a1, a2, a3): a.set_xlabel('epoch')"),
  ]


def ensembles_notebook():
  return [
      new_markdown_cell(
          "# Init ensembles: finite-width statistics, theory vs measurement\n\n"
          "Thousands of randomly initialised MLPs, vmapped over PRNG keys: the kernel G2 and"
          " the connected four-point function per layer, against the exact finite-width"
          " theory of deep linear networks and the leading-order 1/n theory for ReLU"
          " (\"The Principles of Deep Learning Theory\"). The Gram sampler draws each layer's"
          " preactivations given the previous layer's Gram matrix — exact, and no n × n"
          " weight matrix."),
      new_code_cell(INSTALL),
      params_cell('QUICK = False      # the tests set True: fewer inits, narrower layers'),
      new_code_cell(
          "import jax, numpy as np\n"
          "import matplotlib.pyplot as plt\n"
          "from rainbow_jax import ensembles as E\n"
          "inits, n = (300, 100) if QUICK else (2000, 1000)\n"
          "rng = np.random.default_rng(0)\n"
          "x = rng.normal(size=(2, 10)).astype(np.float32)\n"
          "x /= np.linalg.norm(x, axis=1, keepdims=True)   # the seed's two unit-norm inputs\n"
          "q0 = float(np.sum(x[0].astype(np.float64) ** 2) / 10)"),
      new_markdown_cell(
          "## Deep linear network, C_W = 100\n"
          "Layers counted from ℓ = 1: G2 = C_W^ℓ q₀ and the cross-neuron connected function"
          " G2²((1 + 2/n)^{ℓ−1} − 1), zero at ℓ = 1. (The seed's notebook indexed layers from"
          " 0, predicting C_W^{ℓ−1} q₀.)"),
      new_code_cell(
          "widths = [n] * 3\n"
          "z = E.sample(jax.random.key(0), x, widths, num_inits=inits, c_w=100.0)\n"
          "th = E.linear_theory(x, widths, c_w=100.0)\n"
          "for l, zl in enumerate(z, start=1):\n"
          "    g = E.kernel(zl); cross, same = E.four_point(zl)\n"
          "    print(f'ℓ={l}: G2 {float(g.value[0,0]):.5g} ± {float(g.error[0,0]):.2g} (theory {th.kernel[l-1][0,0]:.5g})'\n"
          "          f'  cross {float(cross.value[0,0,0,0]):.4g} ± {float(cross.error[0,0,0,0]):.2g}'\n"
          "          f' (theory {th.cross[l-1][0,0,0,0]:.4g})  same {float(same.value[0,0,0,0]):.4g}'\n"
          "          f' ± {float(same.error[0,0,0,0]):.2g} (theory {th.same[l-1][0,0,0,0]:.4g})')\n"
          "    # The exact finite-width theory of a linear network, within 5 standard errors.\n"
          "    assert abs(float(g.value[0, 0]) - th.kernel[l-1][0, 0]) < 5 * float(g.error[0, 0])"),
      new_markdown_cell("## The Gram sampler is brute force in distribution\n"
                        "Same statistics and the same law of a single preactivation (KS test),"
                        " at a size where brute force is cheap."),
      new_code_cell(
          "import scipy.stats\n"
          "kw = dict(num_inits=1000, c_w=2.0, activation='tanh')\n"
          "zg = E.sample(jax.random.key(1), x, [64] * 3, method='gram', **kw)\n"
          "zb = E.sample(jax.random.key(2), x, [64] * 3, method='brute', chunk=100, **kw)\n"
          "for l, (a, b) in enumerate(zip(zg, zb), start=1):\n"
          "    ka, kb = E.kernel(a), E.kernel(b)\n"
          "    print(f'ℓ={l}: G2 gram {float(ka.value[0,0]):.4f} ± {float(ka.error[0,0]):.4f}'\n"
          "          f'  brute {float(kb.value[0,0]):.4f} ± {float(kb.error[0,0]):.4f}'\n"
          "          f'  KS p = {scipy.stats.ks_2samp(np.asarray(a[:,0,0]), np.asarray(b[:,0,0])).pvalue:.2f}')"),
      new_markdown_cell("## Four-point function against ℓ/n\n"
                        "Linear (slope 2) and ReLU at criticality (slope 5): the connected"
                        " function over G2² grows like the depth-to-width ratio."),
      new_code_cell(
          "fig, axes = plt.subplots(1, 2, figsize=(11, 4))\n"
          "for ax, act, cw, slope in ((axes[0], 'linear', 1.0, 2), (axes[1], 'relu', 2.0, 5)):\n"
          "    for width in ((25, 100) if QUICK else (25, 50, 100, 400)):\n"
          "        zz = E.sample(jax.random.key(width), x[:1], [width] * 8, num_inits=inits, c_w=cw, activation=act)\n"
          "        r, e = [], []\n"
          "        for zl in zz:\n"
          "            g = float(E.kernel(zl).value[0, 0]); c = E.four_point(zl)[0]\n"
          "            r.append(float(c.value[0,0,0,0]) / g**2); e.append(float(c.error[0,0,0,0]) / g**2)\n"
          "        ax.errorbar(np.arange(1, 9) / width, r, yerr=e, marker='o', ls='', capsize=2, label=f'n = {width}')\n"
          "    grid = np.linspace(0, 8 / 25, 50)\n"
          "    ax.plot(grid, slope * grid, 'k', lw=0.8, label=f'{slope} ℓ/n (leading order, shifted by 1/n)')\n"
          "    ax.set_xlabel('ℓ / n'); ax.set_ylabel('connected 4-pt / G2²'); ax.set_title(act); ax.legend(fontsize=7)"),
  ]


def your_own_model():
  return [
      new_markdown_cell(
          "# Bring your own model\n\n"
          "Every analysis of rainbow_jax runs on *your* network through one adapter,"
          " `rainbow_jax.network`: `from_linen(module, variables, x)` or `from_nnx(model, x)`"
          " discovers the weight layers (Dense, Conv) in the order the forward pass calls"
          " them, with Flax's own method interception — no extra argument on your model."
          " BatchNorm is read in inference mode (and re-estimated where weights change)."
          " PyTorch weights go through `from_torch`."),
      params_cell("QUICK = False      # the tests set True: less data, fewer steps"),
      new_code_cell(
          INSTALL + "\n"
          "import numpy as np, optax\n"
          "import flax.linen as nn\n"
          "from flax import nnx\n"
          "import matplotlib.pyplot as plt\n"
          "from rainbow_jax import align, data, evaluate, moments, network, plots, rainbow, spectra, svr\n\n"
          "ds = data.load('digits')   # 8×8 digits ship with scikit-learn: offline\n"
          "x, y, x_test, y_test = map(jax.numpy.asarray, (ds.x_train, ds.y_train, ds.x_test, ds.y_test))\n"
          "print(x.shape, ds.source)"),
      new_markdown_cell(
          "## A linen CNN with Flax's default names, biases and BatchNorm\n"
          "Sorted by name its layers would read `Conv_0, Conv_1, Dense_0, Dense_1`; the"
          " adapter reports the call order whatever the names."),
      new_code_cell(
          "class SmallCNN(nn.Module):\n"
          "    @nn.compact\n"
          "    def __call__(self, x, train: bool = False):\n"
          "        x = nn.relu(nn.Conv(16, (3, 3))(x))\n"
          "        x = nn.BatchNorm(use_running_average=not train)(x)\n"
          "        x = nn.relu(nn.Conv(32, (3, 3), strides=2)(x))\n"
          "        x = nn.relu(nn.Dense(64)(x.reshape(x.shape[0], -1)))\n"
          "        return nn.Dense(10)(x)\n\n"
          "m, tx = SmallCNN(), optax.adam(3e-3)\n"
          "def loss(p, bs, xb, yb):\n"
          "    out, upd = m.apply({'params': p, 'batch_stats': bs}, xb, train=True, mutable=['batch_stats'])\n"
          "    return optax.softmax_cross_entropy_with_integer_labels(out, yb).mean(), upd['batch_stats']\n\n"
          "@jax.jit   # one compiled step for every seed\n"
          "def step(p, bs, o, key):\n"
          "    idx = jax.random.choice(key, len(x), (128,))\n"
          "    (l, bs), g = jax.value_and_grad(loss, has_aux=True)(p, bs, x[idx], y[idx])\n"
          "    u, o = tx.update(g, o, p)\n"
          "    return optax.apply_updates(p, u), bs, o\n\n"
          "def fit(seed, steps):\n"
          "    v = m.init(jax.random.key(seed), x[:1])\n"
          "    p, bs = v['params'], v['batch_stats']\n"
          "    o = tx.init(p)\n"
          "    for i in range(steps):\n"
          "        p, bs, o = step(p, bs, o, jax.random.fold_in(jax.random.key(seed), i))\n"
          "    return m, {'params': p, 'batch_stats': bs}\n\n"
          "steps = 100 if QUICK else 600\n"
          "(m, v0), (_, v1) = fit(0, steps), fit(1, steps)\n"
          "net = network.from_linen(m, v0, x[:2])\n"
          "print('weight layers in call order:', net.names)\n"
          "print('kinds:', net.kinds, ' BatchNorm:', net.norms)\n"
          "accs = [round(float(evaluate.accuracy(net, v, x_test, y_test)), 2) for v in (v0, v1)]\n"
          "print('test accuracy of the two seeds (%):', accs)\n"
          "assert net.names == ('Conv_0', 'Conv_1', 'Dense_0', 'Dense_1') and min(accs) > 80"),
      new_markdown_cell(
          "## Alignment of the two seeds at every weight layer's input, one pass\n"
          "`moments.layer_moments` takes the `Network` directly."),
      new_code_cell(
          "stats = moments.layer_moments(net, v0, [x[i:i + 500] for i in range(0, len(x), 500)],\n"
          "                              params2=v1, cross='matched')\n"
          "L = len(net)\n"
          "r2 = [float(align.align_moments(stats, l, L + l).r2) for l in range(L)]\n"
          "assert abs(r2[0] - 1) < 1e-4 and all(0 < v <= 1 + 1e-5 for v in r2)  # layer 1: same pixels\n"
          "plots.bars(r2, list(net.names), ylabel='r² (alignment)', title='seed 0 vs seed 1');"),
      new_markdown_cell(
          "## Weight spectra against Marchenko–Pastur, and clipping\n"
          "`layer_law` takes the initialiser you used: Flax's default LeCun normal here."),
      new_code_cell(
          "init_kernels = net.kernels(m.init(jax.random.key(0), x[:1]))\n"
          "for l, (k, k_init) in enumerate(zip(net.kernels(v0), init_kernels)):\n"
          "    law = spectra.layer_law(k, nn.initializers.lecun_normal())\n"
          "    ev, _ = spectra.weight_spectrum(k)\n"
          "    n = int(spectra.learned_components(ev, law))\n"
          "    print(f'{net.names[l]}: {n} eigenvalues above the Marchenko–Pastur edge')\n"
          "plots.weight_spectrum(ev, spectra.weight_spectrum(k_init)[0], law, title=net.names[-1])\n"
          "_, basis = spectra.activation_spectrum(moments.covariance(stats, 2))\n"
          "ranks = [1, 2, 4, 8, 16, 32]\n"
          "print('clipping the input of', net.names[2], dict(zip(ranks, np.round(\n"
          "      spectra.clip_sweep(net, v0, 2, basis, ranks, x_test, y_test), 1))))"),
      new_markdown_cell("## The SVR of the same network"),
      new_code_cell(
          "g = svr.svr(svr.from_flax(net.kernels(v0)))\n"
          "print('internal dimensions per edge:', g.internal_dims)\n"
          "plots.svr_graph(g);"),
      new_markdown_cell(
          "## Rainbow networks of the BatchNorm CNN\n"
          "Each neuron's (weights, bias) vector is drawn from the trained layer's second"
          " moment and realigned to the sampled network's own basis; after every sampled"
          " layer the generated networks' BatchNorm statistics are re-estimated on the"
          " data (`Network.estimate_batch_stats`, vmapped over the samples) — stale"
          " statistics would normalise new neurons with the old ones' means and variances."
          " In a residual network, layers whose output meets a skip connection keep the"
          " reference's neurons (`net.producers` finds them); see `rainbow_jax.rainbow`."),
      new_code_cell(
          "gen = rainbow.generate(jax.random.key(0), net, v0, x, num_samples=4)\n"
          "acc = np.asarray(evaluate.accuracy(net, gen.params, x_test, y_test, stacked=True))\n"
          "stale = dict(gen.params, batch_stats=jax.tree_util.tree_map(\n"
          "    lambda a: jax.numpy.broadcast_to(a, (4, *a.shape)), v0['batch_stats']))\n"
          "acc_stale = np.asarray(evaluate.accuracy(net, stale, x_test, y_test, stacked=True))\n"
          "print(f'trained {accs[0]:.2f} %; rainbow {acc.mean():.2f} ± {acc.std():.2f} %;'\n"
          "      f' with the reference\\'s stale BatchNorm statistics {acc_stale.mean():.2f} %')\n"
          "assert acc.mean() > 50  # chance: 10 %"),
      new_markdown_cell(
          "## An NNX model, and rainbow networks with biases"),
      new_code_cell(
          "class MLP(nnx.Module):\n"
          "    def __init__(self, rngs):\n"
          "        self.hidden = nnx.List([nnx.Linear(64, 128, rngs=rngs), nnx.Linear(128, 64, rngs=rngs)])\n"
          "        self.head = nnx.Linear(64, 10, rngs=rngs)\n"
          "    def __call__(self, x):\n"
          "        x = x.reshape(x.shape[0], -1)\n"
          "        for layer in self.hidden:\n"
          "            x = nnx.relu(layer(x))\n"
          "        return self.head(x)\n\n"
          "model = MLP(nnx.Rngs(0))\n"
          "opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)\n"
          "@nnx.jit\n"
          "def step(model, opt, xb, yb):\n"
          "    loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()\n"
          "    opt.update(model, nnx.grad(loss)(model))\n"
          "for i in range(steps):\n"
          "    sl = slice((i * 128) % 1280, (i * 128) % 1280 + 128)\n"
          "    step(model, opt, x[sl], y[sl])\n"
          "mlp = network.from_nnx(model, x[:2])\n"
          "mv = network.nnx_variables(model)\n"
          "print('NNX layers:', mlp.names)\n"
          "gen = rainbow.generate(jax.random.key(0), mlp, mv, x, num_samples=4)\n"
          "acc = np.asarray(evaluate.accuracy(mlp, gen.params, x_test, y_test, stacked=True))\n"
          "print(f'trained {float(evaluate.accuracy(mlp, mv, x_test, y_test)):.2f} %;'\n"
          "      f' rainbow {acc.mean():.2f} ± {acc.std():.2f} %')\n"
          "assert mlp.names == ('hidden/0', 'hidden/1', 'head') and acc.mean() > 50"),
      new_markdown_cell(
          "## PyTorch weights\n"
          "`from_torch` takes a module, a state dict or tensors, converts them to the canonical"
          " Flax layout (a linear layer after a conv gets its input reordered from PyTorch's"
          " channels-first flatten), drops biases and BatchNorm vectors like the SVR reference"
          " code — or folds BatchNorm into the preceding layer."),
      new_code_cell(
          "try:\n"
          "    import torch\n"
          "except ImportError:\n"
          "    torch = None\n"
          "    print('torch not installed: pip install torch')\n"
          "if torch is not None:\n"
          "    tm = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),\n"
          "                             torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))\n"
          "    tw = network.from_torch(tm, fold_batchnorm=True)\n"
          "    print(tw.names, [tuple(k.shape) for k in tw.kernels])\n"
          "    print('dropped:', tw.dropped)\n"
          "    print('internal dimensions:', svr.svr(svr.from_flax(tw.kernels)).internal_dims)"),
  ]


if __name__ == "__main__":
  here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "notebooks")
  notebook(moments_and_alignment(), os.path.join(here, "moments_and_alignment.ipynb"))
  notebook(similarity(), os.path.join(here, "similarity.ipynb"))
  notebook(svr_notebook(), os.path.join(here, "svr.ipynb"))
  notebook(rainbow_tutorial(), os.path.join(here, "rainbow_tutorial.ipynb"))
  notebook(ensembles_notebook(), os.path.join(here, "ensembles.ipynb"))
  notebook(your_own_model(), os.path.join(here, "your_own_model.ipynb"))
  notebook(rainbow_paper(), os.path.join(here, "rainbow_paper.ipynb"))
