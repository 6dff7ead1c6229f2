"""What the commands share: the dataset and the networks they read (trained
here or a user's model from checkpoints), their common arguments, and the
environment every results.json records."""

from __future__ import annotations

import argparse
import json
import importlib.util
import os
import platform
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rainbow_jax import network

ARCHS = ("mlp", "cnn", "resnet20", "scattering", "vit")
"""Architectures the commands train (`rainbow_jax.models.make`)."""

DEFAULTS = argparse.ArgumentDefaultsHelpFormatter  # --help shows every default


_COMPILED = {"seconds": 0.0, "listening": False}
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


def _count_compile(event: str, duration: float, **_) -> None:
  if event == _BACKEND_COMPILE:
    _COMPILED["seconds"] += duration


def compile_seconds() -> float:
  """Seconds XLA has spent compiling programs in this process since the
  first call (JAX's backend-compile events; a program loaded from the
  persistent cache costs none). Differences give a stage's compile time."""
  if not _COMPILED["listening"]:
    jax.monitoring.register_event_duration_secs_listener(_count_compile)
    _COMPILED["listening"] = True
  return _COMPILED["seconds"]


def version() -> str:
  """The installed rainbow_jax's version (``"unknown"`` from a bare checkout)."""
  from importlib import metadata
  try:
    return metadata.version("rainbow_jax")
  except metadata.PackageNotFoundError:
    return "unknown"


def environment() -> dict:
  """What every results.json records: versions and the device."""
  return {"versions": {"python": platform.python_version(), "jax": jax.__version__,
                       "rainbow_jax": version()},
          "device": str(jax.devices()[0])}


def save_results(out_dir: str, results: dict, md: list[str] | None = None) -> str:
  """Writes `results` as ``out_dir/results.json`` (the record every command
  leaves; `environment` says where it ran) and, given its lines, the
  report ``out_dir/report.md``; returns the path of results.json."""
  path = os.path.join(out_dir, "results.json")
  with open(path, "w") as f:
    json.dump(results, f, indent=1)
  if md is not None:
    with open(os.path.join(out_dir, "report.md"), "w") as f:
      f.write("\n".join(md) + "\n")
  return path


def batches(x, size: int):
  """Consecutive slices of ``size`` rows (the last may be shorter)."""
  for i in range(0, len(x), size):
    yield x[i:i + size]


class Networks(NamedTuple):
  """What `rainbow_jax.commands.analyze.run` analyses.

  Attributes:
    net: the `rainbow_jax.network.Network`.
    variables: one variables pytree per network (seed), seed 0 the reference.
    labels: a label per network (``'seed 0'``, a checkpoint path…).
    init_variables: variables of the same model at initialisation (the
      noise level of the weight spectra), or None.
    init_law: the initialiser for `spectra.layer_law` (``'torch'``,
      ``'flax'``, a variance or a JAX initialiser).
    arch: a short name of the architecture.
    description: one sentence on where the networks come from.
    history: a `rainbow_jax.train.History` when trained here, else None.
  """

  net: Any
  variables: list
  labels: list
  init_variables: Any
  init_law: Any
  arch: str
  description: str
  history: Any = None


# --------------------------------------------------------------------------
# A user's model and checkpoints.


