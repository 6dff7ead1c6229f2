"""The report of a deep network opens on whole-network figures; its
per-layer figures live on a page of their own. A shallow one keeps them
inline."""

import os
import pathlib

import jax
import numpy as np
from sklearn.datasets import load_digits

from rainbow_jax import models, network
from rainbow_jax.commands import analyze
from rainbow_jax.commands._common import Networks


def _report(tmp_path, widths):
  x = (load_digits().data[:400] / 16).astype(np.float32)
  y = load_digits().target[:400].astype(np.int32)
  model = models.MLP(dims=(64, *widths, 10))
  vs = [model.init(jax.random.key(k), x[:2]) for k in (0, 1)]
  nets = Networks(network.from_linen(model, vs[0], x[:2]), vs, ["seed 0", "seed 1"],
                  model.init(jax.random.key(9), x[:2]), "torch", "MLP", "two inits")
  out = str(tmp_path)
  res = analyze.run(nets, x[:300], x[300:], y[300:], out, samples=2, batch=100,
                    clip_layers=[1], cka_samples=100)
  return res, pathlib.Path(out, "report.md").read_text(), out


def test_a_deep_network_opens_on_summary_figures(tmp_path):
  res, md, out = _report(tmp_path, [16] * 7)  # 8 weight layers
  assert len(res["layers"]) == 8 > analyze.INLINE_LAYERS
  for name in ("learned_components.png", "r2.png", "cka.png", "rainbow_r2.png",
               "rainbow_accuracy.png"):
    assert f"]({name})" in md and os.path.exists(os.path.join(out, name)), name
  assert "_layer" not in md.replace("layers.md", "")  # no per-layer figure on page one
  layers = pathlib.Path(out, "layers.md").read_text()
  assert layers.count("## Layer ") == 8 and "](clipping_layer1.png)" in layers
  assert os.path.exists(os.path.join(out, "layers.html"))
  # Every figure written is shown on one of the two pages.
  for f in res["figures"]:
    assert f"]({f})" in md + layers, f


def test_a_shallow_network_keeps_its_layers_inline(tmp_path):
  res, md, out = _report(tmp_path, [32, 16])
  assert md.index("## Whole network") < md.index("## Layer 1") < md.index("## Layer 3")
  assert not os.path.exists(os.path.join(out, "layers.md"))
  assert all(f"]({f})" in md for f in res["figures"])
