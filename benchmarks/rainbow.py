"""Rainbow sampling and clipping sweeps: rainbow_jax vs the tutorial's PyTorch
procedure, in the same process on the same trained networks.

    python benchmarks/rainbow.py [--quick] [--out results/rainbow.json]

Cases (Fashion-MNIST, the tutorial's MLP [784, 512, 256, 10] and CNN
[1→32→64, 5×5/2], trained one epoch here; the weights are the same for both
implementations):
  * ``generate_S`` — S ∈ {1, 8, 32} rainbow networks, each aligned with one
    pass over the 60 000 training images, plus their test accuracy.
    rainbow_jax: `rainbow_jax.rainbow.generate` (S samples in one compiled
    program per pass; in turn on CPU, vmapped on GPU/TPU). PyTorch: the tutorial's ``generate_network`` procedure (SVD,
    Gaussian sample, realign, cross-covariance of hooked activations over a
    batch-128 loader, SVD alignment; then evaluation), once per sample: we time
    one sample and report S × that for S > 1 (``extrapolated``).
  * ``clip_all_ranks`` — activation clipping of the MLP's second layer at every
    rank 1…512 (the tutorial deep-copies one model per rank and evaluates each
    on the test set) vs `rainbow_jax.spectra.clip_sweep`.
"""

from __future__ import annotations

import copy
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common as C
import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import data, evaluate, models, moments, network, rainbow, spectra, svr, train


# --------------------------------------------------------------------------
# The tutorial's procedure in PyTorch (written from the seed's description).


def torch_model(arch, native, torch):
  nn = torch.nn
  if arch == "mlp":
    layers = [nn.Flatten()]
    for i, w in enumerate(native):
      layers.append(nn.Linear(w.shape[1], w.shape[0], bias=False))
      if i < len(native) - 1:
        layers.append(nn.ReLU())
  else:
    layers = []
    for w in native[:-1]:
      layers += [nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=2, bias=False), nn.ReLU()]
    layers += [nn.Flatten(), nn.Linear(native[-1].shape[1], native[-1].shape[0], bias=False)]
  m = nn.Sequential(*layers).to(C.torch_device(torch))
  weighted = [l for l in m if hasattr(l, "weight")]
  with torch.no_grad():
    for l, w in zip(weighted, native):
      l.weight.copy_(torch.from_numpy(np.asarray(w)).to(l.weight.device))
  return m.eval()


def _space_to_batch(x):
  if x.ndim == 4:
    x = x.permute(0, 2, 3, 1)
  return x.reshape(-1, x.shape[-1])


def _hooked_inputs(model, idx, x):
  saved = []
  h = model[idx].register_forward_hook(lambda mod, inp, out: saved.append(inp[0]))
  model(x)
  h.remove()
  return saved[0]


def torch_evaluate(models_, x, y, torch, batch=128):
  correct = [0] * len(models_)
  with torch.no_grad():
    for i in range(0, len(x), batch):
      xb, yb = x[i:i + batch], y[i:i + batch]
      for k, m in enumerate(models_):
        correct[k] += int((m(xb).argmax(-1) == yb).sum())
  return [100.0 * c / len(x) for c in correct]


def torch_generate(ref, x_train, x_test, y_test, torch, batch=128):
  """One rainbow network, the tutorial's way, and its test accuracy."""
  gen = copy.deepcopy(ref)
  idx = [i for i, l in enumerate(ref) if hasattr(l, "weight")]
  alignment = None
  with torch.no_grad():
    for j, li in enumerate(idx):
      w = ref[li].weight
      if j < len(idx) - 1:
        u, s, vt = torch.linalg.svd(w.reshape(w.shape[0], -1), full_matrices=False)
        new = (torch.randn(u.shape, device=w.device) @ (s[:, None] * vt)).reshape(w.shape)
      else:
        new = w.clone()
      if j > 0:
        new = torch.moveaxis(torch.moveaxis(new, 1, -1) @ alignment, -1, 1)
      gen[li].weight.copy_(new)
      if j < len(idx) - 1:
        cov = 0
        for i in range(0, len(x_train), batch):
          xb = x_train[i:i + batch]
          a1 = _space_to_batch(_hooked_inputs(ref, idx[j + 1], xb))
          a2 = _space_to_batch(_hooked_inputs(gen, idx[j + 1], xb))
          cov = cov + a1.T @ a2
        u, _, vh = torch.linalg.svd(cov, full_matrices=False)
        alignment = u @ vh
  return torch_evaluate([gen], x_test, y_test, torch)[0]


def torch_clip(ref, layer_idx, basis, ranks, x_test, y_test, torch):
  clipped = []
  with torch.no_grad():
    for k in ranks:
      m = copy.deepcopy(ref)
      p = basis[:k].T @ basis[:k]
      m[layer_idx].weight.copy_(m[layer_idx].weight @ p)
      clipped.append(m)
  return torch_evaluate(clipped, x_test, y_test, torch)


# --------------------------------------------------------------------------


