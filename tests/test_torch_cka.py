"""Minibatch CKA against torch-cka (PyPI), the PyTorch package people use for
layer × layer CKA of two networks, run side by side on the same features."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from rainbow_jax import similarity as S

torch = pytest.importorskip("torch")
torch_cka = pytest.importorskip("torch_cka")


def _mlp(seed):
  torch.manual_seed(seed)
  nn = torch.nn
  return nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 24), nn.ReLU(),
                       nn.Linear(24, 10))


def test_minibatch_cka_equals_torch_cka():
  """torch-cka run in float64 (its float32 sums lose up to 3e-3 of CKA on
  uncentred logits) against ours in float32, to 1e-4."""
  d = load_digits()
  layers = ["0", "2", "4"]  # the three Linear layers' outputs
  default = torch.get_default_dtype()
  torch.set_default_dtype(torch.float64)  # torch-cka builds its ones-vectors in it
  try:
    x = torch.from_numpy(d.data[:1600] / 16)
    y = torch.from_numpy(d.target[:1600])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=200)
    m1, m2 = _mlp(0), _mlp(1)
    peer = torch_cka.CKA(m1, m2, model1_name="seed0", model2_name="seed1",
                         model1_layers=layers, model2_layers=layers, device="cpu")
    peer.compare(loader, loader)
    want = peer.export()["CKA"].numpy()
  finally:
    torch.set_default_dtype(default)

  def feats(m):
    out = []
    with torch.no_grad():
      h = x
      for i, mod in enumerate(m):
        h = mod(h)
        if str(i) in layers:
          out.append(h.numpy().astype(np.float32).reshape(8, 200, -1))  # 8 batches
    return out

  f1, f2 = feats(m1), feats(m2)
  got = np.array([[float(S.minibatch_cka(a, b)) for b in f2] for a in f1])
  np.testing.assert_allclose(got, want, atol=1e-4)
  assert want.min() < 0.5 < want.max()  # a non-trivial matrix
