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
# # Transformers: what a ViT learned, and whether two seeds learned the same
#
# The analyses of rainbow_jax run on attention, embeddings and depthwise convolutions as on dense layers. The adapter reads each attention projection (query, key, value, output) as its `[d_model, heads·head_dim]` matrix with the heads kept as metadata, an embedding table as a dense layer whose input is the one-hot tokens, and a token sequence `[B, T, d]` with tokens as samples (or one vector per sequence: `conv="mean"` or `"cls"`).
#
# This notebook trains two seeds of a small ViT, compares them (CKA, alignment r²), looks at the power-law exponents of the projections, samples rainbow networks that resample the MLP neurons, reads a PyTorch transformer's weights, and ends with the Fourier structure of a transformer trained on modular addition (Nanda et al. 2023). `experiments/transformers.py` runs the same at full size.

# %% tags=["parameters"]
QUICK = False      # the tests set True: less data, fewer steps

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
import numpy as np, optax
import matplotlib.pyplot as plt
from rainbow_jax import (align, data, evaluate, fourier, models, network, plots, rainbow,
                         similarity, spectra, train)

name = "fashion_mnist" if data.available("fashion_mnist") and not QUICK else "digits"
ds = data.load(name, grayscale=True, normalize=True)
x, y = ds.x_train, ds.y_train
print(name, x.shape, ds.source)

# %% [markdown]
# ## Two ViT seeds, trained as one program
# `models.ViT`: patch embedding, class token, position embedding, pre-norm blocks (LayerNorm → multi-head attention → LayerNorm → MLP), AdamW with warm-up and cosine decay (`train.adamw`).

# %%
width, depth, heads = (16, 2, 2) if QUICK else (64, 4, 4)
epochs = 2 if QUICK else 5
vit = models.make("vit", x.shape[1:], ds.num_classes, widths=[width, depth, heads])
steps = epochs * -(-len(x) // 128)
state, hist = train.fit(vit, x, y, ds.x_test, ds.y_test, seeds=[0, 1], epochs=epochs,
                        tx=train.adamw(1e-3, warmup_steps=steps // 10, total_steps=steps))
seeds = [train.select(state.variables, k) for k in range(2)]
print("test accuracy per seed:", hist.test_accuracy[-1])

net = network.from_linen(vit, seeds[0], x[:2])
for l in net.layers[:8]:
    print(f"{l.name:30s} {l.kind:10s} canonical {l.kernel_shape}, stored {l.stored_shape},"
          f" heads {l.heads}, input {l.input_shape}")

# %% [markdown]
# ## Do two seeds see alike? Layer × layer CKA
# Every weight layer's input, tokens averaged per image (`conv="mean"`); query, key and value read one input, so only the query is kept.

# %%
xt = ds.x_test[:500 if QUICK else 2000]
keep = [j for j, n in enumerate(net.names) if not n.endswith(("/key", "/value"))]
reps = [[r[j] for j in keep] for r in
        (evaluate.representations(net, v, xt, conv="mean") for v in seeds)]
cka = similarity.pairwise(reps[0], reps[1], measure="linear_cka")
labels = [net.names[j].replace("block_", "b").replace("attention/", "") for j in keep]
plots.heatmap(np.asarray(cka), labels, labels, title="linear CKA, ViT seed 0 × seed 1",
              xlabel="seed 1", ylabel="seed 0")
plt.show()

# %% [markdown]
# ## Alignment r² at every block, tokens as samples
# The aligned r² of the tutorial (`align.align_features`): how much of seed 1's representation a linear map of seed 0's explains, at each block's (LayerNorm'd) residual stream and MLP hidden layer.

# %%
ins = [net.layer_inputs(v, xt[:300]) for v in seeds]
for b in range(depth):
    row = []
    for kind in ("attention/query", "mlp_down"):
        j = net.names.index(f"block_{b}/{kind}")
        f0, f1 = (similarity.features(i[j], "positions") for i in ins)
        row.append(float(align.align_features(f0, f1).r2))
    print(f"block {b}: r² stream {row[0]:.3f}, MLP hidden {row[1]:.3f}")

# %% [markdown]
# ## Heavy tails: the power-law α of every projection (WeightWatcher's fit)

# %%
for name_, kernel in zip(net.names, net.kernels(seeds[0])):
    fit = spectra.power_law(spectra.esd(kernel))
    print(f"{name_:30s} α = {float(fit.alpha):.2f}")

# %% [markdown]
# ## Rainbow networks: resample each block's MLP neurons
# The up → GELU → down link is a plain chain link, so `rainbow.generate` samples the MLP's hidden neurons from the learned weight covariance; the layers that write into the residual stream keep the reference's neurons, realigned.

# %%
gen = rainbow.generate(jax.random.key(0), net, seeds[0], x[:500 if QUICK else 10000],
                       num_samples=2, progress=False)
acc = evaluate.accuracy(net, gen.params, ds.x_test, ds.y_test, stacked=True)
print("rainbow accuracy:", np.round(np.asarray(acc), 2), "vs trained",
      round(float(hist.test_accuracy[-1][0]), 2))

# %% [markdown]
# ## A PyTorch transformer's weights
# `network.from_torch` splits `nn.MultiheadAttention`'s packed `in_proj_weight` into query, key and value, keeps embeddings and reads Hugging Face names and GPT-2's `Conv1D` layout; spectra and the SVR then read the kernels.

# %%
try:
    import torch
    layer = torch.nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True)
    tw = network.from_torch(layer)
    for n_, k_, kind in zip(tw.names, tw.kernels, tw.kinds):
        print(f"{n_:32s} {kind:9s} {tuple(k_.shape)}  α = "
              f"{float(spectra.power_law(spectra.esd(k_)).alpha):.2f}")
except ImportError:
    print("torch is not installed: pip install torch")

# %% [markdown]
# ## Modular addition: a few key frequencies carry the embedding
# A one-block decoder-only transformer (`models.Transformer`) trained on (a + b) mod p with AdamW and weight decay 1 (Power et al. 2022, Nanda et al. 2023). The embedding table's power per frequency (`fourier.frequency_power`) concentrates on a few key frequencies while the test accuracy climbs (grokking); at initialisation it is spread evenly.

# %%
p = 13 if QUICK else 23
mod = data.modular_addition(p, train_fraction=0.6)
tr = models.Transformer(vocab=p + 1, num_classes=p, width=32 if QUICK else 48, heads=4)
st, h = train.fit(tr, mod.x_train, mod.y_train, mod.x_test, mod.y_test, seeds=[0, 1],
                  epochs=100 if QUICK else 1500, batch_size=len(mod.x_train),
                  tx=optax.adamw(3e-3, b1=0.9, b2=0.98, weight_decay=1.0), progress=False)
tnet = network.from_linen(tr, train.select(st.params, 0), mod.x_train[:2])
fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
ax[0].plot(h.train_accuracy[:, 0], label="train"); ax[0].plot(h.test_accuracy[:, 0], label="test")
ax[0].set_xlabel("step"); ax[0].set_ylabel("accuracy (%)"); ax[0].legend()
for k in range(2):
    fp = fourier.frequency_power(tnet.kernels(train.select(st.params, k))[0], p)
    ax[1].plot(np.asarray(fp.frequencies)[1:], np.asarray(fp.power)[1:], "o-", label=f"seed {k}")
    print(f"seed {k}: key frequencies {fourier.key_frequencies(fp, 0.8)}")
ax[1].set_xlabel("frequency k"); ax[1].set_ylabel("share of the power"); ax[1].legend()
plt.show()
