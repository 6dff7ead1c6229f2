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
# # Streaming covariances and alignment of two networks
#
# One pass over a dataset gives every layer's activation second moment of two networks and their cross second moments (`rainbow_jax.moments`), in float32 with Chan's pairwise update and Kahan compensation. From those, `rainbow_jax.align` finds the orthogonal map A = UVᵀ (E[ψφᵀ] = UΣVᵀ) that aligns the networks and the variance it explains, r² = tr Σ / √(E‖φ‖² E‖ψ‖²).

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
QUICK = False      # the tests set True: fewer samples

# %%
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from rainbow_jax import align, data, models, moments, network, plots

name = DATASET if DATASET != "auto" else ("fashion_mnist" if data.available("fashion_mnist") else "digits")
ds = data.load(name)
x = ds.x_train[:2000] if QUICK else ds.x_train
print(name, x.shape, ds.source)

# %% [markdown]
# ## Pixel covariance, streamed over batches
# A host iterator of batches; the ragged last batch is padded and masked, so it is counted exactly and compiles nothing new.

# %%
flat = x.reshape(len(x), -1)
stats = moments.accumulate((flat[i:i + 512] for i in range(0, len(flat), 512)))
cov = moments.covariance(stats)
ref = flat.astype(np.float64).T @ flat.astype(np.float64) / len(flat)
rel = float(np.linalg.norm(cov - ref) / np.linalg.norm(ref))
print("samples", int(stats.count[0]), " relative error vs float64:", rel)
assert int(stats.count[0]) == len(flat) and rel < 1e-5
eigvals, _ = align.eigh_descending(cov)
plots.spectrum([eigvals], ["pixels"], title="Pixel second-moment spectrum");

# %% [markdown]
# ## Two networks, all layers, one pass
# Two bias-free MLPs from different random keys (PyTorch-default init).

# %%
model = models.make('mlp', x.shape[1:], ds.num_classes, widths=[256, 128])
k1, k2 = jax.random.split(jax.random.key(0))
p1 = model.init(k1, x[:1])['params']
p2 = model.init(k2, x[:1])['params']
net = network.from_linen(model, p1, x[:2])   # any Flax model: layers in call order
stats = moments.layer_moments(net, p1, (x[i:i + 500] for i in range(0, len(x), 500)),
                              params2=p2, cross='matched')
L = len(stats.dims) // 2
alignments = [align.align_moments(stats, l, L + l) for l in range(L)]
for l, a in enumerate(alignments):
    print(f'input to layer {l + 1}: r² = {float(a.r2):.4f}')
# Both networks read the same pixels: all of the input is explained.
assert float(alignments[0].r2) > 0.9999

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
e1 = align.eigh_descending(moments.covariance(stats, 1))[1]
e2 = align.eigh_descending(moments.covariance(stats, L + 1))[1]
plots.stability(align.stability(e1, e2, alignments[1].matrix), ax=axes[0],
                title='activation eigenvectors, aligned')
plots.stability(align.stability(e1, e2[:, :]), ax=axes[1],
                title='activation eigenvectors, not aligned')
plt.tight_layout()

# %% [markdown]
# Aligned, the top eigenvectors of the two random networks match (bright diagonal); without the alignment they do not.
