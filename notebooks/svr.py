# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The Singular Value Representation (SVR) of a network
#
# Meller & Berkouk's SVR turns a network's weights into a graph: every singular value of every layer is a *spectral neuron*, and spectral neurons of consecutive layers are joined by how much one's output direction overlaps the next one's input direction. Edges are kept when they are unlikely under random weights (exact Beta null laws, or the paper's χ²), and the *internal dimensions* say how many spectral neurons a layer really uses. No data is needed — only weights. `rainbow_jax.svr` takes weights in its native (PyTorch) layout, Flax kernels through `from_flax`, and PyTorch modules through `svr.from_flax(network.from_torch(module).kernels)`.

# %%
# Install on Colab (or any fresh runtime): rainbow_jax from a clone of the repository.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("rainbow_jax") is None:
    root = os.path.abspath("..")
    if not os.path.exists(os.path.join(root, "pyproject.toml")):
        raise RuntimeError("Clone the rainbow_jax repository and open this notebook"
                           " from its notebooks/ folder (or pip install it) first.")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", f"{root}[plots]"])
import jax
print("JAX devices:", jax.devices())  # GPU/TPU are used when present

# %% tags=["parameters"]
DATASET = "auto"   # fashion_mnist when installed, else sklearn digits
QUICK = False      # the tests set True: less data, fewer epochs

# %%
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from rainbow_jax import data, models, network, plots, svr, train

name = DATASET if DATASET != "auto" else ("fashion_mnist" if data.available("fashion_mnist") else "digits")
ds = data.load(name)
n_train = 5000 if QUICK else len(ds.x_train)
epochs = 1 if QUICK else 5
print(name, ds.x_train.shape, ds.source)

# %% [markdown]
# ## An MLP before and after training (the paper's Figure 2)
# Four seeds of a bias-free [d, 40, 40, 40, 10] ReLU MLP, trained as one vmapped program.

# %%
seeds = [0, 1, 2, 3]
mlp = models.make('mlp', ds.x_train.shape[1:], ds.num_classes, widths=[40, 40, 40])
init_params = train.init(mlp, train.sgd(), seeds, ds.x_train.shape[1:]).params
state, hist = train.fit(mlp, ds.x_train[:n_train], ds.y_train[:n_train], ds.x_test, ds.y_test,
                        seeds=seeds, epochs=epochs, progress=False)
print('test accuracy per seed (%):', np.round(hist.test_accuracy[-1], 2))
net = network.from_linen(mlp, train.select(state.params, 0), ds.x_train[:2])
native = lambda params, k: svr.from_flax(net.kernels(train.select(params, k)))
before, after = svr.svr(native(init_params, 0)), svr.svr(native(state.params, 0))
fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
plots.svr_graph(before, title='random initialisation', ax=axes[0])
plots.svr_graph(after, title='after training', ax=axes[1]);

# %% [markdown]
# Vertices are singular values (log scale), coloured by how far their column of the next adjacency deviates from random; edges are the significant ones (p < 0.15). After training, the top spectral neurons connect strongly: a block in every adjacency matrix, whose size is the internal dimension.

# %%
fig, axes = plt.subplots(2, 3, figsize=(14, 8))
for row, (tag, res) in enumerate([('init', before), ('trained', after)]):
    for e in range(3):
        plots.adjacency(res.adjacency[e], ax=axes[row, e], dims=res.internal_dims[e],
                        title=f'{tag}: edge {e + 1}, (d_out, d_in) = {res.internal_dims[e]}')

# %% [markdown]
# ## Thresholds: exact vs asymptotic null laws
# Between independent random layers with c shared channels and P positions (dense: P = 1), an edge weight is exactly Beta(P/2, (c − 1)P/2); the paper's χ²(P)/(cP) is its large-c limit. At small c the χ² threshold is too high or too low; Benjamini–Hochberg controls the false discoveries over all edges.

# %%
for c, p in [(5, 1), (40, 1), (512, 1), (16, 9), (512, 9)]:
    ex, asym = svr.null_law(c, p), svr.null_law(c, p, exact=False)
    print(f'c={c:4d} P={p}: threshold at p = 0.15  exact {ex.isf(0.15):.4f}  χ² {asym.isf(0.15):.4f}'
          f'   at p = 0.001  exact {ex.isf(1e-3):.4f}  χ² {asym.isf(1e-3):.4f}')
    if c == 512:  # the paper's χ² law is the exact law's large-c limit
        assert abs(asym.isf(0.15) / ex.isf(0.15) - 1) < 0.02
fdr = svr.svr(native(state.params, 0), fdr=0.05)
for e in range(3):
    print(f'edge {e + 1}: significant at p < 0.15: {int(after.significant[e].sum()):5d}'
          f'   BH at FDR 5 %: {int(fdr.significant[e].sum()):5d}   of {after.adjacency[e].size}')
    assert int(fdr.significant[e].sum()) <= int(after.significant[e].sum())  # BH is stricter
print('first significant edges:', {k: v[:5] for k, v in svr.edges(fdr).items()})

# %% [markdown]
# ## Internal dimensions over seeds, and pruning to them
# Keeping each layer's top spectral neurons up to its internal dimensions is an SVD compression (`keep_ranks`, `low_rank`); the paper finds it costs about 1 % accuracy.

# %%
pruned, ranks = [], []
for k in range(len(seeds)):
    res = svr.svr(native(state.params, k))
    ranks.append(svr.keep_ranks(res))
    p = train.select(state.params, k)
    pruned.append(net.with_kernels(p, svr.to_flax(svr.low_rank(native(state.params, k), ranks[-1]))))
    print(f'seed {k}: internal dims {res.internal_dims}, ranks kept {ranks[-1]}')
pruned = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *pruned)
acc_pruned = np.asarray(train.accuracy(pruned, jnp.asarray(ds.x_test), jnp.asarray(ds.y_test), model=mlp))
print('accuracy  full:', np.round(hist.test_accuracy[-1], 2), ' pruned:', np.round(acc_pruned, 2))

# %% [markdown]
# ## A CNN
# The tutorial's CNN (two 5×5 conv layers, stride 2, then a dense classifier). Conv kernels are flattened to (C_out, C_in·K²); an edge between conv layers sees the K² kernel taps, and the conv → dense edge sees the spatial positions of the flattened map.

# %%
cnn = models.make('cnn', ds.x_train.shape[1:], ds.num_classes)
cstate, chist = train.fit(cnn, ds.x_train[:n_train], ds.y_train[:n_train], ds.x_test, ds.y_test,
                          seeds=[0], epochs=epochs, progress=False)
cp = train.select(cstate.params, 0)
cres = svr.svr(svr.from_flax(network.from_linen(cnn, cp, ds.x_train[:2]).kernels(cp)))
print('test accuracy (%):', np.round(chist.test_accuracy[-1], 2))
print('shared channels, positions per edge:', list(zip(cres.channels, cres.positions)))
print('internal dimensions:', cres.internal_dims)
fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
plots.svr_graph(cres, title='CNN SVR', ax=axes[0])
for e in range(2):
    plots.adjacency(cres.adjacency[e], ax=axes[e + 1], dims=cres.internal_dims[e],
                    title=f'edge {e + 1}');

# %% [markdown]
# ## Large networks
# For a torchvision model: `svr.svr(svr.from_flax(network.from_torch(model).kernels))` (`network.from_torch` reads modules and state dicts). `top_k=` with a `key` switches layers larger than k to a randomized top-k SVD; `benchmarks/svr.py` times a full VGG16.