def load_factory(spec: str) -> Callable[[], Any]:
  """``'path/to/file.py:FACTORY'`` → the callable ``FACTORY`` (a function
  returning a linen module, or a module class with default arguments)."""
  path, sep, name = spec.rpartition(":")
  if not sep or not path.endswith(".py") or not name:
    raise ValueError(f"--model must be FILE.py:FACTORY, got {spec!r}.")
  if not os.path.isfile(path):
    raise ValueError(f"--model: no file {path}.")
  mod_spec = importlib.util.spec_from_file_location(
      f"_rainbow_user_{abs(hash(os.path.abspath(path)))}", path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  if not hasattr(mod, name):
    raise ValueError(f"--model: {path} defines no {name!r}.")
  return getattr(mod, name)


def load_variables(path: str) -> dict:
  """Variables ``{'params': …[, 'batch_stats': …]}`` from an orbax checkpoint
  directory (as `rainbow-jax train --checkpoint-dir` writes, or any orbax
  pytree checkpoint) or a Flax ``.msgpack`` file. A tree without a
  ``params`` key is taken as the params themselves."""
  from flax import serialization
  if os.path.isdir(path):
    from rainbow_jax import checkpoint
    try:
      raw, _ = checkpoint.restore_raw(path)
    except FileNotFoundError:
      import orbax.checkpoint as ocp
      raw = ocp.StandardCheckpointer().restore(os.path.abspath(path))
  elif os.path.isfile(path):
    with open(path, "rb") as f:
      raw = serialization.msgpack_restore(f.read())
  else:
    raise ValueError(f"--checkpoint: no file or directory {path}.")
  if isinstance(raw, dict) and "params" in raw:
    out = {"params": raw["params"]}
    if raw.get("batch_stats"):
      out["batch_stats"] = raw["batch_stats"]
    return out
  return {"params": raw}


def split_seeds(variables: dict, template: Any, name: str) -> list[dict]:
  """One variables tree per seed: `variables` as `template` (one network) or
  with a leading ``[K]`` seed axis on every leaf (K networks)."""
  from flax import traverse_util
  want = traverse_util.flatten_dict({k: template[k] for k in variables if k in template},
                                    sep="/")
  have = traverse_util.flatten_dict(dict(variables), sep="/")
  if set(want) != set(have):
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    raise ValueError(f"{name} does not fit the model: missing {missing[:5]}, unexpected"
                     f" {extra[:5]}.")
  leading = set()
  for k, t in want.items():
    shape = np.shape(have[k])
    if shape == tuple(t.shape):
      leading.add(None)
    elif shape[1:] == tuple(t.shape):
      leading.add(shape[0])
    else:
      raise ValueError(f"{name}: {k} has shape {shape}, the model's is {tuple(t.shape)}.")
  if len(leading) != 1:
    raise ValueError(f"{name}: some arrays have a seed axis and some not.")
  k = leading.pop()
  tree = jax.tree_util.tree_map(jnp.asarray, dict(variables))
  if k is None:
    return [tree]
  return [jax.tree_util.tree_map(lambda a, i=i: a[i], tree) for i in range(k)]


def user_networks(spec: str, checkpoints: Sequence[str], x: Any, *, init: Any = "flax",
                  seed: int = 0) -> Networks:
  """A user's linen model (`load_factory`) and its trained seeds (one or
  several checkpoints, each of one network or K stacked seeds)."""
  module = load_factory(spec)()
  if not hasattr(module, "init") or not hasattr(module, "apply"):
    raise ValueError(f"--model {spec} must return a flax.linen Module, got"
                     f" {type(module).__name__} (NNX models: use rainbow_jax.network.from_nnx"
                     " from Python).")
  if not checkpoints:
    raise ValueError("--model needs at least one --checkpoint.")
  x = jnp.asarray(x)
  template = jax.eval_shape(module.init, jax.random.key(0), x[:1])
  variables, labels = [], []
  # Figures label a checkpoint by its file name (the description keeps the
  # paths), unless two share one.
  names = [os.path.basename(os.path.normpath(p)) for p in checkpoints]
  names = names if len(set(names)) == len(names) else list(checkpoints)
  for path, name in zip(checkpoints, names):
    seeds = split_seeds(load_variables(path), template, path)
    variables += seeds
    labels += [name] if len(seeds) == 1 else [f"{name}[{i}]" for i in range(len(seeds))]
  net = network.from_linen(module, variables[0], x[:2])
  init_vars = jax.jit(module.init)(jax.random.key(seed), x[:1])
  return Networks(net, variables, labels, init_vars, init,
                  type(module).__name__,
                  f"{len(variables)} network(s) of {type(module).__name__} from {spec}, read"
                  f" from {', '.join(checkpoints)}")


def pick_dataset(name: str) -> str:
  from rainbow_jax import data
  if name != "auto":
    return name
  return "fashion_mnist" if data.available("fashion_mnist") else "digits"


def load_data(name: str, data_dir: str | None):
  """Grayscale images; CIFAR-10 with the tutorial's normalisation, the rest
  standardised with train statistics."""
  from rainbow_jax import data
  return data.load(name, data_dir=data_dir, grayscale=True,
                   normalize="tutorial" if name == "cifar10" else True)


OPTIMIZERS = ("sgd", "adam", "adamw")


def optimizer_args(c) -> None:
  """--optimizer, --lr, --momentum, --weight-decay of a command that trains."""
  c.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                 help="default: adamw for --arch vit (warm-up over the first tenth of the"
                      " steps, cosine decay), else sgd")
  c.add_argument("--lr", type=float, default=None,
                 help="default: 0.01 for sgd, 0.001 for adam and adamw")
  c.add_argument("--momentum", type=float, default=0.9)
  c.add_argument("--weight-decay", type=float, default=0.05, help="adamw's")


