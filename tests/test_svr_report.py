"""`rainbow-jax svr`: report, figure and the hover-able HTML graph."""

import json
import re

import numpy as np
import pytest

from rainbow_jax import commands as cli
from rainbow_jax import svr


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
  report = (out / "report.md").read_text()
  assert "internal dims" in report and "B_ij − ij/n" in report
  # The significance level is said, and beside each count the edges that
  # random weights would make significant: α × edges.
  assert "p < 0.15" in report
  for r in chain["edge_layers"]:
    assert r["expected_by_chance"] == pytest.approx(0.15 * r["edges"])
    assert f"{r['significant_edges']} of {r['edges']} | {0.15 * r['edges']:.0f} |" in report


def test_cosvr_report_of_a_flax_cnn_with_default_names(tmp_path):
  """A Flax CNN we did not write (default layer names Conv_0, Conv_1,
  Dense_0): the co-SVR report's singular values are numpy's of each kernel
  flattened [out · K², in], and each conv → conv edge gets its filters."""
  import flax.linen as nn
  import jax

  from rainbow_jax import network
  from rainbow_jax.commands import svr as svr_report

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(6, (3, 3), use_bias=False)(x))
      x = nn.relu(nn.Conv(5, (3, 3), use_bias=False)(x))
      return nn.Dense(4, use_bias=False)(x.reshape(x.shape[0], -1))

  model, x = Net(), np.zeros((2, 4, 4, 3), np.float32)
  variables = model.init(jax.random.key(0), x)
  net = network.from_linen(model, variables, x)
  graphs = svr_report.chain_graphs(net, variables, x, method="cosvr")
  res = svr_report.write(graphs, net.names, str(tmp_path), title="co-SVR")
  (chain,) = res["chains"]
  assert chain["names"] == ["Conv_0", "Conv_1", "Dense_0"] and chain["method"] == "cosvr"
  assert [r["sampled_null"] for r in chain["edge_layers"]] == [False, True]
  assert chain["filters"] == ["svr_chain0_filters0.png"]
  assert (tmp_path / chain["filters"][0]).exists()
  page = (tmp_path / chain["html"]).read_text()
  for name in ("Conv_0", "Conv_1"):
    k = np.asarray(variables["params"][name]["kernel"], np.float64)  # [K, K, in, out]
    co = np.transpose(k, (3, 0, 1, 2)).reshape(-1, k.shape[2])  # [out · K², in]
    shown = [float(v) for v in re.findall(rf"{name} spectral neuron #\d+: σ = ([0-9.e+-]+)",
                                          page)]
    np.testing.assert_allclose(shown, np.linalg.svd(co, compute_uv=False), rtol=2e-3)
  report = (tmp_path / "report.md").read_text()
  assert "co-SVR; path metric" in report and "(sampled null)" in report


@pytest.mark.slow  # the report's co-SVR path runs above; this is the CLI flag on a trained CNN
def test_svr_command_cosvr_on_a_cnn(tmp_path):
  out = tmp_path / "svr"
  assert cli.main(["svr", "--dataset", "digits", "--arch", "cnn", "--widths", "8",
                   "--epochs", "1", "--method", "cosvr", "--out", str(out)]) == 0
  (chain,) = json.loads((out / "results.json").read_text())["chains"]
  assert chain["method"] == "cosvr" and chain["path_metric"] > 0
  assert chain["edge_layers"][0]["sampled_null"]
