"""Where FaceCraft keeps what is worth keeping between runs (outside any run folder).

  cache_root()          $FACECRAFT_CACHE, else $XDG_CACHE_HOME/facecraft, else ~/.cache/facecraft
  compile_cache_dir()   JAX's persistent compilation cache: $FACECRAFT_COMPILE_CACHE, else
                        cache_root()/jax ("off" disables it)
  executable_dir(d)     compiled detection functions stored whole (facecraft.infer.executables),
                        in d/facecraft_executables beside JAX's own entries
  crop_cache_dir()      training crop pools, keyed by their data settings: cache_root()/crops

A compile of the pyramid cascade costs ~10 s per (bucket, batch) on CPU; with the persistent
cache a second run, or a run after `facecraft warmup`, loads it instead.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

OFF = ("off", "none", "0", "")


def cache_root() -> str:
  root = os.environ.get("FACECRAFT_CACHE")
  if root:
    return os.path.expanduser(root)
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "facecraft")


def compile_cache_dir(flag: str | None = None) -> str | None:
  """flag (e.g. --compile-cache), else $FACECRAFT_COMPILE_CACHE, else cache_root()/jax; None = off."""
  value = flag if flag is not None else os.environ.get("FACECRAFT_COMPILE_CACHE")
  if value is None:
    return os.path.join(cache_root(), "jax")
  return None if value.strip().lower() in OFF else os.path.expanduser(value)


def executable_dir(compile_dir: str | None) -> str | None:
  """Where `facecraft detect` keeps whole compiled functions: inside the compilation cache (a
  subfolder: JAX's cache only manages its own *-cache files), off when that cache is off."""
  return None if compile_dir is None else os.path.join(compile_dir, "facecraft_executables")


def crop_cache_dir() -> str:
  return os.path.join(cache_root(), "crops")


_HITS = {"count": 0, "listening": False}


def _on_event(event: str, **_) -> None:
  if event == "/jax/compilation_cache/cache_hits":
    _HITS["count"] += 1


def cache_hits() -> int:
  """Compiles answered by the persistent cache in this process (since the cache was enabled)."""
  return _HITS["count"]


def enable_compile_cache(path: str | None) -> str | None:
  """Turns JAX's persistent compilation cache on at `path` (None: leaves it off); the path used.

  Every compile of a second or more is stored (ours take seconds; tiny ones are not worth a file).
  """
  if path is None:
    return None
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  os.makedirs(path, exist_ok=True)
  if jax.config.jax_compilation_cache_dir not in (None, path):
    compilation_cache.reset_cache()  # JAX opens its cache once: a new folder needs a reset.
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  if not _HITS["listening"]:  # Counted, so that a run can say how many compiles were loads.
    jax.monitoring.register_event_listener(_on_event)
    _HITS["listening"] = True
  log.info("persistent compilation cache: %s", path)
  return path
