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
# # Bring your own model
#
# Every analysis of rainbow_jax runs on *your* network through one adapter, `rainbow_jax.network`: `from_linen(module, variables, x)` or `from_nnx(model, x)` discovers the weight layers (Dense, Conv) in the order the forward pass calls them, with Flax's own method interception — no extra argument on your model. BatchNorm is read in inference mode (and re-estimated where weights change). PyTorch weights go through `from_torch`.

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
import flax.linen as nn
from flax import nnx
import matplotlib.pyplot as plt
from rainbow_jax import align, data, evaluate, moments, network, plots, rainbow, spectra, svr

ds = data.load('digits')   # 8×8 digits ship with scikit-learn: offline
x, y, x_test, y_test = map(jax.numpy.asarray, (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
print(x.shape, ds.source)


# %% [markdown]
# ## A linen CNN with Flax's default names, biases and BatchNorm
# Sorted by name its layers would read `Conv_0, Conv_1, Dense_0, Dense_1`; the adapter reports the call order whatever the names.

# %%
class SmallCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(nn.Conv(32, (3, 3), strides=2)(x))
        x = nn.relu(nn.Dense(64)(x.reshape(x.shape[0], -1)))
        return nn.Dense(10)(x)

m, tx = SmallCNN(), optax.adam(3e-3)
def loss(p, bs, xb, yb):
    out, upd = m.apply({'params': p, 'batch_stats': bs}, xb, train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(out, yb).mean(), upd['batch_stats']

@jax.jit   # one compiled step for every seed
def step(p, bs, o, key):
    idx = jax.random.choice(key, len(x), (128,))
    (l, bs), g = jax.value_and_grad(loss, has_aux=True)(p, bs, x[idx], y[idx])
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), bs, o

def fit(seed, steps):
    v = m.init(jax.random.key(seed), x[:1])
    p, bs = v['params'], v['batch_stats']
    o = tx.init(p)
    for i in range(steps):
        p, bs, o = step(p, bs, o, jax.random.fold_in(jax.random.key(seed), i))
    return m, {'params': p, 'batch_stats': bs}

steps = 100 if QUICK else 600
(m, v0), (_, v1) = fit(0, steps), fit(1, steps)
net = network.from_linen(m, v0, x[:2])
print('weight layers in call order:', net.names)
print('kinds:', net.kinds, ' BatchNorm:', net.norms)
accs = [round(float(evaluate.accuracy(net, v, x_test, y_test)), 2) for v in (v0, v1)]
print('test accuracy of the two seeds (%):', accs)
assert net.names == ('Conv_0', 'Conv_1', 'Dense_0', 'Dense_1') and min(accs) > 80

# %% [markdown]
# ## Alignment of the two seeds at every weight layer's input, one pass
# `moments.layer_moments` takes the `Network` directly.

# %%
stats = moments.layer_moments(net, v0, [x[i:i + 500] for i in range(0, len(x), 500)],
                              params2=v1, cross='matched')
L = len(net)
r2 = [float(align.align_moments(stats, l, L + l).r2) for l in range(L)]
assert abs(r2[0] - 1) < 1e-4 and all(0 < v <= 1 + 1e-5 for v in r2)  # layer 1: same pixels
plots.bars(r2, list(net.names), ylabel='r² (alignment)', title='seed 0 vs seed 1');

# %% [markdown]
# ## Weight spectra against Marchenko–Pastur, and clipping
# `layer_law` takes the initialiser you used: Flax's default LeCun normal here.

# %%
init_kernels = net.kernels(m.init(jax.random.key(0), x[:1]))
for l, (k, k_init) in enumerate(zip(net.kernels(v0), init_kernels)):
    law = spectra.layer_law(k, nn.initializers.lecun_normal())
    ev, _ = spectra.weight_spectrum(k)
    n = int(spectra.learned_components(ev, law))
    print(f'{net.names[l]}: {n} eigenvalues above the Marchenko–Pastur edge')
plots.weight_spectrum(ev, spectra.weight_spectrum(k_init)[0], law, title=net.names[-1])
_, basis = spectra.activation_spectrum(moments.covariance(stats, 2))
ranks = [1, 2, 4, 8, 16, 32]
print('clipping the input of', net.names[2], dict(zip(ranks, np.round(
      spectra.clip_sweep(net, v0, 2, basis, ranks, x_test, y_test), 1))))

# %% [markdown]
# ## The SVR of the same network

# %%
g = svr.svr(svr.from_flax(net.kernels(v0)))
print('internal dimensions per edge:', g.internal_dims)
plots.svr_graph(g);

# %% [markdown]
# ## Rainbow networks of the BatchNorm CNN
# Each neuron's (weights, bias) vector is drawn from the trained layer's second moment and realigned to the sampled network's own basis; after every sampled layer the generated networks' BatchNorm statistics are re-estimated on the data (`Network.estimate_batch_stats`, vmapped over the samples) — stale statistics would normalise new neurons with the old ones' means and variances. In a residual network, layers whose output meets a skip connection keep the reference's neurons (`net.producers` finds them); see `rainbow_jax.rainbow`.

# %%
gen = rainbow.generate(jax.random.key(0), net, v0, x, num_samples=4)
acc = np.asarray(evaluate.accuracy(net, gen.params, x_test, y_test, stacked=True))
stale = dict(gen.params, batch_stats=jax.tree_util.tree_map(
    lambda a: jax.numpy.broadcast_to(a, (4, *a.shape)), v0['batch_stats']))
acc_stale = np.asarray(evaluate.accuracy(net, stale, x_test, y_test, stacked=True))
print(f'trained {accs[0]:.2f} %; rainbow {acc.mean():.2f} ± {acc.std():.2f} %;'
      f' with the reference\'s stale BatchNorm statistics {acc_stale.mean():.2f} %')
assert acc.mean() > 50  # chance: 10 %


# %% [markdown]
# ## An NNX model, and rainbow networks with biases

# %%
class MLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.List([nnx.Linear(64, 128, rngs=rngs), nnx.Linear(128, 64, rngs=rngs)])
        self.head = nnx.Linear(64, 10, rngs=rngs)
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for layer in self.hidden:
            x = nnx.relu(layer(x))
        return self.head(x)

model = MLP(nnx.Rngs(0))
opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
@nnx.jit
def step(model, opt, xb, yb):
    loss = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()
    opt.update(model, nnx.grad(loss)(model))
for i in range(steps):
    sl = slice((i * 128) % 1280, (i * 128) % 1280 + 128)
    step(model, opt, x[sl], y[sl])
mlp = network.from_nnx(model, x[:2])
mv = network.nnx_variables(model)
print('NNX layers:', mlp.names)
gen = rainbow.generate(jax.random.key(0), mlp, mv, x, num_samples=4)
acc = np.asarray(evaluate.accuracy(mlp, gen.params, x_test, y_test, stacked=True))
print(f'trained {float(evaluate.accuracy(mlp, mv, x_test, y_test)):.2f} %;'
      f' rainbow {acc.mean():.2f} ± {acc.std():.2f} %')
assert mlp.names == ('hidden/0', 'hidden/1', 'head') and acc.mean() > 50

# %% [markdown]
# ## PyTorch weights
# `from_torch` takes a module, a state dict or tensors, converts them to the canonical Flax layout (a linear layer after a conv gets its input reordered from PyTorch's channels-first flatten), drops biases and BatchNorm vectors like the SVR reference code — or folds BatchNorm into the preceding layer.

# %%
try:
    import torch
except ImportError:
    torch = None
    print('torch not installed: pip install torch')
if torch is not None:
    tm = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                             torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))
    tw = network.from_torch(tm, fold_batchnorm=True)
    print(tw.names, [tuple(k.shape) for k in tw.kernels])
    print('dropped:', tw.dropped)
    print('internal dimensions:', svr.svr(svr.from_flax(tw.kernels)).internal_dims)
