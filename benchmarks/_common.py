"""Shared benchmark plumbing: timing, machine description, JSON output.

Follows the convention of DESIGN.md: each `benchmarks/<topic>.py` runs our
implementation and its peers in the same process and writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import jax
import numpy as np


SIZES = ("quick", "cpu", "accel")


def parser(topic: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=f"rainbow_jax benchmark: {topic}")
  p.add_argument("--size", choices=SIZES, default=None,
                 help="quick: tiny cases (CI smoke); cpu: a 2-core CPU's cases;"
                      " accel: GPU/TPU cases (default: accel on an accelerator, else cpu)")
  p.add_argument("--quick", action="store_true", help="same as --size quick")
  p.add_argument("--out", default=f"results/{topic}.json", help="JSON path")
  p.add_argument("--repeats", type=int, default=5)
  return p


def parse_args(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
  """Parses `argv`, resolving ``size`` (``--quick`` wins) and setting
  ``quick``/``accel`` to match."""
  args = p.parse_args(argv)
  if args.quick:
    args.size = "quick"
  elif args.size is None:
    args.size = "cpu" if jax.default_backend() == "cpu" else "accel"
  args.quick, args.accel = args.size == "quick", args.size == "accel"
  return args


def torch_or_none():
  try:
    import torch
  except ImportError:
    return None
  return torch


def torch_device(torch) -> str:
  """Where the PyTorch peer runs: the GPU when JAX runs on one too (the same
  device for both sides), else the CPU."""
  if jax.default_backend() == "gpu" and torch.cuda.is_available():
    return "cuda"
  return "cpu"


def fashion_mnist_or_random(samples: int) -> tuple[np.ndarray, np.ndarray, str]:
  """The first `samples` Fashion-MNIST training images and labels when the
  dataset is installed, else random images of its shape; and a note saying
  which."""
  from rainbow_jax import data
  if data.available("fashion_mnist"):
    ds = data.load("fashion_mnist")
    return (ds.x_train[:samples], ds.y_train[:samples],
            f"data: first {samples} Fashion-MNIST training images")
  rng = np.random.default_rng(0)
  return (rng.normal(size=(samples, 28, 28, 1)).astype(np.float32),
          rng.integers(0, 10, samples).astype(np.int32),
          "data: random images of Fashion-MNIST's shape (dataset not installed)")


def torch_epoch(torch, model, opt, x: np.ndarray, y: np.ndarray, *, batch_size: int = 128,
                seed: int = 0) -> Callable[[], None]:
  """The usual PyTorch loop for one epoch (a seeded shuffle; forward,
  cross-entropy, backward, optimiser step per batch) over NHWC images `x`
  and labels `y`, moved once to `model`'s device as NCHW tensors; returns
  the no-argument epoch runner that the timers call."""
  dev = next(model.parameters()).device
  loss_fn = torch.nn.CrossEntropyLoss()
  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dev)
  yt = torch.from_numpy(y.astype(np.int64)).to(dev)
  gen = torch.Generator().manual_seed(seed)

  def epoch():
    model.train()
    perm = torch.randperm(len(xt), generator=gen).to(dev)
    for i in range(0, len(xt), batch_size):
      idx = perm[i:i + batch_size]
      loss = loss_fn(model(xt[idx]), yt[idx])
      opt.zero_grad()
      loss.backward()
      opt.step()

  return epoch


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo on Linux; platform's otherwise):
  machines differ, so every JSON names its CPU."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
  torch = torch_or_none()
  dev = jax.devices()[0]
  tdev = None if torch is None else torch_device(torch)
  return {
      "platform": platform.platform(),
      "processor": platform.processor() or platform.machine(),
      "cpu_model": cpu_model(),
      "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
      "device_count": jax.device_count(),
      "cpu_count": os.cpu_count(),
      "jax": jax.__version__,
      "numpy": np.__version__,
      "torch": None if torch is None else torch.__version__,
      "torch_threads": None if torch is None else torch.get_num_threads(),
      "torch_device": None if tdev is None else (
          torch.cuda.get_device_name() if tdev == "cuda" else "cpu"),
  }


def block(x):
  """Waits for JAX's asynchronous work and, when PyTorch has used the GPU,
  for its queued kernels, so a timer measures finished work on both sides."""
  x = jax.block_until_ready(x)
  torch = sys.modules.get("torch")
  if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
    torch.cuda.synchronize()
  return x


def time_fn(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
  """Returns (first-call seconds, median steady-state seconds)."""
  t0 = time.perf_counter()
  block(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int
                     ) -> dict[str, tuple[float, float]]:
  """Times several implementations in alternation (round-robin), so drift in
  the machine's speed hits all of them alike. Returns name → (first-call
  seconds, median steady-state seconds)."""
  first = {}
  for name, fn in fns.items():
    t0 = time.perf_counter()
    block(fn())
    first[name] = time.perf_counter() - t0
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t0 = time.perf_counter()
      block(fn())
      times[name].append(time.perf_counter() - t0)
  return {n: (first[n], statistics.median(times[n])) for n in fns}


def gemm_peak(shapes: list[tuple[int, int, int]], repeats: int = 20) -> dict:
  """Best float32 GEMM rate (GFLOP/s) of XLA and of torch over `shapes`.

  A peak is a best case, so it takes the fastest of `repeats` runs (a median
  on a shared machine measures the neighbours too).
  """
  out = {"xla": 0.0, "torch": None}
  torch = torch_or_none()
  for m, k, n in shapes:
    a = jax.numpy.ones((m, k), jax.numpy.float32)
    b = jax.numpy.ones((k, n), jax.numpy.float32)
    # float32 as the library computes it (HIGHEST: no TF32 on GPUs, like
    # torch's default), so the peak is the one its products can reach.
    f = jax.jit(lambda a, b: jax.numpy.matmul(a, b, precision=jax.lax.Precision.HIGHEST))
    block(f(a, b))
    best = min(_once(lambda: f(a, b)) for _ in range(repeats))
    out["xla"] = max(out["xla"], 2 * m * k * n / best / 1e9)
    if torch is not None:
      dev = torch_device(torch)
      ta, tb = torch.ones(m, k, device=dev), torch.ones(k, n, device=dev)
      best = min(_once(lambda: ta @ tb) for _ in range(repeats))
      out["torch"] = max(out["torch"] or 0.0, 2 * m * k * n / best / 1e9)
  return out


def seconds(fn) -> tuple[float, Any]:
  """``(seconds, result)`` of one call, waiting for JAX's asynchronous work."""
  t0 = time.perf_counter()
  out = block(fn())
  return time.perf_counter() - t0, out


def _once(fn) -> float:
  return seconds(fn)[0]


def record(bench, impl, case, seconds, compile_seconds=None, **extra):
  return {
      "bench": bench,
      "impl": impl,
      "case": case,
      "seconds": seconds,
      "compile_seconds": compile_seconds,
      "extra": extra,
  }


def write(path: str, records: list[dict], notes: list[str] | None = None):
  out = {"machine": machine(), "records": records, "notes": notes or []}
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(out, f, indent=1)
  print(f"wrote {path} ({len(records)} records)")
  return out
