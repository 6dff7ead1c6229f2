"""Learned scattering networks: training and Gaussian rainbow sampling,
rainbow_jax vs the same procedure in PyTorch, same process, same data.

    python benchmarks/scattering.py [--quick] [--out results/scattering.json]

The network is `rainbow_jax.models.ScatteringNet` (channels 32, 64, 128, L = 4
Morlet angles, standardisation after every learned 1×1 mixing) on
Fashion-MNIST. PyTorch runs the same architecture: the same fixed filtering
matrix (`rainbow_jax.wavelets.layer_matrix`) as a buffer, modulus, 1×1
``Conv2d`` mixings, ``BatchNorm2d(affine=False)``, a linear classifier.

* ``train_epoch_K`` — one epoch (SGD, momentum 0.9, batch 128) of K seeds:
  rainbow_jax `train.train_epoch` (K seeds as one program) vs PyTorch's loop
  for one seed, × K for K > 1 (``extrapolated``).
* ``generate_S`` — S rainbow networks of the trained network (seed 0, the
  same weights on both sides), aligned on ``align`` training images, and
  their test accuracy: `rainbow.generate` (S in one vmapped program) vs the
  tutorial's ``generate_network`` procedure in PyTorch extended to
  BatchNorm as the rainbow paper does (statistics re-estimated after each
  layer is drawn), one sample timed, × S for S > 1.
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

from rainbow_jax import data, evaluate, models, network, rainbow, train, wavelets

CHANNELS, ANGLES = (32, 64, 128), 4


def torch_scattering(torch, in_shape, classes, channels=CHANNELS, angles=ANGLES):
  """The same network in PyTorch (NCHW)."""
  nn = torch.nn
  h, _, c_in = in_shape
  step = 2 ** len(channels)
  side = -(-h // step) * step

  class Net(nn.Module):
    def __init__(self):
      super().__init__()
      self.pad = side - h
      sizes = [side // 2 ** j for j in range(len(channels))]
      for j, s in enumerate(sizes):
        self.register_buffer(f"m{j}", torch.from_numpy(wavelets.layer_matrix(s, angles)))
      ins = [c_in] + list(channels[:-1])
      self.mix = nn.ModuleList(nn.Conv2d(ci * (1 + angles), co, 1, bias=False)
                               for ci, co in zip(ins, channels))
      self.norm = nn.ModuleList(nn.BatchNorm2d(co, affine=False) for co in channels)
      last = side // step
      self.classifier = nn.Linear(channels[-1] * last * last, classes, bias=False)

    def phase(self, x, m):
      b, c, s, _ = x.shape
      lin = (x.reshape(b * c, s * s) @ m).reshape(b, c, s // 2, s // 2, 1 + 2 * angles)
      mod = torch.sqrt(lin[..., 1:1 + angles] ** 2 + lin[..., 1 + angles:] ** 2)
      out = torch.cat([lin[..., :1], mod], -1)  # [B, C, h, w, F]
      return out.permute(0, 1, 4, 2, 3).reshape(b, c * (1 + angles), s // 2, s // 2)

    def forward(self, x):
      p = self.pad
      x = nn.functional.pad(x, (p // 2, p - p // 2, p // 2, p - p // 2))
      for j, (mix, norm) in enumerate(zip(self.mix, self.norm)):
        x = norm(mix(self.phase(x, getattr(self, f"m{j}"))))
      return self.classifier(x.flatten(1))

  return Net().to(C.torch_device(torch))


def load_flax(torch, tnet, variables):
  """Copies trained Flax variables into the PyTorch network."""
  p, bs = variables["params"], variables.get("batch_stats", {})
  with torch.no_grad():
    for j, mix in enumerate(tnet.mix):
      k = np.asarray(p[f"mix_{j}"]["kernel"])[0, 0]  # [C_in·F, C_out]
      mix.weight.copy_(torch.from_numpy(k.T[:, :, None, None].copy()))
      tnet.norm[j].running_mean.copy_(torch.from_numpy(np.array(bs[f"norm_{j}"]["mean"])))
      tnet.norm[j].running_var.copy_(torch.from_numpy(np.array(bs[f"norm_{j}"]["var"])))
    w = np.asarray(p[f"dense_{len(tnet.mix)}"]["kernel"])  # [(h, w, C), classes]
    c = tnet.mix[-1].weight.shape[0]
    s = int(round((w.shape[0] / c) ** 0.5))
    w = w.reshape(s, s, c, -1).transpose(3, 2, 0, 1).reshape(w.shape[1], -1)  # → (C, h, w)
    tnet.classifier.weight.copy_(torch.from_numpy(w.copy()))
  return tnet.eval()


def torch_epoch(torch, tnet, x, y, batch=128):
  opt = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=0.9)
  tnet.train()
  perm = torch.randperm(len(x)).to(x.device)
  for i in range(0, len(x), batch):
    idx = perm[i:i + batch]
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(tnet(x[idx]), y[idx])
    loss.backward()
    opt.step()
  return loss.item()


def torch_accuracy(torch, tnet, x, y, batch=1000):
  tnet.eval()
  with torch.no_grad():
    hits = sum(int((tnet(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
  return 100.0 * hits / len(x)


def torch_restat(torch, tnet, x, batch=1000):
  """BatchNorm statistics re-estimated on x (cumulative average)."""
  for n in tnet.norm:
    n.reset_running_stats()
    n.momentum = None
  tnet.train()
  with torch.no_grad():
    for i in range(0, len(x), batch):
      tnet(x[i:i + batch])
  for n in tnet.norm:
    n.momentum = 0.1
  return tnet.eval()


def torch_generate(torch, ref, x, x_test, y_test, batch=1000):
  """One Gaussian rainbow network of `ref`, the tutorial's procedure."""
  gen = copy.deepcopy(ref)
  layers = list(ref.mix) + [ref.classifier]
  gen_layers = list(gen.mix) + [gen.classifier]
  a = None
  with torch.no_grad():
    for j, (lr, lg) in enumerate(zip(layers, gen_layers)):
      w = lr.weight.reshape(lr.weight.shape[0], -1)  # [out, in]
      if j < len(layers) - 1:
        _, s, vt = torch.linalg.svd(w, full_matrices=False)
        w = (torch.randn(w.shape[0], s.shape[0], device=w.device) @ (s[:, None] * vt)
             / w.shape[0] ** 0.5)
      if a is not None:
        w = w @ a.T  # reads the generated network's input
      lg.weight.copy_(w.reshape(lg.weight.shape))
      torch_restat(torch, gen, x)
      if j < len(layers) - 1:
        cross = 0
        nxt_r, nxt_g = layers[j + 1], gen_layers[j + 1]
        for i in range(0, len(x), batch):
          got = {}
          hr = nxt_r.register_forward_hook(lambda m, inp, out: got.__setitem__("r", inp[0]))
          hg = nxt_g.register_forward_hook(lambda m, inp, out: got.__setitem__("g", inp[0]))
          ref(x[i:i + batch])
          gen(x[i:i + batch])
          hr.remove()
          hg.remove()
          fold = lambda t: (t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]) if t.ndim == 4 else t)
          cross = cross + fold(got["g"]).T @ fold(got["r"])  # Σ ψ φᵀ
        u, _, vh = torch.linalg.svd(cross, full_matrices=False)
        a = u @ vh  # ψ ≈ A φ
  return torch_accuracy(torch, gen, x_test, y_test)


