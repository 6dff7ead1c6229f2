"""`rainbow-jax svr`: report, figure and the hover-able HTML graph."""

import json
import re

import numpy as np

from rainbow_jax import cli, svr


def test_svr_command_html_shows_the_weights_singular_values(tmp_path):
  out = tmp_path / "svr"
  assert cli.main(["svr", "--dataset", "digits", "--widths", "24", "16", "--epochs", "1",
                   "--out", str(out)]) == 0
  res = json.loads((out / "results.json").read_text())
  (chain,) = res["chains"]
  assert chain["names"] == ["dense_0", "dense_1", "dense_2"]
  assert (out / chain["figure"]).exists()
  page = (out / chain["html"]).read_text()
  # Vertices: every spectral neuron of [64→24], [24→16], [16→10] (all ≤ 64).
  assert page.count("<circle") == 24 + 16 + 10
  # Their hover text is the layer's singular values, as numpy computes them
  # from the trained kernel the report read.
  shown = [float(v) for v in re.findall(r"dense_1 spectral neuron #\d+: σ = ([0-9.e+-]+)", page)]
  from rainbow_jax import data, models, train, network
  ds = data.load("digits", grayscale=True)
  model = models.make("mlp", ds.x_train.shape[1:], 10, widths=[24, 16])
  state, _ = train.fit(model, ds.x_train, ds.y_train, seeds=[0], epochs=1, progress=False)
  v = train.select(state.variables, 0)
  kernels = network.from_linen(model, v, ds.x_train[:2]).kernels(v)
  want = np.linalg.svd(np.asarray(kernels[1], np.float64), compute_uv=False)
  np.testing.assert_allclose(shown, want, rtol=2e-3)
  # Edges: one line per significant edge, each with its weight and p-value.
  edges = svr.edges(svr.svr(svr.from_flax(kernels)))
  assert page.count("<line") == len(edges["layer"]) > 0
  assert ", p = " in page
  assert "internal dims" in (out / "report.md").read_text()
