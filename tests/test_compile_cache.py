"""The command line's persistent compilation cache: a second run of a
command compiles nothing (every program is loaded from the cache), counted
with JAX's own monitoring events in fresh processes."""

import os
import subprocess
import sys

from rainbow_jax import commands

_COUNT = """
import sys
from jax import monitoring
counts = {"miss": 0, "hit": 0}
def listen(name, **kw):
  if name == "/jax/compilation_cache/cache_misses": counts["miss"] += 1
  if name == "/jax/compilation_cache/cache_hits": counts["hit"] += 1
monitoring.register_event_listener(listen)
from rainbow_jax.commands import main
rc = main(sys.argv[1:])
print("COUNTS", counts["miss"], counts["hit"], rc)
"""


def _run(env, out):
  res = subprocess.run([sys.executable, "-c", _COUNT, "spectra", "--dataset", "digits",
                        "--epochs", "0", "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=600)
  line = [l for l in res.stdout.splitlines() if l.startswith("COUNTS")]
  assert res.returncode == 0 and line, res.stdout[-2000:] + res.stderr[-2000:]
  miss, hit, rc = map(int, line[0].split()[1:])
  assert rc == 0
  return miss, hit


def test_a_second_run_compiles_nothing(tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT_CACHE")
         and k != "JAX_COMPILATION_CACHE_DIR"}  # the suite's own cache stays out
  env[commands.CACHE_ENV] = str(tmp_path / "cache")
  miss1, hit1 = _run(env, tmp_path / "a")
  assert miss1 >= 10 and hit1 == 0, (miss1, hit1)  # the first run compiles every program
  assert len(os.listdir(tmp_path / "cache")) >= miss1 // 2
  miss2, hit2 = _run(env, tmp_path / "b")
  assert miss2 == 0 and hit2 == miss1, (miss2, hit2)


def test_the_cache_can_be_turned_off(monkeypatch):
  assert commands.compile_cache(disabled=True) is None
  for off in ("0", "off", "false"):
    monkeypatch.setenv(commands.CACHE_ENV, off)
    assert commands.compile_cache() is None
  assert "--no-compile-cache" in commands.build_parser().format_help()