def main(argv=None):
  p = C.parser("rainbow")
  p.set_defaults(repeats=1)
  a = C.parse_args(p, argv)
  torch = C.torch_or_none()
  notes = []
  if torch is None:
    notes.append("torch is not installed: the PyTorch peer was skipped.")
  else:
    torch.manual_seed(0)
  name = "fashion_mnist" if data.available("fashion_mnist") else "digits"
  ds = data.load(name, grayscale=True)
  n_train, n_test = (1000, 500) if a.quick else (len(ds.x_train), len(ds.x_test))
  x, y = ds.x_train[:n_train], ds.y_train[:n_train]
  xt, yt = jnp.asarray(ds.x_test[:n_test]), jnp.asarray(ds.y_test[:n_test])
  archs = ["mlp", "cnn"] if name == "fashion_mnist" else ["mlp"]
  # accel: S = 32 alone compiled for 40 s on an H200 (measured), so 1 and 8.
  sizes = {"quick": [2], "cpu": [1, 8, 32], "accel": [1, 8]}[a.size]
  records = []
  for arch in archs:
    model = models.make(arch, x.shape[1:], ds.num_classes)
    state, hist = train.fit(model, x, y, xt, yt, seeds=[0], epochs=1, progress=False)
    params = train.select(state.params, 0)
    net = network.from_linen(model, params, x[:2])
    ref_acc = float(hist.test_accuracy[-1][0])
    if torch is not None:
      native = svr.from_flax(net.kernels(params))
      tref = torch_model(arch, native, torch)
      dev = C.torch_device(torch)
      tx = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))).to(dev)
      txt = torch.from_numpy(np.ascontiguousarray(
          np.transpose(np.asarray(xt), (0, 3, 1, 2)))).to(dev)
      tyt = torch.from_numpy(np.asarray(yt).astype(np.int64)).to(dev)
      t_torch, acc_t = C.seconds(lambda: torch_generate(tref, tx, txt, tyt, torch))
      records.append(C.record("rainbow", "pytorch", f"{arch}_generate_1", t_torch, None,
                              accuracy=[acc_t], reference_accuracy=ref_acc,
                              batch=128, train_images=n_train))
      print(f"{arch} pytorch: 1 sample {t_torch:.2f} s, accuracy {acc_t:.2f} %", flush=True)
    for s in sizes:
      def run(s=s):
        g = rainbow.generate(jax.random.key(s), net, params, x, num_samples=s,
                             progress=False)
        return np.asarray(evaluate.accuracy(net, g.params, xt, yt, stacked=True))
      first, acc = C.seconds(run)
      warm, acc = C.seconds(run)
      extra = {"accuracy": acc.tolist(), "reference_accuracy": ref_acc, "samples": s,
               "train_images": n_train}
      if torch is not None:
        extra["pytorch_seconds_extrapolated"] = s * t_torch
        extra["speedup_vs_pytorch"] = s * t_torch / warm
      records.append(C.record("rainbow", "rainbow_jax", f"{arch}_generate_{s}", warm,
                              max(first - warm, 0.0), **extra))
      if torch is not None and s > 1:
        records.append(C.record("rainbow", "pytorch", f"{arch}_generate_{s}", s * t_torch,
                                None, extrapolated=True, samples=s))
      print(f"{arch} rainbow_jax: {s} sample(s) {warm:.2f} s (first {first:.2f} s),"
            f" accuracy {acc.mean():.2f} ± {acc.std():.2f} %", flush=True)
    one = next(r for r in records if r["case"] == f"{arch}_generate_{sizes[0]}"
               and r["impl"] == "rainbow_jax")["seconds"] / sizes[0]
    for r in records:
      if r["impl"] == "rainbow_jax" and r["case"].startswith(f"{arch}_generate_"):
        r["extra"]["ratio_to_one_sample"] = r["seconds"] / one  # quick: per-sample estimate

    if arch == "mlp":
      stats = moments.accumulate([x[i:i + 1000] for i in range(0, len(x), 1000)],
                                 net.layer_inputs, params=params)
      _, basis = spectra.activation_spectrum(moments.covariance(stats, 1))
      ranks = list(range(1, basis.shape[0] + 1, 64 if a.quick else 1))
      first, ours = C.seconds(lambda: spectra.clip_sweep(net, params, 1, basis, ranks, xt, yt))
      warm, ours = C.seconds(lambda: spectra.clip_sweep(net, params, 1, basis, ranks, xt, yt))
      extra = {"ranks": len(ranks), "test_images": n_test}
      if torch is not None:
        tb = torch.from_numpy(np.asarray(basis)).to(dev)
        t_clip, acc_t = C.seconds(lambda: torch_clip(tref, 3, tb, ranks, txt, tyt, torch))
        extra["max_abs_diff_accuracy_vs_pytorch"] = float(np.max(np.abs(np.asarray(ours)
                                                                       - np.asarray(acc_t))))
        extra["speedup_vs_pytorch"] = t_clip / warm
        records.append(C.record("clip", "pytorch", "mlp_layer2_all_ranks", t_clip, None,
                                ranks=len(ranks)))
      records.append(C.record("clip", "rainbow_jax", "mlp_layer2_all_ranks", warm,
                              max(first - warm, 0.0), **extra))
      print(f"clipping {len(ranks)} ranks: rainbow_jax {warm:.2f} s (first {first:.2f})"
            + (f", pytorch {t_clip:.2f} s" if torch is not None else ""), flush=True)
  C.write(a.out, records, notes)


if __name__ == "__main__":
  main()
