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
# # Init ensembles: finite-width statistics, theory vs measurement
#
# Thousands of randomly initialised MLPs, vmapped over PRNG keys: the kernel G2 and the connected four-point function per layer, against the exact finite-width theory of deep linear networks and the leading-order 1/n theory for ReLU ("The Principles of Deep Learning Theory"). The Gram sampler draws each layer's preactivations given the previous layer's Gram matrix — exact, and no n × n weight matrix.

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
QUICK = False      # the tests set True: fewer inits, narrower layers

# %%
import jax, numpy as np
import matplotlib.pyplot as plt
from rainbow_jax import ensembles as E
inits, n = (300, 100) if QUICK else (2000, 1000)
rng = np.random.default_rng(0)
x = rng.normal(size=(2, 10)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)   # the seed's two unit-norm inputs
q0 = float(np.sum(x[0].astype(np.float64) ** 2) / 10)

# %% [markdown]
# ## Deep linear network, C_W = 100
# Layers counted from ℓ = 1: G2 = C_W^ℓ q₀ and the cross-neuron connected function G2²((1 + 2/n)^{ℓ−1} − 1), zero at ℓ = 1. (The seed's notebook indexed layers from 0, predicting C_W^{ℓ−1} q₀.)

# %%
widths = [n] * 3
z = E.sample(jax.random.key(0), x, widths, num_inits=inits, c_w=100.0)
th = E.linear_theory(x, widths, c_w=100.0)
for l, zl in enumerate(z, start=1):
    g = E.kernel(zl); cross, same = E.four_point(zl)
    print(f'ℓ={l}: G2 {float(g.value[0,0]):.5g} ± {float(g.error[0,0]):.2g} (theory {th.kernel[l-1][0,0]:.5g})'
          f'  cross {float(cross.value[0,0,0,0]):.4g} ± {float(cross.error[0,0,0,0]):.2g}'
          f' (theory {th.cross[l-1][0,0,0,0]:.4g})  same {float(same.value[0,0,0,0]):.4g}'
          f' ± {float(same.error[0,0,0,0]):.2g} (theory {th.same[l-1][0,0,0,0]:.4g})')
    # The exact finite-width theory of a linear network, within 5 standard errors.
    assert abs(float(g.value[0, 0]) - th.kernel[l-1][0, 0]) < 5 * float(g.error[0, 0])

# %% [markdown]
# ## The Gram sampler is brute force in distribution
# Same statistics and the same law of a single preactivation (KS test), at a size where brute force is cheap.

# %%
import scipy.stats
kw = dict(num_inits=1000, c_w=2.0, activation='tanh')
zg = E.sample(jax.random.key(1), x, [64] * 3, method='gram', **kw)
zb = E.sample(jax.random.key(2), x, [64] * 3, method='brute', chunk=100, **kw)
for l, (a, b) in enumerate(zip(zg, zb), start=1):
    ka, kb = E.kernel(a), E.kernel(b)
    print(f'ℓ={l}: G2 gram {float(ka.value[0,0]):.4f} ± {float(ka.error[0,0]):.4f}'
          f'  brute {float(kb.value[0,0]):.4f} ± {float(kb.error[0,0]):.4f}'
          f'  KS p = {scipy.stats.ks_2samp(np.asarray(a[:,0,0]), np.asarray(b[:,0,0])).pvalue:.2f}')

# %% [markdown]
# ## Four-point function against ℓ/n
# Linear (slope 2) and ReLU at criticality (slope 5): the connected function over G2² grows like the depth-to-width ratio.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, act, cw, slope in ((axes[0], 'linear', 1.0, 2), (axes[1], 'relu', 2.0, 5)):
    for width in ((25, 100) if QUICK else (25, 50, 100, 400)):
        zz = E.sample(jax.random.key(width), x[:1], [width] * 8, num_inits=inits, c_w=cw, activation=act)
        r, e = [], []
        for zl in zz:
            g = float(E.kernel(zl).value[0, 0]); c = E.four_point(zl)[0]
            r.append(float(c.value[0,0,0,0]) / g**2); e.append(float(c.error[0,0,0,0]) / g**2)
        ax.errorbar(np.arange(1, 9) / width, r, yerr=e, marker='o', ls='', capsize=2, label=f'n = {width}')
    grid = np.linspace(0, 8 / 25, 50)
    ax.plot(grid, slope * grid, 'k', lw=0.8, label=f'{slope} ℓ/n (leading order, shifted by 1/n)')
    ax.set_xlabel('ℓ / n'); ax.set_ylabel('connected 4-pt / G2²'); ax.set_title(act); ax.legend(fontsize=7)