def main(argv=None):
  p = C.parser("scattering")
  p.set_defaults(repeats=1)
  a = C.parse_args(p, argv)
  torch = C.torch_or_none()
  notes = [] if torch is not None else ["torch is not installed: the PyTorch peer was skipped."]
  name = "fashion_mnist" if data.available("fashion_mnist") else "digits"
  ds = data.load(name, grayscale=True)
  n_train, n_align, n_test = (1000, 500, 500) if a.quick else (60000, 10000, 10000)
  x, y = ds.x_train[:n_train], ds.y_train[:n_train]
  xt, yt = jnp.asarray(ds.x_test[:n_test]), jnp.asarray(ds.y_test[:n_test])
  channels = (4, 8, 16) if a.quick else CHANNELS
  model = models.ScatteringNet(channels=channels, num_angles=ANGLES,
                               num_classes=ds.num_classes)
  records = []
  xj, yj = jnp.asarray(x), jnp.asarray(y)
  tx = train.sgd()
  if torch is not None:
    torch.manual_seed(0)
    tnet = torch_scattering(torch, x.shape[1:], ds.num_classes, channels)
    dev = C.torch_device(torch)
    tx_t = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))).to(dev)
    ty_t = torch.from_numpy(y.astype(np.int64)).to(dev)
    txt = torch.from_numpy(np.ascontiguousarray(
        np.transpose(np.array(xt), (0, 3, 1, 2)))).to(dev)
    tyt = torch.from_numpy(np.array(yt, np.int64)).to(dev)
    t_torch, _ = C.seconds(lambda: torch_epoch(torch, tnet, tx_t, ty_t))
    acc = torch_accuracy(torch, tnet, txt, tyt)
    records.append(C.record("scattering", "pytorch", "train_epoch_1", t_torch, None,
                            test_accuracy=acc, images=n_train))
    print(f"pytorch: one epoch of one seed {t_torch:.1f} s, test accuracy {acc:.2f} %",
          flush=True)
  for k in (1, 4):
    state = train.init(model, tx, list(range(k)), x.shape[1:])
    run = lambda: train.train_epoch(state, xj, yj, model=model, tx=tx, batch_size=128)[0]
    first, new_state = C.seconds(run)
    warm, new_state = C.seconds(run)
    acc = np.asarray(train.accuracy(new_state.variables, xt, yt, model=model))
    extra = {"test_accuracy": acc.tolist(), "images": n_train, "seeds": k}
    if torch is not None:
      extra["pytorch_seconds"] = k * t_torch
      extra["speedup_vs_pytorch"] = k * t_torch / warm
      if k > 1:
        records.append(C.record("scattering", "pytorch", f"train_epoch_{k}", k * t_torch,
                                None, extrapolated=True, seeds=k))
    records.append(C.record("scattering", "rainbow_jax", f"train_epoch_{k}", warm,
                            max(first - warm, 0.0), **extra))
    print(f"rainbow_jax: one epoch of {k} seed(s) {warm:.1f} s (first {first:.1f} s),"
          f" accuracy {np.round(acc, 2)}", flush=True)
  variables = train.select(new_state.variables, 0)
  net = network.from_linen(model, variables, x[:2])
  ref_acc = float(evaluate.accuracy(net, variables, xt, yt))
  x_align = x[:n_align]
  if torch is not None:
    tref = load_flax(torch, torch_scattering(torch, x.shape[1:], ds.num_classes, channels),
                     variables)
    txa = tx_t[:n_align]
    same = torch_accuracy(torch, tref, txt, tyt)
    t_gen, acc_t = C.seconds(lambda: torch_generate(torch, tref, txa, txt, tyt))
    records.append(C.record("scattering", "pytorch", "generate_1", t_gen, None,
                            accuracy=[acc_t], reference_accuracy=same, align_images=n_align))
    print(f"pytorch: reference {same:.2f} % (ours {ref_acc:.2f} %), 1 rainbow sample"
          f" {t_gen:.1f} s, accuracy {acc_t:.2f} %", flush=True)
  for s in (1, 8):
    def gen(s=s):
      g = rainbow.generate(jax.random.key(s), net, variables, x_align, num_samples=s,
                           progress=False)
      return evaluate.accuracy(net, g.params, xt, yt, stacked=True)
    first, acc = C.seconds(gen)
    warm, acc = C.seconds(gen)
    acc = np.asarray(acc)
    extra = {"accuracy": acc.tolist(), "reference_accuracy": ref_acc, "samples": s,
             "align_images": n_align}
    if torch is not None:
      extra["pytorch_seconds_extrapolated"] = s * t_gen
      extra["speedup_vs_pytorch"] = s * t_gen / warm
      if s > 1:
        records.append(C.record("scattering", "pytorch", f"generate_{s}", s * t_gen, None,
                                extrapolated=True, samples=s))
    records.append(C.record("scattering", "rainbow_jax", f"generate_{s}", warm,
                            max(first - warm, 0.0), **extra))
    print(f"rainbow_jax: {s} rainbow sample(s) {warm:.1f} s (first {first:.1f} s), accuracy"
          f" {acc.mean():.2f} ± {acc.std():.2f} %", flush=True)
  C.write(a.out, records, notes)


if __name__ == "__main__":
  main()
