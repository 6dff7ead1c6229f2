"""The project's pytest configuration survives plugins a machine may have
installed: pytest-benchmark (in the test extra) under xdist, and a plugin
that warns while pytest configures itself, as pytest-benchmark < 5.2 did
("Benchmarks are automatically disabled because xdist plugin is active"),
which ``filterwarnings = error`` turned into an INTERNALERROR on a GPU
image."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PLUGIN = '''
import warnings
import pytest


class PytestBenchmarkWarning(pytest.PytestWarning):
  pass


def pytest_configure(config):
  warnings.warn(PytestBenchmarkWarning(
      "Benchmarks are automatically disabled because xdist plugin is active."
      "Benchmarks cannot be performed reliably in a parallelized environment."))
'''


def test_suite_config_survives_pytest_benchmark_and_configure_time_warnings(tmp_path):
  pytest.importorskip("pytest_benchmark")
  (tmp_path / "configure_warner.py").write_text(_PLUGIN)
  (tmp_path / "test_tiny.py").write_text(
      "import rainbow_jax\n\ndef test_one():\n  assert rainbow_jax.__version__\n\n"
      "def test_two():\n  assert 1 + 1 == 2\n")
  env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  for extra in ([], ["-p", "configure_warner"]):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "-c", os.path.join(ROOT, "pyproject.toml"),
         "--rootdir", str(tmp_path), *extra, str(tmp_path / "test_tiny.py")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "INTERNALERROR" not in out and "2 passed" in out, out[-3000:]


def test_xla_flags_the_suite_sets_are_tried_first():
  """A CPU flag that this XLA does not know would abort every process of
  the run (the suite's own are tried in a subprocess first); one it knows
  is taken."""
  from conftest import _xla_takes
  assert not _xla_takes("--xla_cpu_no_such_flag_of_ours=true")
  assert _xla_takes("--xla_backend_optimization_level=0")