def optimizer(args, num_examples: int, batch_size: int = 128):
  """The optimiser of --optimizer for `args.epochs` epochs over
  `num_examples`, and a line describing it: the tutorial's SGD, Adam, or
  AdamW with warm-up and cosine decay (the default for the ViT)."""
  import optax

  from rainbow_jax import train
  name = args.optimizer or ("adamw" if getattr(args, "arch", None) == "vit" else "sgd")
  lr = args.lr if args.lr is not None else (0.01 if name == "sgd" else 1e-3)
  if name == "sgd":
    return train.sgd(lr, args.momentum), f"SGD (lr {lr}, momentum {args.momentum})"
  if name == "adam":
    return optax.adam(lr), f"Adam (lr {lr})"
  steps = max(1, args.epochs) * -(-num_examples // batch_size)
  return (train.adamw(lr, weight_decay=args.weight_decay, warmup_steps=steps // 10,
                      total_steps=steps),
          f"AdamW (lr {lr}, weight decay {args.weight_decay}, warm-up {steps // 10} steps,"
          " cosine decay)")


def init_law(args):
  """--init of a user's model for the Marchenko–Pastur law: 'flax' (default),
  'torch' or a variance."""
  init = getattr(args, "init", None) or "flax"  # commands without --init: flax
  try:
    return float(init)
  except ValueError:
    if init not in ("flax", "torch"):
      raise ValueError(f"--init must be flax, torch or a variance, got {init!r}.") from None
  return init


class Loaded(NamedTuple):
  """The networks a report reads (`networks`)."""

  dataset: str
  data: Any
  net: Any
  variables: list
  labels: list
  what: str
  law: Any  # the initialiser for `spectra.layer_law`


def networks(args, seeds: int = 1) -> Loaded:
  """The networks of --model/--checkpoint (every network the checkpoints
  hold), or `seeds` seeds of --arch trained here from --seed."""

  from rainbow_jax import models, train

  name = pick_dataset(args.dataset)
  ds = load_data(name, args.data_dir)
  x = ds.x_train
  if args.model:
    law = init_law(args)
    nets = user_networks(args.model, args.checkpoint, x[:2], init=law, seed=args.seed)
    return Loaded(name, ds, nets.net, nets.variables, nets.labels, nets.description, law)
  if args.checkpoint:
    raise ValueError("--checkpoint needs --model FILE.py:FACTORY.")
  model = models.make(args.arch, x.shape[1:], ds.num_classes, widths=args.widths)
  ids = list(range(args.seed, args.seed + seeds))
  state, hist = train.fit(model, x, ds.y_train, ds.x_test, ds.y_test, seeds=ids,
                          epochs=args.epochs)
  variables = [train.select(state.variables, i) for i in range(len(ids))]
  law = arch_law(args.arch)
  acc = (", test accuracy " + " / ".join(f"{a:.2f}" for a in hist.test_accuracy[-1]) + " %"
         if args.epochs else "")
  what = (f"{args.arch.upper()} seed{'s' if seeds > 1 else ''}"
          f" {', '.join(map(str, ids))} trained {args.epochs} epoch(s) on {name}{acc}")
  return Loaded(name, ds, network.from_linen(model, variables[0], x[:2]), variables,
                 [f"seed {i}" for i in ids], what, law)


def arch_law(arch: str):
  """The initialiser of a built-in architecture (`spectra.layer_law`'s
  `init`): He for the ResNet, Flax's for the ViT, PyTorch's otherwise."""
  from flax import linen as nn
  return {"resnet20": nn.initializers.he_normal(), "vit": "flax"}.get(arch, "torch")


def network_arguments(sub, name: str, *, help: str, dataset_help: str, checkpoint_help: str,
                       epochs: int = 5, init: bool = False):
  """A subcommand reading --model/--checkpoint or training --arch first."""
  c = sub.add_parser(name, help=help, formatter_class=DEFAULTS)
  c.add_argument("--dataset", default="auto", help=dataset_help)
  c.add_argument("--data-dir", default=None)
  c.add_argument("--model", default=None, metavar="FILE.py:FACTORY",
                 help="your own linen model; its networks come from --checkpoint")
  c.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                 help=checkpoint_help)
  if init:
    c.add_argument("--init", default=None,
                   help="--model's initialiser for the Marchenko–Pastur law: flax (default) |"
                        " torch | a variance")
  c.add_argument("--arch", default="mlp", choices=ARCHS,
                 help="without --model: train this architecture here first")
  c.add_argument("--widths", type=int, nargs="+", default=None)
  c.add_argument("--epochs", type=int, default=epochs)
  c.add_argument("--seed", type=int, default=0, help="first seed")
  c.add_argument("--out", default=f"reports/{name}")
  return c
