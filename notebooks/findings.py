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
# # The seeds' findings, checked
#
# The source papers state findings about trained networks; this notebook checks them at a small size with rainbow_jax (`experiments/` runs them at full size, README has the tables): SVCCA's findings (Raghu et al. 2017; Morcos et al. 2018) — networks that generalise are more alike than networks that memorise, bottom-up learning, and the CCA of conv layers per spatial frequency — the rainbow paper's kernels against width and rainbow sampling of a residual network with its stream, and the SVR's pruning without data.

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
print("JAX devices:", jax.devices())
import itertools
import numpy as np, optax
import matplotlib.pyplot as plt
from rainbow_jax import data, evaluate, models, network, similarity, train

name = "fashion_mnist" if data.available("fashion_mnist") and not QUICK else "digits"
ds = data.load(name, grayscale=True, normalize=True)
n = 600 if QUICK else 5000
x, y = ds.x_train[:n], ds.y_train[:n]
xt = ds.x_test[:300 if QUICK else 2000]
widths = [64, 32, 16] if QUICK else [512, 256, 128]
print(name, x.shape)

# %% [markdown]
# ## Networks that generalise are more alike than networks that memorise
# Three seeds trained on the true labels, three on randomly permuted labels (`data.shuffle_labels`: every class keeps its count), each trained until it fits its labels. PWCCA between every pair of seeds, per hidden layer (Morcos et al. 2018 find the gap grows with depth).

# %%
mlp = models.make("mlp", x.shape[1:], ds.num_classes, widths=widths)
seeds = [0, 1, 2]
true_state, hist = train.fit(mlp, x, y, ds.x_test, ds.y_test, seeds=seeds,
                             epochs=3 if QUICK else 10, progress=False)
rand_state, rhist = train.fit(mlp, x, data.shuffle_labels(y, seed=1), seeds=seeds,
                              epochs=20 if QUICK else 150, tx=optax.adam(1e-3), progress=False)
print("true labels: test accuracy", np.round(hist.test_accuracy[-1], 1))
print("random labels: train accuracy", np.round(rhist.train_accuracy[-1], 1))
net = network.from_linen(mlp, train.select(true_state.variables, 0), x[:2])
hidden = list(range(1, len(net)))
reps = {g: [evaluate.representations(net, train.select(st.variables, k), xt) for k in seeds]
        for g, st in (("true labels", true_state), ("random labels", rand_state))}
for g, rs in reps.items():
    pw = [np.mean([float(similarity.pwcca(rs[a][j], rs[b][j]).value)
                   for a, b in itertools.combinations(seeds, 2)]) for j in hidden]
    plt.plot(range(1, len(hidden) + 1), pw, "o-", label=g)
plt.xlabel("hidden layer"); plt.ylabel("PWCCA between seeds"); plt.legend()
plt.show()

# %% [markdown]
# ## Learning dynamics: SVCCA of each layer with its final self
# Raghu et al. (2017) find that lower layers converge first.

# %%
snaps = []
state, _ = train.fit(mlp, x, y, seeds=[0], epochs=3 if QUICK else 10, progress=False,
                     callback=lambda e, st, m: snaps.append(train.select(st.variables, 0)))
end = evaluate.representations(net, snaps[-1], xt)
for j in hidden:
    curve = [float(similarity.svcca(evaluate.representations(net, v, xt)[j], end[j]).mean)
             for v in snaps]
    plt.plot(range(1, len(snaps) + 1), curve, "o-", label=f"hidden {j}")
plt.xlabel("epoch"); plt.ylabel("SVCCA with the final layer"); plt.legend()
plt.show()

# %% [markdown]
# ## Conv layers compared per spatial frequency (google/svcca's DFT CCA)
# `similarity.fourier_cca` runs one CCA per 2-D frequency of the conv maps: exact for translation-invariant data, and cheaper than treating every position as a datapoint. The conventions give different numbers on the same layers: say which one was used.

# %%
import flax.linen as nn

class SmallCNN(nn.Module):          # two 3×3 convs keep the map's size: frequencies to compare
    @nn.compact
    def __call__(self, h):
        h = nn.relu(nn.Conv(8, (3, 3))(h))
        h = nn.relu(nn.Conv(16, (3, 3))(h))
        return nn.Dense(10)(h.mean(axis=(1, 2)))

cnn = SmallCNN()
cstate, _ = train.fit(cnn, x, y, seeds=[0, 1], epochs=2 if QUICK else 5, progress=False)
cvars = [train.select(cstate.variables, k) for k in range(2)]
cnet = network.from_linen(cnn, cvars[0], x[:2])
maps = [np.asarray(cnet.layer_inputs(v, xt, upto=1)[1]) for v in cvars]
fc = similarity.fourier_cca(maps[0], maps[1])
print("map", maps[0].shape[1:], "— mean CCA per frequency:", round(float(np.mean(fc.mean)), 3))
for mode in ("positions", "mean"):
    r = similarity.cca(similarity.features(maps[0], mode), similarity.features(maps[1], mode))
    print(f"CCA with conv='{mode}':", round(float(r.mean), 3))
plt.imshow(np.fft.fftshift(np.asarray(fc.mean)), cmap="viridis")
plt.colorbar(); plt.title("mean CCA per spatial frequency (centred)")
plt.show()

