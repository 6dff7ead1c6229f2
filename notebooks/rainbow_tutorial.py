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
# # The rainbow tutorial with rainbow_jax
#
# What has a trained network learned, and is it the same across training runs? This notebook runs the whole tutorial as jitted, vmapped functions: K seeds trained as one program, activation and weight spectra (against the Marchenko–Pastur law), clipping, alignment of two seeds, eigenvector stability, and Gaussian *rainbow* networks sampled from a trained one. Fashion-MNIST offline; on Colab set `DATASET = 'cifar10'` (grayscale, through tensorflow-datasets) for the tutorial's own data.

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
DATASET = "auto"   # fashion_mnist when installed, else digits; or cifar10 (tfds)
ARCH = "mlp"       # or "cnn"
QUICK = False      # the tests set True: less data, fewer epochs and samples

# %%
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from rainbow_jax import align, data, evaluate, models, moments, network, plots, rainbow, spectra, train

name = DATASET if DATASET != "auto" else ("fashion_mnist" if data.available("fashion_mnist") else "digits")
ds = data.load(name, grayscale=True, normalize='tutorial' if name == 'cifar10' else True)
n_train = 2000 if QUICK else len(ds.x_train)
x, y = ds.x_train[:n_train], ds.y_train[:n_train]
x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
arch = ARCH if name != 'digits' else 'mlp'  # 8×8 digits are too small for the CNN
print(name, x.shape, ds.source)

# %% [markdown]
# ## Train K seeds as one program
# The tutorial's hyperparameters: SGD, learning rate 0.01, momentum 0.9, batch 128, PyTorch-default initialisation, no biases.

# %%
seeds = [0, 1, 2]
model = models.make(arch, x.shape[1:], ds.num_classes)
init_params = train.init(model, train.sgd(), seeds, x.shape[1:]).params
state, hist = train.fit(model, x, y, x_test, y_test, seeds=seeds, epochs=1 if QUICK else 5)
params = [train.select(state.params, k) for k in range(len(seeds))]
net = network.from_linen(model, params[0], x[:2])  # the analyses see any model this way
print('weight layers in call order:', net.names)
print('test accuracy per seed (%):', np.round(hist.test_accuracy[-1], 2))

# %% [markdown]
# ## Activation covariances of two seeds, one streamed pass
# Every layer's input, self and cross second moments of seeds 0 and 1.

# %%
batches = [x[i:i + 1000] for i in range(0, len(x), 1000)]
stats = moments.layer_moments(net, params[0], batches, params2=params[1], cross='matched')
L = len(stats.dims) // 2
fig, axes = plt.subplots(1, L, figsize=(4.5 * L, 3.8))
act = []
for l in range(L):
    ev0, e0 = spectra.activation_spectrum(moments.covariance(stats, l))
    ev1, e1 = spectra.activation_spectrum(moments.covariance(stats, L + l))
    act.append((ev0, e0, e1))
    plots.spectrum([ev0, ev1], ['seed 0', 'seed 1'], title=f'input to layer {l + 1}', ax=axes[l])

# %% [markdown]
# ## Weight spectra against Marchenko–Pastur
# At initialisation the weight covariance follows the Marchenko–Pastur law; eigenvalues above its edge after training are the learned components.

# %%
kernels = net.kernels(params[0])
init_kernels = net.kernels(train.select(init_params, 0))
for l, (k, k0) in enumerate(zip(kernels, init_kernels)):
    ev, _ = spectra.weight_spectrum(k)
    ev0, _ = spectra.weight_spectrum(k0)
    law = spectra.layer_law(k, 'torch')
    n = int(spectra.learned_components(ev, law))
    plots.weight_spectrum(ev, ev0, law, title=f'layer {l + 1}: {n} learned components')

# %% [markdown]
# ## Clipping
# Project layer 2's input on its top-k eigenvectors (activation or weight) and measure the accuracy left; every k of both bases in one vmapped evaluation.

