"""Every benchmark in one command, at the device's sizes, peers on the same device.

    python benchmarks/suite.py [--size accel] [--only covariance train]
                               [--budget 420] [--out results/suite.json]

Runs each ``benchmarks/<topic>.py`` in this process with ``--size`` (default:
``accel`` on a GPU/TPU, ``cpu`` otherwise); the PyTorch peers run on the
GPU when JAX does (`_common.torch_device`). Each topic writes its own JSON
beside the suite's (``results/suite/<topic>.json``), and ``suite.json``
gathers them: the machine, per topic its status, wall seconds and records,
and a ``summary`` of every ``speedup_vs_*`` figure (peer seconds ÷ ours).

A topic that raises is recorded with its error and the suite goes on; once
``--budget`` seconds have passed, the topics left are recorded as skipped
(the order below puts the primitives first). The suite JSON is rewritten
after every topic, so a run stopped from outside keeps what it finished.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback

# Benchmark processes share one GPU between JAX and PyTorch: JAX must not
# take 75 % of it up front (set before JAX is imported; a script, not the library).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common as C  # noqa: E402

TOPICS = ("covariance", "train", "rainbow", "rainbow_depth", "similarity", "ensembles", "spectra", "svr",
          "streaming", "scattering", "resnet", "resnet_step", "accuracy", "vit")


ACCURACY_FLAG = 1e-3
"""A speed record whose result differs from its peer's by more than this
(``max_abs_diff_vs_*``) is flagged: a fast wrong answer is not a speed-up."""


def summary(records: list[dict]) -> list[dict]:
  """Every ``speedup_vs_<peer>`` figure of `records` (> 1 means we are
  faster), beside our run and compile seconds, with the record's worst ``max_abs_diff_vs_*`` and ``flagged``
  when that exceeds `ACCURACY_FLAG`."""
  out = []
  for r in records:
    diffs = [v for k, v in r["extra"].items() if k.startswith("max_abs_diff_vs_")
             and v is not None]
    worst = max(diffs) if diffs else None
    for key, value in r["extra"].items():
      if key.startswith("speedup_vs_") and value is not None:
        out.append({"bench": r["bench"], "case": r["case"], "impl": r["impl"],
                    "peer": key[len("speedup_vs_"):], "speedup": value,
                    "seconds": r["seconds"], "compile_seconds": r.get("compile_seconds"),
                    "max_abs_diff": worst,
                    "flagged": worst is not None and worst > ACCURACY_FLAG})
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description="rainbow_jax: all benchmarks in one run")
  p.add_argument("--size", choices=C.SIZES, default=None)
  p.add_argument("--only", nargs="+", choices=TOPICS, default=None)
  p.add_argument("--budget", type=float, default=420.0,
                 help="seconds after which the topics left are skipped")
  p.add_argument("--out", default="results/suite.json")
  args = p.parse_args(argv)
  size = C.parse_args(C.parser("suite"), [] if args.size is None
                      else ["--size", args.size]).size
  topics = args.only or TOPICS
  folder = os.path.join(os.path.dirname(args.out) or ".", "suite")
  os.makedirs(folder, exist_ok=True)
  result = {"size": size, "budget_seconds": args.budget, "topics": {}}
  start = time.perf_counter()
  for topic in topics:
    spent = time.perf_counter() - start
    entry = {"status": "skipped", "seconds": 0.0}
    if spent > args.budget:
      entry["reason"] = f"time budget spent ({spent:.0f} s > {args.budget:.0f} s)"
    else:
      path = os.path.join(folder, f"{topic}.json")
      print(f"== {topic} (--size {size}) at {spent:.0f} s", flush=True)
      t0 = time.perf_counter()
      try:
        importlib.import_module(topic).main(["--size", size, "--out", path])
        with open(path) as f:
          records = json.load(f)
        entry = {"status": "ok", "records": records["records"], "notes": records["notes"],
                 "summary": summary(records["records"])}
      except Exception as e:  # noqa: BLE001 — one topic's failure must not lose the rest
        traceback.print_exc()
        entry = {"status": "error", "error": f"{type(e).__name__}: {e}"}
      entry["seconds"] = time.perf_counter() - t0
      print(f"== {topic}: {entry['status']} in {entry['seconds']:.0f} s", flush=True)
    result["topics"][topic] = entry
    result["total_seconds"] = time.perf_counter() - start
    _write(args.out, result)
  for topic, entry in result["topics"].items():
    for s in entry.get("summary", []):
      case = s["case"] if not isinstance(s["case"], dict) else " ".join(
          f"{k}={v}" for k, v in s["case"].items() if k not in ("batch", "samples"))
      diff = "" if s["max_abs_diff"] is None else f"  max|Δ| {s['max_abs_diff']:.1e}"
      flag = f"  ** differs from {s['peer']} by more than {ACCURACY_FLAG:g}" if s["flagged"] \
          else ""
      run = "" if s["seconds"] is None else f"{s['seconds']:8.3f} s"
      comp = "" if s["compile_seconds"] is None else f" (compile {s['compile_seconds']:.1f} s)"
      print(f"{topic:11s} {s['bench']:12s} {case[:48]:48s} {run}{comp:18s}"
            f" ×{s['speedup']:6.2f} vs {s['peer']}{diff}{flag}")
  return 0 if all(e["status"] != "error" for e in result["topics"].values()) else 1


def _write(path: str, result: dict):
  out = {"machine": C.machine(), **result}
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    json.dump(out, f, indent=1)


if __name__ == "__main__":
  sys.exit(main())
