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
# # The rainbow paper's experiments
#
# "A Rainbow in Deep Network Black Boxes" (Guth, Ménard, Rochette & Mallat, 2023) says the neurons of a trained layer are random samples of one distribution — for Gaussian rainbow networks, of a Gaussian of covariance C_ℓ — up to a rotation fixed by the previous layers, and that seeds converge to one network as the widths grow. Each section tests one claim with rainbow_jax's functions:
#
# 1. a learned scattering network (fixed Morlet wavelets, learned 1×1 channel mixings);
# 2. its Gaussian rainbow networks: trained vs rainbow accuracy;
# 3. rainbow networks at other widths, and r² between seeds against the width;
# 4. K seeds aligned to their mean network; rainbow networks from the seed average;
# 5. is a trained layer Gaussian?
# 6. training dynamics.
#
# `experiments/rainbow_accuracy.py` and `experiments/rainbow_paper.py` run the same at full size and write JSON and figures.

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
QUICK = False      # the tests set True: digits, small widths, few epochs

# %%
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from rainbow_jax import (align, consensus, data, evaluate, gaussianity, models, network,
                         rainbow, scaling, spectra, train, wavelets)

name = "digits" if QUICK else DATASET
if name == "auto":
    name = "fashion_mnist" if data.available("fashion_mnist") else "digits"
ds = data.load(name, grayscale=True, normalize='tutorial' if name == 'cifar10' else True)
x, y = ds.x_train, ds.y_train
x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
x_align = x[:1000 if QUICK else 10000]  # images of the rainbow alignments
SEEDS, EPOCHS, S = (3, 2, 2) if QUICK else (4, 3, 8)
WIDTHS = [8, 16] if QUICK else [32, 64, 128]
print(name, x.shape, ds.source)

# %% [markdown]
# ## 1. A learned scattering network
# Every layer filters each channel with a fixed low-pass φ and L Morlet wavelets ψ_θ (scale 2, subsampled by 2), keeps the modulus of the wavelet coefficients (phase collapse), then mixes channels with a learned 1×1 convolution (Guth, Zarka & Mallat, 2022). Only the mixings and the classifier are learned. The filters in space:

# %%
bank = wavelets.filter_bank(32, 4)  # [1 + L, N, N], Fourier domain
space = np.fft.fftshift(np.fft.ifft2(bank), axes=(1, 2))[:, 8:24, 8:24]
fig, axes = plt.subplots(1, len(space), figsize=(2.2 * len(space), 2.4))
for f, ax in enumerate(axes):
    ax.imshow(space[f].real, cmap='RdBu_r'); ax.axis('off')
    ax.set_title('φ' if f == 0 else f'Re ψ, θ = {f - 1}π/4')

# %%
model = models.make('scattering', x.shape[1:], ds.num_classes, widths=WIDTHS)
seeds = list(range(SEEDS))
per_epoch = [train.init(model, train.sgd(), seeds, x.shape[1:]).variables]
state, hist = train.fit(model, x, y, x_test, y_test, seeds=seeds, epochs=EPOCHS,
                        callback=lambda e, st, m: per_epoch.append(st.variables))
vs = [train.select(state.variables, k) for k in seeds]
net = network.from_linen(model, vs[0], x[:2])
print('weight layers:', net.names, net.shapes)
print('test accuracy per seed (%):', np.round(hist.test_accuracy[-1], 2))


# %% [markdown]
# ## 2. Gaussian rainbow networks
# New networks whose mixing weights are Gaussian with the trained layers' aligned covariances, sampled layer by layer, S at once. The paper, on CIFAR-10: 91.6 % trained → 81.4 % rainbow (ratio 0.89).

# %%
def rainbow_accuracy(key, gen=None, factors=None, variables=None, samples=S):
    g = rainbow.generate(key, net, vs[0] if variables is None else variables, x_align,
                         num_samples=samples, gen=gen, factors=factors, progress=False)
    scorer = net if gen is None else gen[0]
    return np.asarray(evaluate.accuracy(scorer, g.params, x_test, y_test, stacked=True))

trained = float(hist.test_accuracy[-1][0])
acc = rainbow_accuracy(jax.random.key(0))
print(f'trained {trained:.2f} %, rainbow {acc.mean():.2f} ± {acc.std(ddof=1):.2f} %,'
      f' ratio {acc.mean() / trained:.3f} (paper: 0.89)')
assert acc.mean() > 100 / ds.num_classes

# %% [markdown]
# ## 3. Width
# Rainbow networks with other numbers of neurons per layer than the trained one.

# %%
factors = [2.0] if QUICK else [0.25, 0.5, 1.0, 2.0, 4.0]
wacc = []
for f in factors:
    gm = models.make('scattering', x.shape[1:], ds.num_classes,
                     widths=[max(1, round(w * f)) for w in WIDTHS])
    gv = gm.init(jax.random.key(1), x[:1])
    wacc.append(rainbow_accuracy(jax.random.key(2), gen=(network.from_linen(gm, gv, x[:2]), gv)))
