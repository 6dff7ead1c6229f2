"""Executes every notebook in notebooks/ top to bottom at a small size.

Each notebook has a cell tagged ``parameters``; the harness inserts a cell
right after it that sets ``QUICK = True`` (and anything in OVERRIDES), then
runs the notebook with nbclient on this interpreter's kernel.
"""

import glob
import os

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
OVERRIDES = {}  # notebook file name -> extra source for the override cell
# The longest on 2 CPU cores (their modules have fast tests): `pytest -m slow`.
# Each has fast unit tests of its functions; these runs are smoke tests of
# the narrative (pytest -m slow). rainbow_paper (42 s) left the default suite
# to keep it under 6 minutes once RSA and neighbour tests joined; consensus,
# gaussianity and scaling have their own tests (the user-model path of
# your_own_model is covered by test_network and the CLI test on a user's
# checkpoints).
SLOW = {"similarity.ipynb", "rainbow_tutorial.ipynb", "svr.ipynb", "ensembles.ipynb",
        "moments_and_alignment.ipynb", "your_own_model.ipynb", "rainbow_paper.ipynb"}
PARAMS = [pytest.param(p, marks=pytest.mark.slow) if os.path.basename(p) in SLOW else p
          for p in NOTEBOOKS]


def _with_overrides(nb, name):
  idx = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert idx, f"{name} has no cell tagged 'parameters'"
  src = "QUICK = True\n" + OVERRIDES.get(name, "")
  cell = nbformat.v4.new_code_cell(src)
  cell["id"] = "injected-parameters"
  nb.cells.insert(idx[0] + 1, cell)
  return nb


@pytest.mark.parametrize("path", PARAMS, ids=os.path.basename)
def test_notebook_runs(path):
  from nbclient import NotebookClient
  nb = nbformat.read(path, as_version=4)
  for cell in nb.cells:  # outputs are stripped in git
    assert not cell.get("outputs"), f"{path}: commit notebooks without outputs"
  nb = _with_overrides(nb, os.path.basename(path))
  env_backend = os.environ.get("MPLBACKEND")
  os.environ["MPLBACKEND"] = "Agg"
  try:
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
  finally:
    if env_backend is None:
      os.environ.pop("MPLBACKEND", None)
    else:
      os.environ["MPLBACKEND"] = env_backend


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_and_its_percent_source_hold_the_same_cells(path):
  """Each notebook is kept as a readable jupytext source beside it; an edit
  to one that was not synced to the other fails here."""
  jupytext = pytest.importorskip("jupytext")
  source = os.path.splitext(path)[0] + ".py"
  assert os.path.exists(source), f"{source} missing: jupytext --set-formats ipynb,py:percent"
  cells = lambda nb: [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", [])))
                      for c in nb.cells]
  assert cells(jupytext.read(source)) == cells(nbformat.read(path, as_version=4))