# %%
layer = 1
_, wvec = spectra.weight_spectrum(kernels[layer])
_, e_act, _ = act[layer]
ranks = [1, 2, 4, 8, 16, 32, 64, 128, e_act.shape[0]]
w_ranks = [r for r in ranks if r <= wvec.shape[0]]
acc_act, acc_w = spectra.clip_sweep(net, params[0], layer, [e_act, wvec], [ranks, w_ranks],
                                    x_test, y_test)
plt.figure(figsize=(5, 3.8))
plt.plot(ranks, acc_act, 'o-', label='activation eigenvectors')
plt.plot(w_ranks, acc_w, 's-', label='weight eigenvectors')
plt.axhline(hist.test_accuracy[-1][0], color='k', ls=':', label='unclipped')
plt.xscale('log'); plt.xlabel('rank k'); plt.ylabel('test accuracy (%)'); plt.legend();

# %% [markdown]
# ## Alignment of two seeds and eigenvector stability
# A = UVᵀ from E[ψφᵀ] = UΣVᵀ; r² = tr Σ / √(E‖φ‖² E‖ψ‖²). After alignment the top eigenvectors of the two seeds coincide.

# %%
r2 = []
fig, axes = plt.subplots(1, L, figsize=(4.5 * L, 3.8))
for l in range(L):
    al = align.align_moments(stats, l, L + l)
    r2.append(float(al.r2))
    ev0, e0, e1 = act[l]
    plots.stability(align.stability(e0, e1, al.matrix), title=f'layer {l + 1}, r² = {r2[-1]:.3f}', ax=axes[l])
print('r² per layer:', np.round(r2, 4))
assert all(0.0 < v <= 1.0 + 1e-6 for v in r2)

# %% [markdown]
# ## Rainbow networks
# Sample new networks layer by layer from the weight covariances of seed 0, realigning each layer with one data pass; all samples in one compiled program. Then: covariances averaged over the three seeds, and a wider network.

# %%
S = 2 if QUICK else 8
gen = rainbow.generate(jax.random.key(0), net, params[0], x, num_samples=S)
acc = np.asarray(evaluate.accuracy(net, gen.params, x_test, y_test, stacked=True))
print(f'reference {hist.test_accuracy[-1][0]:.2f} %; rainbow {acc.mean():.2f} ± {acc.std():.2f} %')
print('alignment r² per sample and layer:', np.round(np.asarray(gen.r2), 3))
assert acc.mean() > 100 / ds.num_classes  # rainbow networks are far above chance
assert np.all((np.asarray(gen.r2) > 0) & (np.asarray(gen.r2) <= 1 + 1e-6))

# %%
# Average the weight covariances over seeds: bring seeds 1, 2 into seed 0's basis.
alignments = []
for k in (1, 2):
    st = moments.layer_moments(net, params[0], batches, params2=params[k], cross='matched')
    alignments.append([None] + [align.align_moments(st, l, L + l).matrix for l in range(1, L)])
factors = rainbow.reference_factors([net.kernels(p) for p in params], alignments)
gen_avg = rainbow.generate(jax.random.key(1), net, params[0], x, num_samples=S, factors=factors)
acc_avg = np.asarray(evaluate.accuracy(net, gen_avg.params, x_test, y_test, stacked=True))
print(f'averaged over {len(params)} seeds: {acc_avg.mean():.2f} ± {acc_avg.std():.2f} %')
if arch == 'mlp':
    wide = models.make('mlp', x.shape[1:], ds.num_classes, widths=[1024, 512])
    wide_p = wide.init(jax.random.key(0), x[:1])['params']
    wide_net = network.from_linen(wide, wide_p, x[:2])
    gw = rainbow.generate(jax.random.key(2), net, params[0], x, num_samples=S, gen=(wide_net, wide_p))
    acc_w = np.asarray(evaluate.accuracy(wide_net, gw.params, x_test, y_test, stacked=True))
    print(f'twice as wide: {acc_w.mean():.2f} ± {acc_w.std():.2f} %')
