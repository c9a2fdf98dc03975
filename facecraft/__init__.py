"""FaceCraft: jointly trained cascaded CNNs for face detection and alignment, in JAX/Flax.

Importing the package is cheap and never imports jax: the numpy-only modules (geometry, images)
are used by data_pipelines, which must stay jax-free (ARCHITECTURE.md, rules of the house).
"""

__version__ = "0.1.0"


def __getattr__(name):
  # Lazy: `facecraft.Detector` pulls in jax only when someone asks for it.
  if name in ("Detector", "Detections"):
    from facecraft.infer import detector  # pylint: disable=g-import-not-at-top
    return getattr(detector, name)
  raise AttributeError(f"module 'facecraft' has no attribute {name!r}")
