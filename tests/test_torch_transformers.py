"""PyTorch transformer weights read into the canonical layout, checked
against PyTorch's own forward passes: the packed attention projections,
embedding tables, GPT-2's ``Conv1D`` and parameters that are no layer."""

import json

import numpy as np
import pytest

from rainbow_jax import network

torch = pytest.importorskip("torch")


def test_multihead_attention_split_into_q_k_v_reproduces_torch():
  torch.manual_seed(0)
  d, heads, n = 16, 4, 7
  layer = torch.nn.TransformerEncoderLayer(d, heads, dim_feedforward=32, batch_first=True,
                                           dropout=0.0).eval()
  tw = network.from_torch(layer)
  assert tw.names[:4] == ("self_attn.in_proj_weight[q]", "self_attn.in_proj_weight[k]",
                          "self_attn.in_proj_weight[v]", "self_attn.out_proj.weight")
  assert tw.kinds == ("attention",) * 4 + ("dense",) * 2
  assert [tuple(k.shape) for k in tw.kernels] == [(d, d)] * 4 + [(d, 32), (32, d)]
  assert "norm1.weight" in tw.dropped and "self_attn.in_proj_bias" in tw.dropped
  # Attention rebuilt from our kernels (and torch's biases) equals torch's.
  x = torch.randn(2, n, d)
  with torch.no_grad():
    want = layer.self_attn(x, x, x, need_weights=False)[0].numpy()
  sd = {k: v.numpy() for k, v in layer.state_dict().items()}
  bq, bk, bv = np.split(sd["self_attn.in_proj_bias"], 3)
  kq, kk, kv, ko = (np.asarray(k, np.float64) for k in tw.kernels[:4])
  xs = x.numpy().astype(np.float64)
  split = lambda h: h.reshape(2, n, heads, d // heads).transpose(0, 2, 1, 3)
  q, k, v = split(xs @ kq + bq), split(xs @ kk + bk), split(xs @ kv + bv)
  logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
  att = np.exp(logits - logits.max(-1, keepdims=True))
  att /= att.sum(-1, keepdims=True)
  out = (att @ v).transpose(0, 2, 1, 3).reshape(2, n, d) @ ko + sd["self_attn.out_proj.bias"]
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


class _Conv1D(torch.nn.Module):
  """Hugging Face GPT-2's Conv1D: weight stored [in, out], y = x W + b."""

  def __init__(self, n_in, n_out):
    super().__init__()
    self.weight = torch.nn.Parameter(torch.randn(n_in, n_out))
    self.bias = torch.nn.Parameter(torch.zeros(n_out))

  def forward(self, x):
    return x @ self.weight + self.bias


_Conv1D.__name__ = "Conv1D"


class _TinyLM(torch.nn.Module):

  def __init__(self):
    super().__init__()
    self.wte = torch.nn.Embedding(50, 12)
    self.pos_embedding = torch.nn.Parameter(torch.randn(1, 6, 12))
    self.c_fc = _Conv1D(12, 20)
    self.head = torch.nn.Linear(20, 50, bias=False)

  def forward(self, tokens):
    h = self.wte(tokens) + self.pos_embedding[:, : tokens.shape[1]]
    return self.head(torch.relu(self.c_fc(h)))


def test_embeddings_conv1d_and_position_parameters():
  torch.manual_seed(1)
  lm = _TinyLM().eval()
  tw = network.from_torch(lm)
  assert tw.names == ("wte.weight", "c_fc.weight", "head.weight")
  assert tw.kinds == ("embedding", "dense", "dense")
  assert "pos_embedding" in tw.dropped
  emb, fc, head = (np.asarray(k) for k in tw.kernels)
  assert emb.shape == (50, 12) and fc.shape == (12, 20) and head.shape == (20, 50)
  # One-hot tokens through the kernels equal the module's forward.
  tokens = torch.randint(0, 50, (3, 6))
  onehot = np.eye(50, dtype=np.float32)[tokens.numpy()]
  h = onehot @ emb + lm.pos_embedding.detach().numpy()
  logits = np.maximum(h @ fc, 0) @ head
  with torch.no_grad():
    np.testing.assert_allclose(logits, lm(tokens).numpy(), rtol=1e-4, atol=1e-4)
  # From the bare state dict, the table is still recognised by its name.
  sd = network.from_torch(lm.state_dict())
  assert sd.kinds[0] == "embedding" and np.allclose(sd.kernels[0], emb)


def test_spectra_command_reads_a_saved_pytorch_transformer(tmp_path):
  from rainbow_jax import commands
  torch.manual_seed(0)
  enc = torch.nn.TransformerEncoder(
      torch.nn.TransformerEncoderLayer(96, 4, dim_feedforward=192, batch_first=True),
      1, enable_nested_tensor=False)
  path = tmp_path / "encoder.pt"
  torch.save(enc.state_dict(), path)
  assert commands.main(["spectra", "--torch", str(path), "--out", str(tmp_path / "out")]) == 0
  rows = json.loads((tmp_path / "out" / "results.json").read_text())["layers"]
  assert [r["kind"] for r in rows] == ["attention"] * 4 + ["dense"] * 2
  assert [r["kernel_shape"] for r in rows] == [[96, 96]] * 4 + [[96, 192], [192, 96]]
  # Untrained, every layer is noise: no eigenvalue above the Marchenko–Pastur
  # edge of its own PyTorch initialiser (Xavier for the packed q/k/v,
  # uniform ±1/√fan_in for the linear layers).
  assert [r["learned_components"] for r in rows] == [0] * 6
  assert "| attention |" in (tmp_path / "out" / "report.md").read_text()


def test_compare_command_reads_features_saved_from_pytorch_hooks(tmp_path):
  from rainbow_jax import commands
  torch.manual_seed(0)
  enc = torch.nn.TransformerEncoder(
      torch.nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True), 2,
      enable_nested_tensor=False).eval()
  feats = {}
  for i, layer in enumerate(enc.layers):
    layer.register_forward_hook(lambda m, inp, out, i=i: feats.__setitem__(f"layer{i}", out))
  with torch.no_grad():
    enc(torch.randn(200, 6, 32))
  a = {k: v.numpy() for k, v in feats.items()}  # [200, 6, 32] token sequences
  np.savez(tmp_path / "a.npz", **a)
  # Linear CKA is invariant to rotations and isotropic scaling of the
  # features: a rotated, scaled copy scores 1 on the matched layers.
  q = np.linalg.qr(np.random.default_rng(0).normal(size=(32, 32)))[0]
  np.savez(tmp_path / "rotated.npz", **{k: 3.0 * v @ q for k, v in a.items()})
  np.savez(tmp_path / "other.npz", only=np.random.default_rng(1).normal(size=(200, 5)))
  out = tmp_path / "out"
  assert commands.main(["compare", "--features", str(tmp_path / "a.npz"), "--features",
                        str(tmp_path / "rotated.npz"), "--features", str(tmp_path / "other.npz"),
                        "--measures", "linear_cka", "--null", "2", "--out", str(out)]) == 0
  res = json.loads((out / "results.json").read_text())
  first = res["comparisons"][0]
  assert (first["a"], first["b"]) == ("a", "rotated")
  np.testing.assert_allclose(np.diag(first["value"]), 1.0, atol=1e-5)
  assert np.asarray(res["comparisons"][1]["value"]).shape == (2, 1)
  assert res["layers"]["other"] == ["only"]
  np.savez(tmp_path / "short.npz", x=np.zeros((10, 4), np.float32))
  assert commands.main(["compare", "--features", str(tmp_path / "a.npz"), "--features",
                        str(tmp_path / "short.npz"), "--out", str(out)]) == 2
