"""One registry helper for every pluggable thing: schedules, formats, models, evaluators, commands.

    SCHEDULES = registry.Registry("schedule")
    SCHEDULES.register("cascade_joint", "facecraft.train.cascade.joint")   # lazy: a module path
    SCHEDULES.register("toy", toy_module)                                   # or the object itself
    @EVALUATORS.register("wider")                                           # or as a decorator
    class WiderEvaluator: ...
    SCHEDULES.get("cascade_joint")   # imports the module on first use

A target given as "package.module" or "package.module:attr" is imported only when asked for, so a
registry of heavy things (jax models) costs nothing at import. Registering is explicit: a line in
the registry's own module, never a side effect of importing the thing registered.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator


class RegistryError(KeyError):
  """An unknown name (the message lists the known ones) or a name registered twice."""

  def __str__(self) -> str:  # KeyError would quote the message.
    return str(self.args[0])


class Registry:
  """name -> object; string targets are import paths resolved (and cached) on first get()."""

  def __init__(self, kind: str):
    self.kind = kind
    self._targets: dict[str, Any] = {}
    self._resolved: dict[str, Any] = {}

  def register(self, name: str, target: Any = None, *, overwrite: bool = False):
    """Registers target under name; without a target, returns a decorator that does."""
    if target is None:
      def decorate(obj):
        self.register(name, obj, overwrite=overwrite)
        return obj
      return decorate
    if name in self._targets and not overwrite:
      raise RegistryError(f"{self.kind} {name!r} is already registered")
    self._targets[name] = target
    self._resolved.pop(name, None)
    return target

  def unregister(self, name: str) -> None:
    self._targets.pop(name, None)
    self._resolved.pop(name, None)

  def get(self, name: str) -> Any:
    if name not in self._targets:
      raise RegistryError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
    if name not in self._resolved:
      self._resolved[name] = _resolve(self._targets[name])
    return self._resolved[name]

  def target(self, name: str) -> Any:
    """What was registered (an import path stays a string): no import."""
    if name not in self._targets:
      raise RegistryError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
    return self._targets[name]

  def names(self) -> list[str]:
    return sorted(self._targets)

  def __contains__(self, name: object) -> bool:
    return name in self._targets

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())

  def __len__(self) -> int:
    return len(self._targets)

  def __repr__(self) -> str:
    return f"Registry({self.kind!r}, {self.names()})"


def _resolve(target: Any) -> Any:
  if not isinstance(target, str):
    return target
  module_name, _, attr = target.partition(":")
  module = importlib.import_module(module_name)
  return getattr(module, attr) if attr else module


def lazy(target: str) -> Callable[[], Any]:
  """A zero-argument callable that imports target ("module" or "module:attr") when called."""
  return lambda: _resolve(target)
