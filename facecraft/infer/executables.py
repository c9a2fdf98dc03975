"""Compiled detection functions kept on disk, loaded without tracing, lowering or compiling.

JAX's persistent compilation cache (facecraft.cache) saves the XLA compile, but its key is the
lowered program: every run still traces and lowers the pyramid cascade, 2-4 s per (bucket,
batch) on one CPU core (measured on the facecraft bundle's (512, 768) bucket: lower 3.7 s, cache
load 0.4 s). This store keys a compiled function by what determines it instead (the engine's
static description, the parameter shapes, the package's source, JAX's version, the backend and
this CPU), so a warm run deserialises it in ~0.4 s.

  store = ExecutableStore(path)                  # e.g. <compile cache>/facecraft_executables
  fn = store.load(key)                           # None when absent, stale or unreadable
  store.save(key, compiled)                      # atomic; a failure only logs
  compiled = compile_uncached(lambda: engine.compile(...))   # what may be saved

Only an executable XLA compiled in this process may be saved: one that JAX loaded from its
persistent compilation cache serialises without its object code on CPU (measured: the entry
loads, then its first run fails with "Function broadcast_add_fusion not found"), so what is
meant for the store is compiled with that cache off.

A key misses rather than lies: anything that could change the machine code is in it, and any
error while loading counts as a miss (the caller compiles). Entries are a few MB each.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import platform
import tempfile
from typing import Any

import jax

log = logging.getLogger(__name__)

FORMAT = 1


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
  """A hash of the facecraft package's Python source: any code change gives new keys."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  h = hashlib.sha256()
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
          h.update(f.read())
  return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _machine() -> str:
  """Backend, devices and (on CPU) the processor's model and feature flags: XLA's CPU code is
  built for this host's instruction set, so another CPU must not load it."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  parts = [jax.__version__, jaxlib.__version__,
           jax.default_backend(), str(jax.device_count()),
           ",".join(sorted({d.device_kind for d in jax.devices()})),
           platform.machine(), os.environ.get("XLA_FLAGS", ""),
           str(jax.config.jax_enable_x64)]
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
      lines = [l for l in f if l.startswith(("model name", "flags"))]
    parts.append(hashlib.sha256("".join(sorted(set(lines))).encode()).hexdigest())
  except OSError:
    parts.append(platform.processor())
  return "|".join(parts)


def make_key(static: str, params: Any) -> str:
  """A file-safe key of an engine's static description and its params' shapes and dtypes."""
  shapes = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), params)
  text = "\n".join([f"format {FORMAT}", static, repr(jax.tree.structure(params)),
                    repr(jax.tree.leaves(shapes)), _source_digest(), _machine()])
  return hashlib.sha256(text.encode()).hexdigest()[:40]


def compile_uncached(compile_fn):
  """compile_fn() with JAX's persistent compilation cache turned off for its duration."""
  previous = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    return compile_fn()
  finally:
    jax.config.update("jax_enable_compilation_cache", previous)


class ExecutableStore:
  """A folder of serialised compiled functions (jax.experimental.serialize_executable)."""

  def __init__(self, path: str):
    self.path = os.path.expanduser(path)
    self.loads = 0
    self.saves = 0

  def _file(self, key: str) -> str:
    return os.path.join(self.path, f"{key}.exe")

  def load(self, key: str):
    """The compiled function stored under key, or None (absent, or unreadable: removed)."""
    path = self._file(key)
    if not os.path.exists(path):
      return None
    from jax.experimental import serialize_executable  # pylint: disable=g-import-not-at-top
    try:
      with open(path, "rb") as f:
        payload, in_tree, out_tree = pickle.load(f)
      fn = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception as e:  # pylint: disable=broad-except
      # A truncated or foreign file costs a compile, never a wrong result or a crash.
      log.warning("executable store: %s unreadable (%s: %s); compiling instead", path,
                  type(e).__name__, e)
      try:
        os.remove(path)
      except OSError:
        pass
      return None
    self.loads += 1
    return fn

  def save(self, key: str, compiled) -> bool:
    """Stores a compiled function (atomically); False, with a warning, when it cannot."""
    from jax.experimental import serialize_executable  # pylint: disable=g-import-not-at-top
    try:
      blob = pickle.dumps(serialize_executable.serialize(compiled))
      os.makedirs(self.path, exist_ok=True)
      fd, tmp = tempfile.mkstemp(dir=self.path, suffix=".tmp")
      with os.fdopen(fd, "wb") as f:
        f.write(blob)
      os.replace(tmp, self._file(key))
    except Exception as e:  # pylint: disable=broad-except
      log.warning("executable store: could not save to %s (%s: %s)", self.path,
                  type(e).__name__, e)
      return False
    self.saves += 1
    return True
