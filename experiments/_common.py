"""What the experiment scripts share: the dataset they read and how they
summarise a spread over seeds."""

from __future__ import annotations

import numpy as np

from rainbow_jax import data


def dataset(name: str = "auto") -> data.Dataset:
  """`data.load` of `name` (grayscale; CIFAR-10 normalised as the tutorial
  does); ``'auto'``: Fashion-MNIST when Debian's package is installed, else
  scikit-learn's digits."""
  if name == "auto":
    name = "fashion_mnist" if data.available("fashion_mnist") else "digits"
  return data.load(name, grayscale=True, normalize="tutorial" if name == "cifar10" else True)


def mean_sd(values) -> dict:
  """``{'mean', 'sd' (ddof 1; 0 for one value), 'values'}`` of `values`."""
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
          "values": v.tolist()}