# %% [markdown]
# ## Kernels between seeds become deterministic as the width grows (the rainbow paper)
# Networks trained from different seeds define kernels (Gram matrices of a layer's activations on the same images) that agree better and better as the layers widen. Linear CKA between two seeds at both hidden layers, against the width; `experiments/kernels_width.py` measures it at the residual stream of ResNet-20 from ×¼ to ×1 with the power law fitted.

# %%
sizes = [16, 128] if QUICK else [32, 128, 512, 2048]
gap = []
for w in sizes:
    m = models.make("mlp", x.shape[1:], ds.num_classes, widths=[w, w])
    st, _ = train.fit(m, x, y, seeds=[0, 1], epochs=3 if QUICK else 10, progress=False)
    wnet = network.from_linen(m, train.select(st.variables, 0), x[:2])
    r = [evaluate.representations(wnet, train.select(st.variables, k), xt) for k in (0, 1)]
    gap.append([1.0 - float(similarity.linear_cka(r[0][j], r[1][j])) for j in (1, 2)])
gap = np.asarray(gap)
for j in range(2):
    plt.loglog(sizes, gap[:, j], "o-", label=f"hidden {j + 1}")
plt.xlabel("width"); plt.ylabel("1 − linear CKA between two seeds"); plt.legend(); plt.show()
print("1 − CKA per width (hidden 1, hidden 2):", np.round(gap, 4).tolist())

# %% [markdown]
# ## Rainbow sampling of a residual network, with and without its stream
# `rainbow.generate` samples the layers whose output only the next layer reads; the layers that write into a residual stream keep the reference's neurons. `streams=True` draws each stream channel jointly across all its writers (`rainbow.stream_lineages` finds them from the dataflow). `experiments/rainbow_resnet.py` compares both on ResNet-20 against the width; here a small residual MLP.

# %%
from rainbow_jax import rainbow

class ResMLP(nn.Module):            # the stem and each block's second Dense write the stream
    @nn.compact
    def __call__(self, h):
        h = nn.Dense(32)(h.reshape(h.shape[0], -1))
        for _ in range(2):
            h = h + nn.Dense(32)(nn.relu(nn.Dense(64)(nn.relu(h))))
        return nn.Dense(10)(nn.relu(h))

res = ResMLP()
rstate, rhist = train.fit(res, x, y, ds.x_test, ds.y_test, seeds=[0], epochs=10 if QUICK else 20,
                          tx=optax.adam(1e-3), batch_size=32, progress=False)
rvars = train.select(rstate.variables, 0)
rnet = network.from_linen(res, rvars, x[:2])
found = rainbow.stream_lineages(rnet, rvars, x[:8])
print("stream writers:", [rnet.names[j] for j in found.writers], "—", len(found.lineages), "channels")
trained = float(rhist.test_accuracy[-1][0])
for joint in (False, True):
    g = rainbow.generate(jax.random.key(0), rnet, rvars, x, num_samples=4, streams=found if joint else False,
                         progress=False)
    accs = np.asarray(evaluate.accuracy(rnet, g.params, ds.x_test, ds.y_test, stacked=True))
    print(f"{'streams drawn jointly' if joint else 'blocks only'}: rainbow accuracy"
          f" {accs.mean():.1f} ± {accs.std():.1f} % of the trained {trained:.1f} %")

# %% [markdown]
# ## Pruning without data: the SVR's near-kernel neurons (Meller & Berkouk, section 5.2.2)
# Trained with Adam and an L2 penalty (Mehta et al. 2019's setting), networks switch neurons off: their weights decay to the near-kernel of the layer. `svr.neuron_gains` finds them from the weights alone (a neuron's row of U·diag(s) against the top singular value). Removing them leaves the logits in place; removing as many random neurons does not. `experiments/svr_vgg.py` runs the paper's VGG comparison with and without BatchNorm.

# %%
from rainbow_jax import svr
l2 = optax.chain(optax.add_decayed_weights(1e-2), optax.adam(1e-2))
sstate, _ = train.fit(mlp, x, y, seeds=[0], epochs=10 if QUICK else 20, tx=l2, batch_size=32,
                      progress=False)
sp = train.select(sstate.params, 0)
logits = mlp.apply({"params": sp}, xt)
rng = np.random.default_rng(0)
pruned, random_pruned = dict(sp), dict(sp)
for name in [n for n in sp if n != f"dense_{len(widths)}"]:            # hidden layers
    g = np.asarray(svr.neuron_gains(sp[name]["kernel"].T))              # native [out, in]
    keep = g >= 1e-2
    drop = np.ones_like(keep); drop[rng.choice(keep.size, int((~keep).sum()), replace=False)] = False
    pruned[name] = {"kernel": sp[name]["kernel"] * keep}
    random_pruned[name] = {"kernel": sp[name]["kernel"] * drop}
    print(f"{name}: {int((~keep).sum())} of {keep.size} neurons in the near-kernel")
    plt.hist(np.log10(g + 1e-8), bins=40, alpha=0.6, label=name)
plt.xlabel("log10 neuron gain ‖W_j‖ / s₀"); plt.legend(); plt.show()
change = lambda p: float(np.linalg.norm(mlp.apply({"params": p}, xt) - logits) / np.linalg.norm(logits))
print(f"logits moved by {change(pruned):.1e} (near-kernel neurons removed)"
      f" against {change(random_pruned):.2f} (as many random neurons)")
