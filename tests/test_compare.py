"""`rainbow-jax compare`: calibrated layer × layer similarity of networks."""

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from rainbow_jax import commands as cli
from rainbow_jax import similarity as S
from rainbow_jax.commands import compare as compare_report


def test_compare_finds_the_copy_and_calls_the_stranger_chance():
  """A permuted, rescaled copy scores 1 on every measure (each is invariant
  to it) far above its shuffled null; an unrelated network stays within
  a few null standard deviations."""
  x = load_digits().data[:300].astype(np.float32) / 16
  rng = np.random.default_rng(0)
  h = np.maximum(x @ rng.normal(size=(64, 24)).astype(np.float32), 0) + 1e-3
  copy = 2.0 * h[:, rng.permutation(24)]
  stranger = rng.normal(size=h.shape).astype(np.float32)
  rows = compare_report.compare([[h], [copy], [stranger]], ["a", "copy", "stranger"],
                                null_samples=10)
  got = {(r["b"], r["measure"]): (r["value"][0][0], r["zscore"][0][0]) for r in rows
         if r["a"] == "a"}
  for measure in compare_report.DEFAULT:
    value, z = got[("copy", measure)]
    assert value == pytest.approx(1.0, abs=1e-4) and z > 10, (measure, value, z)
    assert abs(got[("stranger", measure)][1]) < 5, measure
  with pytest.raises(ValueError, match="at least 2"):
    compare_report.compare([[h]], ["a"])
  with pytest.raises(ValueError, match="unknown measure"):
    compare_report.measure_fn("cka")
  # Every row of the table: a scaled, permuted copy is the same representation.
  for name, row in S.TABLE.items():
    v = float(compare_report.measure_fn(name)(h, copy))
    assert v == pytest.approx(1.0 if row.similarity else 0.0, abs=2e-3), (name, v)


@pytest.mark.slow
def test_compare_command_on_trained_seeds(tmp_path):
  out = tmp_path / "cmp"
  assert cli.main(["compare", "--dataset", "digits", "--seeds", "2", "--epochs", "2",
                   "--test-images", "300", "--null", "10", "--out", str(out)]) == 0
  res = json.loads((out / "results.json").read_text())
  assert {r["measure"] for r in res["comparisons"]} == set(compare_report.DEFAULT)
  for r in res["comparisons"]:
    v, z = np.asarray(r["value"]), np.asarray(r["zscore"])
    assert v.shape == (len(res["layers"]),) * 2
    assert np.all(np.diag(z) > 10)  # two seeds' matched layers: far above chance
    assert (out / r["figure"]).exists()
  assert "z-score" in (out / "report.md").read_text()
  assert cli.main(["compare", "--dataset", "digits", "--seeds", "1", "--epochs", "0",
                   "--out", str(out)]) == 2
