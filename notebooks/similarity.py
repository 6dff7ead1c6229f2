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
# # Representational similarity: CCA, SVCCA, PWCCA and CKA
#
# The SVCCA tutorial's walk-through on `rainbow_jax.similarity`: toy data first (why the number of datapoints per neuron matters, and what unrelated data scores by chance), then two networks trained from different seeds, compared layer by layer. The native API takes **datapoints × neurons** arrays; `rainbow_jax.compat.svcca` takes google/svcca's neurons × datapoints.

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
QUICK = False      # the tests set True: smaller data, one epoch

# %%
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from rainbow_jax import data, models, network, similarity as S, train
key = jax.random.key(0)

# %% [markdown]
# ## Toy data: an invertible map scores 1, noise lowers it
# CCA is invariant to invertible linear maps; CKA only to rotations and isotropic scaling.

# %%
ka, kt, kn = jax.random.split(key, 3)
a = jax.random.normal(ka, (2000, 50))
b = a @ jax.random.normal(kt, (50, 50))
noisy = b + 2.0 * jax.random.normal(kn, b.shape)
for name, other in [('A·T', b), ('A·T + noise', noisy)]:
    print(f'{name:12s} mean CCA {float(S.cca(a, other).mean):.3f}   PWCCA'
          f' {float(S.pwcca(a, other).value):.3f}   linear CKA {float(S.linear_cka(a, other)):.3f}')
assert float(S.cca(a, b).mean) > 0.999 > float(S.cca(a, noisy).mean)  # invariance

# %% [markdown]
# ## Datapoints vs neurons
# With few datapoints per neuron, CCA of *independent* data is high by chance — the tutorial's warning. `null_baseline` gives that chance level and its spread (here: independent Gaussian data of the same shapes, 32 draws, one jitted call).

# %%
d = 50
sizes = [60, 100, 200, 500, 1000] if QUICK else [60, 100, 200, 500, 1000, 2000, 5000]
fn = lambda x, y: S.cca(x, y).mean
nulls = []
for n in sizes:
    z = jnp.zeros((n, d))
    nulls.append(S.null_baseline(fn, z, z, jax.random.fold_in(key, n), num_samples=32,
                                 method='gaussian'))
means = np.array([float(b.mean) for b in nulls]); stds = np.array([float(b.std) for b in nulls])
plt.errorbar(np.array(sizes) / d, means, yerr=stds, marker='o')
plt.xscale('log'); plt.xlabel('datapoints per neuron'); plt.ylabel('mean CCA of independent data')
plt.title('CCA is high by chance with few datapoints'); plt.grid(alpha=0.3);

# %% [markdown]
# ## Two networks from different seeds
# Train two MLPs (vmapped over seeds) and collect each layer's input on test images.

# %%
name = DATASET if DATASET != "auto" else ("fashion_mnist" if data.available("fashion_mnist") else "digits")
ds = data.load(name)
n_train = 5000 if QUICK else len(ds.x_train)
model = models.make('mlp', ds.x_train.shape[1:], ds.num_classes, widths=[256, 128])
state, hist = train.fit(model, ds.x_train[:n_train], ds.y_train[:n_train], ds.x_test, ds.y_test,
                        seeds=(0, 1), epochs=1 if QUICK else 5, progress=False)
print(name, 'test accuracy per seed:', np.round(hist.test_accuracy[-1], 4))
x_eval = ds.x_test[:2000]
net = network.from_linen(model, train.select(state.params, 0), x_eval[:2])
acts = [net.layer_inputs(train.select(state.params, k), x_eval) for k in (0, 1)]
print('layer widths:', [a.shape[1] for a in acts[0]])

# %% [markdown]
# ### Layer × layer, one jitted call per measure
# Widths differ (pixels, 256, 128); every entry equals the measure on that pair alone.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4))
labels = ['pixels', 'hidden 1', 'hidden 2']
for ax, measure in zip(axes, ['linear_cka', 'pwcca', 'svcca']):
    kw = dict(keep=20) if measure == 'svcca' else {}
    m = np.asarray(S.pairwise(acts[0], acts[1], measure=measure, epsilon=1e-6, **kw))
    im = ax.imshow(m, vmin=0, vmax=1, cmap='viridis')
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, f'{v:.2f}', ha='center', va='center', color='w')
    ax.set_xticks(range(3), labels); ax.set_yticks(range(3), labels)
    ax.set_xlabel('seed 1'); ax.set_ylabel('seed 0'); ax.set_title(measure)
    assert abs(m[0, 0] - 1) < 1e-3  # both seeds see the same pixels
fig.colorbar(im, ax=axes, shrink=0.8);

# %% [markdown]
# ### Scores against the null
# Permuting one network's datapoints keeps each layer's distribution and destroys the correspondence: the score unrelated activations get.

# %%
h0, h1 = acts[0][1], acts[1][1]
for label, fn in [('SVCCA (20 dirs)', lambda x, y: S.svcca(x, y, keep=20, epsilon=1e-6).mean),
                  ('linear CKA', S.linear_cka)]:
    null = S.null_baseline(fn, h0, h1, key, num_samples=16 if QUICK else 64)
    score = null.score  # fn(h0, h1), computed in the same program as the draws
    print(f'{label:16s} {float(score):.3f}   null {float(null.mean):.3f} ± {float(null.std):.3f}'
          f'   z = {float(null.zscore()):.0f}')
    assert float(null.zscore()) > 5  # trained seeds share far more than chance

# %% [markdown]
# ### Canonical correlations of the first hidden layer
# SVCCA on the top principal directions, and PWCCA's weights.

# %%
sv = S.svcca(h0, h1, keep=20, epsilon=1e-6)
pw = S.pwcca(h0, h1, epsilon=1e-6)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
axes[0].plot(np.asarray(sv.coefficients[:int(sv.num_coefficients)]), marker='.')
axes[0].set_title(f'SVCCA coefficients (mean {float(sv.mean):.3f})'); axes[0].set_xlabel('direction')
k = int(pw.num_coefficients)
axes[1].plot(np.asarray(pw.coefficients[:k]), label='coefficient')
axes[1].plot(np.asarray(pw.weights[:k]) * k, label='weight × k')
axes[1].set_title(f'PWCCA {float(pw.value):.3f}'); axes[1].legend(); axes[1].set_xlabel('direction');

# %% [markdown]
# ## Coming from google/svcca?
# Change the import: same signatures, same dict, numpy out.

# %%
import rainbow_jax.compat.svcca as cca_core
res = cca_core.get_cca_similarity(np.asarray(h0).T, np.asarray(h1).T, epsilon=1e-6, verbose=False)
print(sorted(res)); print('mean', float(res['mean'][0]))
