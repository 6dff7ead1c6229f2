"""WeightWatcher's heavy-tail measures against the weightwatcher package
(PyPI) run side by side: its power-law fitter on the same eigenvalues, and
its whole analysis of a PyTorch model holding the same weights."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rainbow_jax import data, models, network, spectra, train

ww = pytest.importorskip("weightwatcher")
from weightwatcher.WW_powerlaw import WWFit  # noqa: E402

torch = pytest.importorskip("torch")
logging.getLogger("weightwatcher").setLevel(logging.ERROR)


@pytest.mark.parametrize("n,d,df", [(500, 300, 3), (1000, 784, 5), (40, 30, 3), (15, 12, 3)])
def test_power_law_is_weightwatchers_fit(n, d, df):
  # Heavy-tailed entries; (15, 12) takes WeightWatcher's small-sample path.
  w = np.random.default_rng(n).standard_t(df, size=(n, d)).astype(np.float32) / np.sqrt(d)
  ev = np.asarray(spectra.esd(jnp.asarray(w)))
  ours = spectra.power_law(ev)
  theirs = WWFit(ev[ev > 1e-5])
  np.testing.assert_allclose(float(ours.alpha), theirs.alpha, rtol=1e-4)
  np.testing.assert_allclose(float(ours.xmin), theirs.xmin, rtol=1e-6)
  np.testing.assert_allclose(float(ours.ks_distance), theirs.D, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(ours.sigma), theirs.sigma, rtol=1e-4)
  assert int(ours.num_tail) == len(theirs.data)


def test_power_law_of_a_large_spectrum_is_weightwatchers_too(monkeypatch):
  """Spectra beyond `_QUICK_MAX` eigenvalues take XLA's optimised program
  instead of the quickly compiled one: the same fit."""
  from rainbow_jax.spectra import _heavy_tails
  monkeypatch.setattr(_heavy_tails, "_QUICK_MAX", 100)
  test_power_law_is_weightwatchers_fit(500, 300, 3)


@pytest.mark.parametrize("n", [9, 10, 12, 19, 20, 25])
def test_power_law_of_few_eigenvalues_is_weightwatchers(n):
  # Around WeightWatcher's small-sample cut (20): its tails of ≥ 8 only.
  ev = np.sort(np.random.default_rng(3 + n).pareto(1.5, size=n) + 0.1)
  ours = spectra.power_law(jnp.asarray(ev, jnp.float32))
  theirs = WWFit(ev.astype(np.float32).astype(np.float64))
  np.testing.assert_allclose(float(ours.alpha), theirs.alpha, rtol=1e-4)
  np.testing.assert_allclose(float(ours.xmin), theirs.xmin, rtol=1e-6)
  np.testing.assert_allclose(float(ours.ks_distance), theirs.D, rtol=1e-4, atol=1e-6)


def test_layer_measures_equal_weightwatchers_analysis_of_a_trained_network():
  ds = data.load("digits")
  model = models.make("mlp", ds.x_train.shape[1:], ds.num_classes, widths=[128, 64])
  state, _ = train.fit(model, ds.x_train, ds.y_train, seeds=[0], epochs=10, progress=False)
  params = train.select(state.params, 0)
  kernels = network.from_linen(model, params, ds.x_train[:2]).kernels(params)
  conv = np.random.default_rng(0).standard_t(4, size=(3, 3, 16, 48)).astype(np.float32)
  layers = [torch.nn.Conv2d(16, 48, 3, bias=False)]
  layers += [torch.nn.Linear(k.shape[0], k.shape[1], bias=False) for k in kernels]
  with torch.no_grad():
    layers[0].weight.copy_(torch.from_numpy(conv.transpose(3, 2, 0, 1).copy()))
    for lin, k in zip(layers[1:], kernels):
      lin.weight.copy_(torch.from_numpy(np.asarray(k).T.copy()))
  details = ww.WeightWatcher(model=torch.nn.Sequential(*layers)).analyze(plot=False,
                                                                         randomize=False)
  assert len(details) == 4
  for (_, row), kernel in zip(details.iterrows(), [jnp.asarray(conv), *kernels]):
    fit = spectra.power_law(spectra.esd(kernel))
    np.testing.assert_allclose(float(fit.alpha), row["alpha"], rtol=1e-3)
    np.testing.assert_allclose(float(fit.alpha_weighted), row["alpha_weighted"], rtol=1e-3)
    np.testing.assert_allclose(float(fit.xmin), row["xmin"], rtol=1e-4)
    np.testing.assert_allclose(float(fit.ks_distance), row["D"], rtol=1e-3, atol=1e-5)


def test_power_law_recovers_a_known_exponent_and_refuses_bad_input():
  # Pareto samples with density ∝ λ^−2.5 above 1: α̂ within 3 standard errors.
  x = (1 - np.random.default_rng(0).uniform(size=4000)) ** (-1 / 1.5)
  fit = spectra.power_law(jnp.asarray(x, jnp.float32))
  assert abs(float(fit.alpha) - 2.5) < 3 * float(fit.sigma)
  with pytest.raises(ValueError, match="at least 2"):
    spectra.power_law(jnp.zeros(10))
  with pytest.raises(ValueError, match="eigenvalues"):
    spectra.power_law(jnp.asarray([1.0, np.nan, 2.0]))


def test_correlation_traps_come_from_planted_large_entries():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(400, 300)).astype(np.float32) / np.sqrt(300)
  clean, ev, law = spectra.correlation_traps(jax.random.key(0), jnp.asarray(w))
  assert int(clean) == 0 and ev.shape == (300,) and law.upper > 0
  w[rng.integers(0, 400, 5), rng.integers(0, 300, 5)] = 3.0  # five huge weights
  trapped, _, _ = spectra.correlation_traps(jax.random.key(0), jnp.asarray(w))
  assert int(trapped) == 5


def test_spectra_report_flags_fits_that_cannot_be_read():
  """Exact Pareto samples (density ∝ λ^-3 above 1) are a power law by
  construction: 2 000 of them fit with no flag; a 9-eigenvalue ESD (a 15 × 9
  layer) is flagged for its tail, and a tail the law does not describe (two
  separated clusters) for its KS distance."""
  from rainbow_jax.commands import spectra as report

  pareto = 1.0 + np.random.default_rng(0).pareto(2.0, size=2000).astype(np.float32)
  fit = spectra.power_law(jnp.asarray(np.sort(pareto)))
  assert float(fit.alpha) == pytest.approx(3.0, abs=0.2)
  assert report.fit_warning(int(fit.num_tail), float(fit.ks_distance)) is None
  small = np.random.default_rng(1).standard_t(3, size=(15, 9)).astype(np.float32)
  few = spectra.power_law(spectra.esd(jnp.asarray(small)))
  assert "tail" in report.fit_warning(int(few.num_tail), float(few.ks_distance))
  assert "KS distance" in report.fit_warning(500, 0.34)
