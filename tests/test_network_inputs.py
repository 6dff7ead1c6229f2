"""A batch or variables that do not fit the model a `Network` was built
from: every function that runs the model raises a ValueError naming the
expected and the given shapes (or the arrays), never Flax's initialiser
error or a concatenation TypeError."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rainbow_jax import evaluate, moments, network, rainbow


class CNN(nn.Module):
  """A user's linen CNN: default names, BatchNorm, biases."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Conv(8, (3, 3))(x)))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(16, (3, 3))(x))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


class NNXNet(nnx.Module):

  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.fc = nnx.Linear(28 * 28 * 4, 10, rngs=rngs)

  def __call__(self, x):
    h = nnx.relu(self.conv(x))
    return self.fc(h.reshape(h.shape[0], -1))


def _linen():
  x = jnp.zeros((4, 28, 28, 1))
  model = CNN()
  variables = model.init(jax.random.key(0), x)
  other = CNN().init(jax.random.key(1), jnp.zeros((4, 32, 32, 1)))  # another input size
  return network.from_linen(model, variables, x), variables, other


def _nnx():
  x = jnp.zeros((4, 28, 28, 1))
  net = network.from_nnx(NNXNet(nnx.Rngs(0)), x)
  other = network.nnx_variables(NNXNet(nnx.Rngs(1)))
  other["fc"]["kernel"] = other["fc"]["kernel"][:100]  # a model of another width
  return net, network.nnx_variables(NNXNet(nnx.Rngs(0))), other


_KEY = jax.random.key(0)
_CALLS = {
    "apply": lambda net, v, x: net.apply(v, x),
    "layer_inputs": lambda net, v, x: net.layer_inputs(v, x),
    "producers": lambda net, v, x: net.producers(v, x),
    "estimate_batch_stats": lambda net, v, x: net.estimate_batch_stats(v, x),
    "evaluate.accuracy": lambda net, v, x: evaluate.accuracy(
        net, v, x, jnp.zeros((len(x),), jnp.int32), batch_size=4),
    "evaluate.representations": lambda net, v, x: evaluate.representations(net, v, x),
    "moments.layer_moments": lambda net, v, x: moments.layer_moments(net, v, [x]),
    "rainbow.generate": lambda net, v, x: rainbow.generate(
        _KEY, net, v, x, progress=False),
}
_BATCHES = {  # what users pass by mistake for a [N, 28, 28, 1] model
    "flat [N, 784]": np.zeros((8, 784), np.float32),
    "no channel [N, 28, 28]": np.zeros((8, 28, 28), np.float32),
    "NCHW [N, 1, 28, 28]": np.zeros((8, 1, 28, 28), np.float32),
}


@pytest.mark.parametrize("kind", ["linen", "nnx"])
@pytest.mark.parametrize("call", list(_CALLS))
def test_a_batch_of_another_shape_is_named(call, kind):
  net, variables, _ = (_linen if kind == "linen" else _nnx)()
  for name, x in _BATCHES.items():
    if kind == "nnx" and name != "NCHW [N, 1, 28, 28]":
      continue  # one batch suffices for the second adapter
    with pytest.raises(ValueError) as err:
      _CALLS[call](net, variables, x)
    msg = str(err.value)
    assert str(x.shape) in msg and "[N, 28, 28, 1]" in msg, (name, msg)


@pytest.mark.parametrize("kind", ["linen", "nnx"])
@pytest.mark.parametrize("call", list(_CALLS))
def test_variables_of_another_model_are_named(call, kind):
  net, _, other = (_linen if kind == "linen" else _nnx)()
  x = np.zeros((8, 28, 28, 1), np.float32)
  with pytest.raises(ValueError) as err:
    _CALLS[call](net, other, x)
  msg = str(err.value)
  assert msg.startswith("variables:"), msg
  # The array that differs, with both shapes.
  want = "Dense_1/kernel has shape (4096, 32), expected (3136, 32)" if kind == "linen" \
      else "fc/kernel has shape (100, 10), expected (3136, 10)"
  assert want in msg, msg


def test_the_right_inputs_still_run_under_jit_and_vmap():
  net, variables, _ = _linen()
  x = jnp.ones((8, 28, 28, 1))
  out = jax.jit(net.apply)(variables, x)
  stacked = jax.tree.map(lambda a: jnp.stack([a, a]), variables)
  both = jax.vmap(net.apply, in_axes=(0, None))(stacked, x)
  np.testing.assert_allclose(np.asarray(both[0]), np.asarray(out), rtol=1e-5, atol=1e-6)


def test_accuracy_names_one_hot_labels():
  net, variables, _ = _linen()
  x = np.zeros((8, 28, 28, 1), np.float32)
  with pytest.raises(ValueError, match=r"y: .*\(8, 10\).*class indices"):
    evaluate.accuracy(net, variables, x, np.eye(10, dtype=np.int32)[np.arange(8) % 10])
  with pytest.raises(ValueError, match=r"\(6,\) for 8 inputs"):
    evaluate.accuracy(net, variables, x, np.zeros(6, np.int32))
