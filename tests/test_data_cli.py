"""Datasets on real offline data, the command line, and the benchmark smoke."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rainbow_jax import commands as cli
from rainbow_jax import data, models, spectra, train
from conftest import FASHION_DIR, HAS_FASHION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not HAS_FASHION, reason="apt-get install -y dataset-fashion-mnist")
def test_fashion_mnist_from_debian_idx():
  ds = data.load("fashion_mnist", data_dir=FASHION_DIR)
  assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
  assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
  # Fashion-MNIST is balanced: 6 000 train and 1 000 test images per class.
  np.testing.assert_array_equal(np.bincount(ds.y_train), np.full(10, 6000))
  np.testing.assert_array_equal(np.bincount(ds.y_test), np.full(10, 1000))
  assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 1e-4


def test_idx_round_trip_and_bad_magic(tmp_path):
  arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  path = tmp_path / "a-idx3-ubyte"
  path.write_bytes(bytes([0, 0, 0x08, 3]) + np.array([2, 3, 4], ">u4").tobytes()
                   + arr.tobytes())
  np.testing.assert_array_equal(data.read_idx(str(path)), arr)
  bad = tmp_path / "bad"
  bad.write_bytes(b"\x01\x02\x03\x04")
  with pytest.raises(ValueError, match="not an IDX file"):
    data.read_idx(str(bad))


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.setattr(data, "DEBIAN_DIRS", {})
  (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")  # one of the four files
  assert not data.available("fashion_mnist", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="apt-get install -y dataset-fashion-mnist"):
    data.load("fashion_mnist", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="unknown dataset"):
    data.load("imagenet")


@pytest.mark.slow  # the analyze pipeline runs in the default suite on a user's model
def test_analyze_command_on_digits(tmp_path):
  out = tmp_path / "report"
  assert cli.main(["analyze", "--dataset", "digits", "--widths", "32", "16", "--epochs", "10",
                   "--rainbow-samples", "3", "--batch", "256", "--out", str(out)]) == 0
  res = json.loads((out / "results.json").read_text())
  assert res["dataset"] == "digits" and res["samples"] == 1437
  assert res["r2_all_layers"][0] == pytest.approx(1.0, abs=1e-4)  # same pixels in both
  assert len(res["r2"]) == 2 and all(0 < r <= 1 + 1e-6 for r in res["r2"])
  assert len(res["trained_accuracy"]) == 2 and min(res["trained_accuracy"]) > 50
  assert len(res["rainbow_accuracy"]) == 3 and min(res["rainbow_accuracy"]) > 30
  assert len(res["learned_components"]) == 3
  for layer in res["layers"]:
    # Clipping to a complete basis is the unclipped network.
    for kind in ("activation", "weight"):
      c = layer["clipping"][kind]
      if kind == "activation" or c["ranks"][-1] == layer["input_dim"]:
        assert c["accuracy"][-1] == pytest.approx(res["trained_accuracy"][0], abs=1e-3)
  t = res["timings"]
  for stage in ("train", "moments", "clipping", "cka", "rainbow"):  # compile time beside wall
    assert 0 <= t[f"{stage}_compile_seconds"] <= t[f"{stage}_seconds"], stage
  assert "of which XLA compilation" in (out / "report.md").read_text()
  assert res["versions"]["jax"] and res["device"]
  for fig in res["figures"]:
    assert (out / fig).stat().st_size > 1000
  assert "r²" in (out / "report.md").read_text()
  html = (out / "report.html").read_text()
  assert all(f"src='{f}'" in html for f in res["figures"])
  assert cli.main(["analyze", "--dataset", "digits", "--seeds", "1", "--out", str(out)]) == 2
  # Untrained: the accuracy at initialisation, no traceback.
  assert cli.main(["train", "--dataset", "digits", "--epochs", "0", "--seeds", "1",
                   "--out", str(tmp_path / "t0")]) == 0
  with pytest.raises(ValueError, match="no examples"):
    train.fit(models.make("mlp", (8, 8, 1), 10), np.zeros((0, 8, 8, 1), np.float32),
              np.zeros((0,), np.int32), progress=False)


def _quick_benchmark(name, tmp_path):
  """Runs benchmarks/<name>.py --quick and returns its JSON."""
  out = tmp_path / f"{name}.json"
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks", f"{name}.py"),
       "--quick", "--repeats", "1", "--out", str(out)],
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  return json.loads(out.read_text())


@pytest.mark.slow
def test_covariance_benchmark_quick(tmp_path):
  res = _quick_benchmark("covariance", tmp_path)
  assert {"platform", "device", "cpu_count", "jax", "torch"} <= set(res["machine"])
  impls = {r["impl"] for r in res["records"]}
  assert {"matmul_peak", "rainbow_jax"} <= impls
  assert ("pytorch" in impls) == (res["machine"]["torch"] is not None)
  for r in res["records"]:
    assert r["bench"] == "covariance"
    if r["impl"] == "matmul_peak":
      assert r["extra"]["gflops"] > 0
    else:
      assert r["seconds"] > 0



@pytest.mark.slow
def test_similarity_benchmark_quick(tmp_path):
  res = _quick_benchmark("similarity", tmp_path)
  seen = {(r["bench"], r["impl"]) for r in res["records"]}
  for bench in ("cca", "pwcca", "linear_cka"):
    assert {(bench, "numpy"), (bench, "rainbow_jax")} <= seen
  for r in res["records"]:
    assert r["seconds"] > 0
    if r["impl"] == "rainbow_jax" and r["bench"] in ("cca", "pwcca", "linear_cka"):
      assert r["extra"]["max_abs_diff_vs_numpy"] < 1e-4  # agreement travels with speed
    if r["impl"] == "rainbow_jax_compat":  # float32 run of google's float64 algorithm
      assert r["extra"]["max_abs_diff_vs_numpy"] < 1e-3
  local = {r["bench"]: r["extra"] for r in res["records"]
           if r["impl"] == "rainbow_jax" and "abs_diff_vs_sklearn" in r["extra"]}
  assert local["mutual_knn"]["abs_diff_vs_sklearn"] < 1e-3


def test_tfds_source_with_mock_data(tmp_path, monkeypatch):
  """The tensorflow-datasets path, on tfds' own mock data (no download)."""
  tfds = pytest.importorskip("tensorflow_datasets")
  monkeypatch.setattr(data, "DEBIAN_DIRS", {})
  monkeypatch.delenv("RAINBOW_JAX_DATA_DIR", raising=False)
  with tfds.testing.mock_data(num_examples=24,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    ds = data.load("cifar10", tfds_dir=str(tmp_path), grayscale=True)
    fm = data.load("fashion_mnist", data_dir=str(tmp_path / "none"),
                   tfds_dir=str(tmp_path))
  assert ds.source.startswith("tfds:")
  assert ds.x_train.shape == (24, 32, 32, 1) and ds.x_test.shape == (24, 32, 32, 1)
  assert ds.y_train.dtype == np.int32 and ds.y_train.max() < 10
  assert fm.x_train.shape == (24, 28, 28, 1)
  assert abs(float(ds.x_train.mean())) < 1e-4  # standardised with train stats


def test_train_command_resumes_from_checkpoint(tmp_path):
  args = ["train", "--dataset", "digits", "--widths", "32", "--seeds", "2",
          "--batch-size", "32", "--checkpoint-dir", str(tmp_path / "ck")]
  assert cli.main(args + ["--epochs", "2", "--out", str(tmp_path / "a")]) == 0
  assert cli.main(args + ["--epochs", "3", "--out", str(tmp_path / "b")]) == 0
  a = json.loads((tmp_path / "a" / "results.json").read_text())
  b = json.loads((tmp_path / "b" / "results.json").read_text())
  assert len(a["history"]["loss"]) == 2 and len(b["history"]["loss"]) == 3
  assert b["history"]["loss"][:2] == a["history"]["loss"]  # epochs 1-2 restored
  assert min(b["test_accuracy"]) > 80
  assert (tmp_path / "b" / "test_accuracy.png").exists()
  # Other seeds cannot silently resume from this checkpoint.
  assert cli.main(args + ["--seed", "5", "--epochs", "4", "--out", str(tmp_path / "c")]) == 2


def test_tutorial_normalisation_then_grayscale(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
    raw = data.load("cifar10", tfds_dir=str(tmp_path), normalize=False)
    tut = data.load("cifar10", tfds_dir=str(tmp_path), normalize="tutorial",
                    grayscale=True)
  mean = np.array([0.485, 0.456, 0.406])
  std = np.array([0.229, 0.224, 0.225])
  ref = ((raw.x_train - mean) / std) @ np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(tut.x_train[..., 0], ref, rtol=1e-5, atol=1e-5)
  assert raw.x_train.min() >= 0 and raw.x_train.max() <= 1


@pytest.mark.slow
def test_svr_benchmark_quick(tmp_path):
  res = _quick_benchmark("svr", tmp_path)
  ours = [r for r in res["records"] if r["impl"] == "rainbow_jax"]
  assert {"numpy", "rainbow_jax", "rainbow_jax_stack"} == {r["impl"] for r in res["records"]}
  for r in res["records"]:  # svr_stack: the same graphs as numpy's
    if r["impl"] == "rainbow_jax_stack":
      assert r["extra"]["max_abs_diff_adjacency"] < 1e-3
  for r in ours:  # the same graph as the numpy implementation
    if r["extra"].get("top_k") is None and r["extra"].get("method", "svd") == "svd":
      assert r["extra"]["max_abs_diff_adjacency"] < 1e-3
      assert r["extra"]["significance_agreement"] > 0.99


@pytest.mark.slow
def test_streaming_benchmark_quick(tmp_path):
  res = _quick_benchmark("streaming", tmp_path)
  by = {r["case"]: r["extra"] for r in res["records"]}
  assert set(by) == {"stream_R1", "in_memory_R1", "stream_R2", "in_memory_R2"}
  assert by["stream_R2"]["images"] == 2 * by["stream_R1"]["images"]
  # Same statistics either way.
  assert abs(by["stream_R2"]["covariance_trace"] - by["in_memory_R2"]["covariance_trace"]) < 1e-3


@pytest.mark.slow
def test_rainbow_and_ensembles_benchmarks_quick(tmp_path):
  res = _quick_benchmark("rainbow", tmp_path)
  cases = {(r["impl"], r["case"]) for r in res["records"]}
  assert ("rainbow_jax", "mlp_generate_2") in cases
  for r in res["records"]:
    if r["impl"] == "rainbow_jax" and "generate" in r["case"]:
      assert len(r["extra"]["accuracy"]) == r["extra"]["samples"]
  if res["machine"]["torch"] is not None:  # same clipped accuracies as the tutorial's way
    clip = next(r for r in res["records"] if r["bench"] == "clip" and r["impl"] == "rainbow_jax")
    assert clip["extra"]["max_abs_diff_accuracy_vs_pytorch"] < 0.5
  ens = _quick_benchmark("ensembles", tmp_path)
  for r in ens["records"]:
    assert abs(r["extra"]["g2_over_theory"] - 1) < 0.2


@pytest.mark.slow
def test_scattering_benchmark_quick(tmp_path):
  res = _quick_benchmark("scattering", tmp_path)
  recs = {(r["impl"], r["case"]): r for r in res["records"]}
  assert {("rainbow_jax", "train_epoch_4"), ("rainbow_jax", "generate_8")} <= set(recs)
  if res["machine"]["torch"] is not None:  # the PyTorch port computes the same network
    ours = recs[("rainbow_jax", "generate_1")]["extra"]["reference_accuracy"]
    assert abs(recs[("pytorch", "generate_1")]["extra"]["reference_accuracy"] - ours) < 0.5


@pytest.mark.slow
def test_vit_benchmark_quick(tmp_path):
  res = _quick_benchmark("vit", tmp_path)
  recs = res["records"]
  seeds = {r["case"]["seeds"] for r in recs if r["impl"] == "rainbow_jax"}
  assert seeds == {1, 2} and all(r["compile_seconds"] is not None for r in recs
                                 if r["impl"] == "rainbow_jax")
  counts = {r["impl"]: r["extra"]["count"] for r in recs if r["impl"].endswith("_params")}
  if "pytorch_params" in counts:  # the same architecture on both sides
    assert counts["pytorch_params"] == counts["rainbow_jax_params"]


@pytest.mark.slow
def test_resnet_benchmark_quick(tmp_path):
  res = _quick_benchmark("resnet", tmp_path)
  recs = res["records"]
  trained = {(r["impl"], r["case"]["seeds"]) for r in recs if r["bench"] == "resnet_train"}
  assert {("rainbow_jax", 1), ("rainbow_jax", 4)} <= trained
  stages = {r["case"]["stage"] for r in recs if r["bench"] == "resnet_analyze"}
  assert {"moments_seconds", "rainbow_seconds", "cka_seconds"} <= stages
  counts = {r["impl"]: r["extra"]["count"] for r in recs if r["bench"] == "resnet_params"}
  if "pytorch" in counts:  # the same architecture on both sides
    assert counts["pytorch"] == counts["rainbow_jax"]


@pytest.mark.slow
def test_resnet_step_benchmark_quick(tmp_path):
  res = _quick_benchmark("resnet_step", tmp_path)
  ours = {(r["impl"], r["case"]["step"]) for r in res["records"] if r["compile_seconds"] is not None}
  steps = {"forward", "forward_backward", "forward_backward_no_batchnorm",
           "training_step_in_scan"}
  assert ours == {(f"rainbow_jax_{c}", s) for c in ("patches", "xla") for s in steps}


@pytest.mark.slow
def test_experiment_scripts_quick(tmp_path):
  for script in ("svr_fashion_mnist.py", "ensembles_seed.py", "rainbow_paper.py",
                 "rainbow_accuracy.py", "transformers.py", "svcca_findings.py",
                 "kernels_width.py", "rainbow_resnet.py", "svr_vgg.py"):
    out = tmp_path / script
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", script), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["seconds"] > 0
    assert list(out.glob("*.png"))


_USER_MODEL = '''
import flax.linen as nn


class Net(nn.Module):
  """Flax default names, biases, BatchNorm, a residual add."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    h = nn.BatchNorm(use_running_average=not train)(nn.Conv(8, (3, 3))(x))
    x = nn.relu(h + x)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


def make():
  return Net()
'''


def test_analyze_a_users_model_from_checkpoints(tmp_path):
  """`--model FILE.py:FACTORY --checkpoint …` on a model we did not write:
  K stacked seeds from `train`'s orbax checkpoints, one seed from a msgpack
  file; what does not apply is said, a wrong checkpoint is refused."""
  import importlib.util

  import flax.serialization
  import optax

  from rainbow_jax import train
  src = tmp_path / "user_model.py"
  src.write_text(_USER_MODEL)
  spec = importlib.util.spec_from_file_location("user_model", src)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  ds = data.load("digits")
  ckpt = tmp_path / "ckpt"
  state, _ = train.fit(mod.make(), ds.x_train, ds.y_train, seeds=[0, 1], epochs=2,
                       tx=optax.adam(3e-3), checkpoint_dir=str(ckpt), progress=False)
  one = tmp_path / "seed0.msgpack"
  one.write_bytes(flax.serialization.msgpack_serialize(train.select(state.variables, 0)))
  out = tmp_path / "report"
  common = ["analyze", "--dataset", "digits", "--model", f"{src}:make", "--rainbow-samples", "2",
            "--batch", "512", "--align-samples", "600", "--clip-samples", "300",
            "--clip-layers", "4", "--cka-samples", "300"]
  assert cli.main(common + ["--checkpoint", str(ckpt), "--out", str(out)]) == 0
  res = json.loads((out / "results.json").read_text())
  # `nn.Dense(10)(nn.relu(nn.Dense(32)(x)))` names the classifier Dense_0: it
  # is built first, called second. Layers come in call order.
  assert res["layer_names"] == ["Conv_0", "Conv_1", "Dense_1", "Dense_0"]
  assert res["batch_norms"] == ["BatchNorm_0"]
  assert len(res["trained_accuracy"]) == 2 and min(res["trained_accuracy"]) > 80
  assert np.asarray(res["cka"]).shape == (4, 4)
  # One measure, one answer: `compare` on the same checkpoints and images
  # gives analyze's CKA matrix, and both say how conv inputs entered it.
  cmp = tmp_path / "compare"
  assert cli.main(["compare", "--dataset", "digits", "--model", f"{src}:make", "--checkpoint",
                   str(ckpt), "--test-images", "300", "--measures", "linear_cka", "--null", "2",
                   "--out", str(cmp)]) == 0
  cres = json.loads((cmp / "results.json").read_text())
  np.testing.assert_allclose(cres["comparisons"][0]["value"], res["cka"], atol=1e-4)
  assert res["cka_conv"] == cres["conv"] == "mean"
  assert "averaged over positions" in (out / "report.md").read_text()
  assert "averaged over positions" in (cmp / "report.md").read_text()
  assert res["r2_all_layers"][0] == pytest.approx(1.0, abs=1e-4)
  # Conv_0 and Conv_1 meet at the residual add: kept; Dense_0 is sampled.
  assert [layer["reads"] for layer in res["layers"]] == [[0], [1], [1, 2], [3]]
  assert res["rainbow_sampled_layers"] == [3]
  assert min(res["rainbow_accuracy"]) > 30
  assert [c["layers"] for c in res["svr_chains"]] == [[3, 4]]
  assert any("skip connection" in n for n in res["notes"])
  assert "did not apply" in (out / "report.md").read_text()
  # --rainbow-streams: both convs write the residual stream; drawn jointly.
  streams = tmp_path / "streams"
  assert cli.main(common + ["--checkpoint", str(ckpt), "--rainbow-streams", "--clip-layers", "1",
                            "--out", str(streams)]) == 0
  sres = json.loads((streams / "results.json").read_text())
  assert sres["rainbow_sampled_layers"] == [1, 2, 3]
  assert any("sampled jointly" in n for n in sres["notes"])
  assert min(sres["rainbow_accuracy"]) > 20
  t = sres["timings"]
  assert 0 <= t["rainbow_compile_seconds"] <= t["rainbow_seconds"]
  assert "of which XLA compilation" in (streams / "report.md").read_text()
  # One network from a msgpack file: seed 0's variables exactly.
  from rainbow_jax.commands import _common as analyze
  m = mod.make()
  template = jax.eval_shape(m.init, jax.random.key(0), ds.x_train[:1])
  (v0,) = analyze.split_seeds(analyze.load_variables(str(one)), template, str(one))
  for a, b in zip(jax.tree_util.tree_leaves(v0),
                  jax.tree_util.tree_leaves(train.select(state.variables, 0))):
    np.testing.assert_array_equal(a, b)
  # `spectra` on the same checkpoint: the user's layers in call order, and
  # each α is weightwatcher's fit of that layer's spectral density.
  sp = tmp_path / "spectra"
  assert cli.main(["spectra", "--dataset", "digits", "--model", f"{src}:make", "--checkpoint",
                   str(one), "--out", str(sp)]) == 0
  rows = json.loads((sp / "results.json").read_text())["layers"]
  assert [r["name"] for r in rows] == ["Conv_0", "Conv_1", "Dense_1", "Dense_0"]
  ww_fit = pytest.importorskip("weightwatcher.WW_powerlaw")
  kernels = [v0["params"][n]["kernel"] for n in ("Conv_0", "Conv_1", "Dense_1", "Dense_0")]
  for r, k in zip(rows, kernels):
    ev = np.asarray(spectra.esd(jnp.asarray(k)))
    assert r["alpha"] == pytest.approx(ww_fit.WWFit(ev[ev > 1e-5]).alpha, rel=1e-3)
  assert "| α ± σ |" in (sp / "report.md").read_text() and (sp / "esd_layer1.png").exists()
  out1 = tmp_path / "report1"
  bad = tmp_path / "bad.msgpack"
  bad.write_bytes(flax.serialization.msgpack_serialize({"params": {"Dense_0": {}}}))
  assert cli.main(common + ["--checkpoint", str(bad), "--out", str(out1)]) == 2
