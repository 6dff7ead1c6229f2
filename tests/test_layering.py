"""The package's architecture, checked on the source (AST of every module):
imports flow one way — data and models → network → statistics → analyses →
reports and commands — and no module reaches into another package's
private names.

A subpackage (``rainbow_jax/similarity/``) owns its private modules and
names; a top-level module owns its own. Private top-level modules
(``rainbow_jax/_*.py``: checks, precision, shared linear algebra) are the
floor every module may import.
"""

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "rainbow_jax"
MODULES = {
    ".".join(("rainbow_jax", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(
        ".__init__"): p
    for p in sorted(ROOT.rglob("*.py"))
}
# The commands (and their reports) and the figures sit on top: nothing below
# imports them.
TOP = {n for n in MODULES if n.startswith("rainbow_jax.commands")} | {"rainbow_jax.plots"}


def _package(name):
  """The unit that owns private names: a subpackage (with its modules), or
  a top-level module."""
  parts = name.split(".")
  return ".".join(parts[:2])


def _floor(name):
  """Private top-level modules (``rainbow_jax._checks`` …): every module may
  import them (but not their underscore names)."""
  return name.count(".") == 1 and name.split(".")[1].startswith("_")


def _imports(path, name):
  """(imported rainbow_jax modules, {local alias: module}, private names
  reached by import) of one file, at any depth (lazy imports count)."""
  tree = ast.parse(path.read_text())
  mods, alias, private = set(), {}, []
  own = _package(name)
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rainbow_jax"):
      for a in node.names:
        full = f"{node.module}.{a.name}"
        target = full if full in MODULES else node.module
        mods.add(target)
        if full in MODULES:
          alias[a.asname or a.name] = full
        elif a.name.startswith("_") and _package(target) != own:
          private.append(full)  # a private name (modules are checked below)
    elif isinstance(node, ast.Import):
      for a in node.names:
        if a.name.startswith("rainbow_jax"):
          mods.add(a.name)
          alias[a.asname or a.name] = a.name
  for m in mods:  # a private module of another package, however imported
    last = m.rsplit(".", 1)[-1]
    if _package(m) != own and last.startswith("_") and not _floor(m):
      private.append(m)
  return tree, mods, alias, private


def _is_private_module(name):
  return any(p.startswith("_") for p in name.split(".")[1:])


def test_the_walk_sees_the_package():
  assert {"rainbow_jax.similarity", "rainbow_jax.network", "rainbow_jax.commands",
          "rainbow_jax.compat.svcca", "rainbow_jax.similarity._cca"} <= set(MODULES)
  name = "rainbow_jax.commands.train"
  _, mods, _, _ = _imports(MODULES[name], name)
  assert "rainbow_jax.train" in mods  # the walk finds imports inside functions too


@pytest.mark.parametrize("name", sorted(set(MODULES) - TOP - {"rainbow_jax"}))
def test_statistics_and_analyses_never_import_commands_or_figures(name):
  _, mods, _, _ = _imports(MODULES[name], name)
  assert not mods & TOP, f"{name} imports {sorted(mods & TOP)}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_uses_another_packages_private_names(name):
  tree, _, alias, private = _imports(MODULES[name], name)
  used = [f"{alias[n.value.id]}.{n.attr}" for n in ast.walk(tree)
          if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
          and n.value.id in alias and _package(alias[n.value.id]) != _package(name)
          and n.attr.startswith("_") and not n.attr.startswith("__")]
  assert not used + private, f"{name} reaches into {sorted(set(used + private))}"


def test_module_level_imports_have_no_cycle():
  graph = {}
  for name, path in MODULES.items():
    tree = ast.parse(path.read_text())
    deps = set()
    for node in tree.body:  # module level only: lazy imports may point anywhere below
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rainbow_jax"):
        subs = {f"{node.module}.{a.name}" for a in node.names
                if f"{node.module}.{a.name}" in MODULES}
        deps |= subs if len(subs) == len(node.names) else subs | {node.module}
      elif isinstance(node, ast.Import):
        deps |= {a.name for a in node.names if a.name.startswith("rainbow_jax")}
    graph[name] = {d for d in deps if d in MODULES and d != name and d != "rainbow_jax"}
  state = {}

  def visit(n, stack):
    state[n] = 1
    for d in graph[n]:
      assert state.get(d) != 1, f"import cycle: {' → '.join(stack + [n, d])}"
      if d not in state:
        visit(d, stack + [n])
    state[n] = 2

  for n in graph:
    if n not in state:
      visit(n, [])


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not _is_private_module(n)))
def test_every_public_module_says_what_it_exports(name):
  mod = importlib.import_module(name)
  assert hasattr(mod, "__all__"), f"{name} has no __all__"
  missing = [n for n in mod.__all__ if not hasattr(mod, n)]
  assert not missing, f"{name}.__all__ names what it lacks: {missing}"


def test_the_top_level_package_reaches_every_public_module():
  import rainbow_jax
  lazy = {"rainbow_jax.checkpoint", "rainbow_jax.plots"}  # orbax / matplotlib on demand
  top = {n for n in MODULES if n.count(".") == 1 and not _is_private_module(n)}
  missing = sorted(n.split(".")[1] for n in top - TOP - lazy
                   if n.split(".")[1] not in rainbow_jax.__all__)
  assert not missing, f"rainbow_jax.__all__ lacks {missing}"
