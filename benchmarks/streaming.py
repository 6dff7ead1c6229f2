"""Memory of one statistics pass as the dataset grows: streamed from an
ArrayRecord file (`rainbow_jax.streaming`) vs the whole dataset in memory.

    python benchmarks/streaming.py [--size quick|cpu|accel] [--out results/streaming.json]

Fashion-MNIST's 70 000 images (digits where it is not installed), repeated
R times, are written as one ArrayRecord file per R. Each pass runs in a
fresh process and accumulates the 784 × 784 pixel covariance:

* ``stream_R`` — `streaming.batches` (1 024 per batch, read ahead in a
  thread, placed on device ahead of use) into `moments.accumulate`;
* ``in_memory_R`` — the images loaded whole from the same file as one
  float32 array, then `moments.accumulate` over slices of it.

Recorded: the process's peak resident memory (VmHWM), its time, and images
per second. The figure ``<out>.png`` plots peak memory against the
number of images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common as C
import numpy as np


def _images():
  """uint8 images and labels: Fashion-MNIST's 70 000 where installed, else digits."""
  from rainbow_jax import data
  name = "fashion_mnist" if data.available("fashion_mnist") else "digits"
  ds = data.load(name, normalize=False)  # pixels / 255, exactly
  x = np.round(np.concatenate([ds.x_train, ds.x_test]) * 255).astype(np.uint8)
  return name, x, np.concatenate([ds.y_train, ds.y_test])


def _pass(mode: str, path: str, batch: int) -> dict:
  """One pass in this (fresh) process; prints its JSON result."""
  import jax

  from rainbow_jax import moments, streaming
  flat = lambda b: b.reshape(b.shape[0], -1)
  src = streaming.ArrayRecordSource(path)
  t0 = time.perf_counter()
  if mode == "stream":
    state = moments.accumulate(streaming.batches(src, batch, labels=False), flat)
  else:
    x, _ = src.read(np.arange(len(src)))
    x = x.astype(np.float32) / 255
    state = moments.accumulate((x[i:i + batch] for i in range(0, len(x), batch)), flat)
  cov = jax.block_until_ready(moments.covariance(state, 0, 0, centered=True))
  sec = time.perf_counter() - t0
  return {"seconds": sec, "images": int(state.count[0]), "trace": float(np.trace(cov)),
          "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
  """This process's peak resident memory. VmHWM belongs to the current
  address space; ``ru_maxrss`` would also count the parent's RSS at fork
  (it is kept across exec)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
  if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--pass":
    print(json.dumps(_pass(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    return None
  p = C.parser("streaming")
  a = C.parse_args(p, argv)
  name, x, y = _images()
  repeats = {"quick": (1, 2), "cpu": (1, 2, 4, 8), "accel": (1, 2, 4, 8)}[a.size]
  if a.quick:
    x, y = x[:4000], y[:4000]
  batch = 1024
  records, rows = [], []
  with tempfile.TemporaryDirectory() as tmp:
    from rainbow_jax import streaming
    for r in repeats:
      path = os.path.join(tmp, f"r{r}.array_record")
      t0 = time.perf_counter()
      streaming.write_array_record(path, np.concatenate([x] * r), np.concatenate([y] * r),
                                   chunk=8192)
      write_s = time.perf_counter() - t0
      for mode in ("stream", "in_memory"):
        out = subprocess.run([sys.executable, __file__, "--pass", mode, path, str(batch)],
                             capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((mode, res["images"], res["peak_rss_mb"]))
        records.append(C.record("streaming", mode, f"{mode}_R{r}", res["seconds"], None,
                                dataset=name, images=res["images"],
                                peak_rss_mb=res["peak_rss_mb"],
                                images_per_second=res["images"] / res["seconds"],
                                file_mb=os.path.getsize(path) / 2 ** 20,
                                write_seconds=write_s, covariance_trace=res["trace"]))
        print(f"{mode:9s} {res['images']:8d} images: peak RSS {res['peak_rss_mb']:7.0f} MB,"
              f" {res['seconds']:6.2f} s", flush=True)
  C.write(a.out, records, [f"{name}, batch {batch}; peak RSS of a fresh process per pass."])
  if not a.quick:
    _figure(rows, os.path.splitext(a.out)[0] + ".png", name)
  return records


def _figure(rows, path, name):
  from rainbow_jax import plots
  plt = plots._plt()
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for mode, label in (("stream", "streamed (ArrayRecord)"), ("in_memory", "whole array in memory")):
    pts = sorted((n, m) for md, n, m in rows if md == mode)
    ax.plot([n for n, _ in pts], [m for _, m in pts], "o-", label=label)
  ax.set_xlabel(f"{name} images (repeated)")
  ax.set_ylabel("peak resident memory (MB)")
  ax.set_title("one covariance pass (784 × 784)")
  ax.legend()
  ax.set_ylim(bottom=0)
  plots.save(fig, path)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
