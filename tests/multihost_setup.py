"""The K-seed training problem shared by tests/test_multihost.py and its
worker processes: an MLP on scikit-learn's digits, 4 seeds, 2 epochs."""

import numpy as np


def digits_mlp():
  from sklearn.datasets import load_digits

  from rainbow_jax import models
  d = load_digits()
  x = (d.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
  y = d.target.astype(np.int32)
  model = models.make("mlp", x.shape[1:], 10, widths=[32])
  return model, (x[:1500], y[:1500], x[1500:], y[1500:]), (0, 1, 2, 3), 2
