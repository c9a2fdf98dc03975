"""facecraft.infer.executables: compiled cascades stored whole and loaded without a compile."""

from __future__ import annotations

import os

import pathlib

import numpy as np
from PIL import Image
import pytest

from facecraft.infer import Detector
from facecraft.infer import executables
from facecraft.infer import pyramid

SAMPLE = pathlib.Path(__file__).parents[1] / "facecraft" / "assets" / "astronaut.jpg"
IMAGE = np.asarray(Image.open(SAMPLE).convert("RGB").resize((160, 160)))


def _detector(store, **options):
  options = {"thresholds": (0.3, 0.3, 0.3), **options}
  return Detector.from_pretrained("mtcnn", align="none", executables=store, **options)


def _same(a, b):
  np.testing.assert_array_equal(a.boxes, b.boxes)
  np.testing.assert_array_equal(a.scores, b.scores)
  np.testing.assert_array_equal(a.landmarks, b.landmarks)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
  """(store folder, the compiled detector, its result): one compile for the whole module."""
  store = executables.ExecutableStore(str(tmp_path_factory.mktemp("exe")))
  first = _detector(store)
  result = first.detect(IMAGE)
  assert store.saves == 1 and store.loads == 0 and len(os.listdir(store.path)) == 1
  assert len(result) > 0  # the astronaut's face: a real comparison below
  return store.path, first, result


def test_a_stored_function_loads_without_compiling_and_gives_the_same_result(stored,
                                                                             monkeypatch):
  path, _, compiled = stored

  def no_compile(*_):
    raise AssertionError("compiled although the store holds the function")

  monkeypatch.setattr(pyramid.PyramidEngine, "compile", no_compile)
  second = _detector(executables.ExecutableStore(path))
  _same(second.detect(IMAGE), compiled)
  assert second.executables.loads == 1 and second.compile_count == 1


def test_keys_follow_everything_that_changes_the_code(tmp_path):
  engine = _detector(None).engine
  key = engine.executable_key((256, 256), 1, 0)
  assert key == _detector(None).engine.executable_key((256, 256), 1, 0)  # deterministic
  assert key != engine.executable_key((256, 512), 1, 0)
  assert key != engine.executable_key((256, 256), 2, 0)
  assert key != engine.executable_key((256, 256), 1, 1)
  other = _detector(None, thresholds=(0.6, 0.7, 0.7)).engine  # thresholds are compiled in
  assert key != other.executable_key((256, 256), 1, 0)
  assert key != _detector(None, min_face_size=40).engine.executable_key((256, 256), 1, 0)
  facecraft = Detector.from_pretrained("facecraft", align="none").engine
  assert key != facecraft.executable_key((256, 256), 1, 0)
  assert len(key) == 40 and key.isalnum()


def test_a_spec_of_unknown_callables_is_never_stored():
  engine = _detector(None).engine
  engine.spec = pyramid.dataclasses.replace(engine.spec, static_key="")
  assert engine.executable_key((256, 256), 1, 0) is None


def test_a_corrupt_entry_is_a_miss_and_is_removed(stored, tmp_path):
  path, first, _ = stored
  (entry,) = os.listdir(path)
  copy = tmp_path / "exe"
  copy.mkdir()
  (copy / entry).write_bytes(b"not a pickle")
  store = executables.ExecutableStore(str(copy))
  assert store.load(entry[:-len(".exe")]) is None  # the Detector then compiles (the fixture's path)
  assert not (copy / entry).exists() and store.loads == 0
  # And a store that cannot be written only warns.
  blocker = tmp_path / "file"
  blocker.write_text("x")
  bad = executables.ExecutableStore(str(blocker / "exe"))  # a folder below a file
  assert bad.save("k", next(iter(first._compiled.values()))) is False and bad.saves == 0


def test_a_function_from_jaxs_cache_is_compiled_anew_before_it_is_stored(tmp_path):
  """With JAX's persistent cache warm, what goes into the store is compiled here: the function
  JAX loads from its cache serialises without its code (loaded back, its first run failed
  with "Function broadcast_add_fusion not found")."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  from facecraft import cache  # pylint: disable=g-import-not-at-top
  previous = jax.config.jax_compilation_cache_dir
  cache.enable_compile_cache(str(tmp_path / "jax"))
  try:
    _detector(None).detect(IMAGE)  # fills JAX's cache
    jax.clear_caches()
    hits = cache.cache_hits()
    store = executables.ExecutableStore(str(tmp_path / "exe"))
    reference = _detector(store).detect(IMAGE)
    assert cache.cache_hits() == hits and store.saves == 1  # compiled, not taken from the cache
    again = _detector(executables.ExecutableStore(store.path))
    _same(again.detect(IMAGE), reference)
    assert again.executables.loads == 1
  finally:
    if previous:
      cache.enable_compile_cache(previous)
    else:
      compilation_cache.reset_cache()
      jax.config.update("jax_compilation_cache_dir", None)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q"]))
