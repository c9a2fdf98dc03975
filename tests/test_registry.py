"""data_pipelines.registry: the one registry helper (schedules, formats, models, evaluators, CLI)."""

import sys

import pytest

from data_pipelines import registry


def test_lazy_target_is_imported_on_first_get_only():
  r = registry.Registry("thing")
  sys.modules.pop("json.tool", None)
  r.register("tool", "json.tool")
  assert "json.tool" not in sys.modules and "tool" in r and r.names() == ["tool"]
  assert r.get("tool") is sys.modules["json.tool"]
  r.register("dumps", "json:dumps")
  import json  # pylint: disable=g-import-not-at-top
  assert r.get("dumps") is json.dumps and r.target("dumps") == "json:dumps"


def test_decorator_objects_and_clear_errors():
  r = registry.Registry("evaluator")

  @r.register("box")
  class Box:  # pylint: disable=unused-variable
    pass

  assert r.get("box") is Box and list(r) == ["box"] and len(r) == 1
  with pytest.raises(registry.RegistryError, match="already registered"):
    r.register("box", object())
  r.register("box", int, overwrite=True)
  assert r.get("box") is int
  with pytest.raises(registry.RegistryError, match=r"unknown evaluator 'nope'; known: box"):
    r.get("nope")
  r.unregister("box")
  assert "box" not in r