plt.errorbar(factors, [a.mean() for a in wacc], yerr=[a.std(ddof=1) for a in wacc], marker='o', capsize=3)
plt.axhline(trained, ls=':', color='k', label='trained')
plt.xscale('log', base=2); plt.xlabel('rainbow width / trained width')
plt.ylabel('test accuracy (%)'); plt.legend();

# %% [markdown]
# The slides' theorem: A_ℓ φ_ℓ → φ_ℓ^∞ polynomially in the widths. Two seeds of the MLP [d, n, n, classes] at growing n: 1 − r² between their aligned layers, and its power law.

# %%
ns = [16, 32, 64] if QUICK else [64, 128, 256, 512]
gap = []
for n in ns:
    mlp = models.make('mlp', x.shape[1:], ds.num_classes, widths=[n, n])
    st, _ = train.fit(mlp, x, y, seeds=[0, 1], epochs=1 if QUICK else 2, progress=False)
    mnet = network.from_linen(mlp, train.select(st.params, 0), x[:2])
    f0, f1 = (mnet.layer_inputs(train.select(st.params, k), x_test)[2] for k in (0, 1))
    gap.append(1 - float(align.align_features(f0, f1).r2))
fit = scaling.fit_power_law(jnp.asarray(ns, jnp.float32), jnp.asarray(gap, jnp.float32))
print(f'1 − r² ∝ n^{float(fit.exponent):.2f} ± {float(fit.exponent_se):.2f}')
plt.loglog(ns, gap, 'o-'); plt.xlabel('width n'); plt.ylabel('1 − r² (layer 2, seed 0 vs 1)');

# %% [markdown]
# ## 4. Many seeds
# The K seeds aligned to one mean network at every mixing layer's input (generalised Procrustes), each seed's distance to the seed-averaged covariance, and rainbow networks sampled from that average.

# %%
stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *vs)
x_mean = x_align[:500 if QUICK else 2000]
for j in range(1, len(net) - 1):
    feats = jax.vmap(lambda v: net.layer_inputs(v, x_mean, upto=j)[j])(stacked)
    cross = consensus.seed_cross_moments(feats)
    mean = consensus.align_to_mean(cross)
    own = cross[jnp.arange(len(vs)), jnp.arange(len(vs))]
    dist = consensus.covariance_distances(own, mean.alignments)
    print(f'input of {net.names[j]}: r² to the mean {np.round(np.asarray(mean.r2), 3)},'
          f' covariance distance {np.round(np.asarray(dist), 3)}')
avg_factors, _ = rainbow.seed_averaged_factors(net, vs, x_mean)
acc_avg = rainbow_accuracy(jax.random.key(3), factors=avg_factors)
print(f'rainbow from seed 0: {acc.mean():.2f} %; from the {len(vs)}-seed average: {acc_avg.mean():.2f} ± {acc_avg.std(ddof=1):.2f} %')

# %% [markdown]
# ## 5. Is a trained layer Gaussian?
# One-dimensional projections of a layer's neurons against N(0, C): KS distance and excess kurtosis, p-values from exact Gaussian layers of the same size. Trained vs initialisation (PyTorch's uniform init: light tails, negative kurtosis).

# %%
j = 1  # the second mixing layer: rows are neurons
for label, v in (('trained', vs[0]), ('init', train.select(per_epoch[0], 0))):
    rows = spectra.weight_matrix(net.kernels(v)[j])
    for kind in ('random', 'principal'):
        g = gaussianity.layer_test(jax.random.key(4), rows, num_directions=8,
                                   num_null=19 if QUICK else 99, directions=kind)
        print(f'{label:8s} {kind:9s} KS {float(g.ks_mean):.3f} (p {float(g.pvalue_ks):.2f}),'
              f' kurtosis {float(g.kurtosis_mean):+.2f} (p {float(g.pvalue_kurtosis):.2f})')

# %% [markdown]
# ## 6. Training dynamics
# Per epoch, from the weights kept during training: learned components above the Marchenko–Pastur edge of each layer's initialisation, r² between seeds 0 and 1 at every mixing layer's input, and rainbow accuracy.

# %%
comps, r2s, racc = [], [], []
for e, ve in enumerate(per_epoch):
    v0, v1 = train.select(ve, 0), train.select(ve, 1)
    comps.append([int(spectra.learned_components(spectra.weight_spectrum(k)[0],
                                                 spectra.layer_law(k, 'torch')))
                  for k in net.kernels(v0)])
    f0, f1 = net.layer_inputs(v0, x_test[:1000])[1:], net.layer_inputs(v1, x_test[:1000])[1:]
    r2s.append([float(align.align_features(a, b).r2) for a, b in zip(f0, f1)])
    racc.append(rainbow_accuracy(jax.random.key(5 + e), variables=v0, samples=2).mean())
fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.5))
a1.plot(comps, marker='o'); a1.set_ylabel('learned components')
a2.plot(r2s, marker='o'); a2.set_ylabel('r², seed 0 vs 1')
a3.plot(racc, marker='o', label='rainbow'); a3.plot(range(1, len(per_epoch)), hist.test_accuracy[:, 0], marker='s', label='trained')
a3.set_ylabel('test accuracy (%)'); a3.legend()
for a in (a1, a2, a3): a.set_xlabel('epoch')
