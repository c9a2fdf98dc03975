"""A toy detector family in its own room: model, engine, training schedule, config and bundle
export, plugged into FaceCraft through its registries only (issue #21's proof of the seams).

"Faces" are bright 16x16 squares on dark noise. BlobNet scores every cell of a stride-4 grid
for "a square is centred here"; the engine keeps local maxima above the threshold (static
top-K per image, capacity tiers like the pyramid engine) and returns a 16x16 box per cell.

    registry.FAMILIES.register(FAMILY, build_engine)        # inference: one line
    train_lib.SCHEDULES.register(FAMILY, "toy_detector")    # training: one line
    run(get_config(), workdir); export(workdir, "toy.npz")  # train, then bundle
    Detector.from_pretrained("toy.npz")                      # Detector, CLI, evaluators: no edits
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from facecraft.infer.detections import Detections
from facecraft.infer.engine import Engine
from facecraft.models import pretrained
from facecraft.train import checkpoint
from facecraft.train import loop

FAMILY = "toy_blob"
SIDE, STRIDE, CROP = 16, 4, 32  # square side, score-grid stride, training crop size
CONFIG_SECTIONS = ("model", "data")


# ------------------------------------------------------------------------------ model


class BlobNet(nn.Module):
  features: int = 8

  @nn.compact
  def __call__(self, x):  # [B, H, W, 3] in [0, 1] -> logits [B, H / 4, W / 4]
    x = nn.relu(nn.Conv(self.features, (5, 5), padding="SAME", name="conv1")(x))
    x = nn.avg_pool(x, (STRIDE, STRIDE), (STRIDE, STRIDE))
    x = nn.relu(nn.Conv(self.features, (5, 5), padding="SAME", name="conv2")(x))
    return nn.Conv(1, (1, 1), name="score")(x)[..., 0]


def scene(rng: np.random.Generator, h: int, w: int, centres) -> np.ndarray:
  """Dark noise with a bright SIDE x SIDE square about each (cx, cy) (multiples of STRIDE)."""
  image = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
  for cx, cy in centres:
    image[cy - SIDE // 2:cy + SIDE // 2, cx - SIDE // 2:cx + SIDE // 2] = rng.integers(190, 255)
  return image


# ------------------------------------------------------------------------------ training


def get_config() -> ml_collections.ConfigDict:
  from experiments.configs import common  # pylint: disable=g-import-not-at-top
  config = common.base_config()
  config.schedule = FAMILY
  config.batch_size, config.num_steps, config.log_every = 16, 150, 25
  config.progress_bar = False
  config.optimizer.name, config.optimizer.weight_decay = "adam", 0.0
  config.lr.rates, config.lr.boundaries = (1e-2, 1e-3), (120,)
  config.checkpoint.every, config.checkpoint.async_save = 150, False
  config.model = ml_collections.ConfigDict({"features": 8})
  config.data = ml_collections.ConfigDict({"seed": 0})
  return config


def batches(config):
  """Endless batches of CROP x CROP scenes with one centred-on-the-grid square each."""
  rng = np.random.default_rng(config.data.seed)
  cells = CROP // STRIDE
  while True:
    images, targets = [], np.zeros((config.batch_size, cells, cells), np.float32)
    for i in range(config.batch_size):
      cy, cx = rng.integers(2, cells - 2, 2) * STRIDE
      images.append(scene(rng, CROP, CROP, [(cx, cy)]))
      targets[i, cy // STRIDE, cx // STRIDE] = 1.0
    yield {"image": np.stack(images).astype(np.float32) / 255.0, "target": targets}


def run(config, workdir: str) -> loop.TrainResult:
  model = BlobNet(config.model.features)

  def init_fn(rng):
    return model.init(rng, jnp.zeros((1, CROP, CROP, 3)))["params"]

  def loss_fn(params, batch, rng, step):
    del rng, step
    logits = model.apply({"params": params}, batch["image"])
    weights = 1.0 + 15.0 * batch["target"]  # one positive cell in 64
    loss = (optax.sigmoid_binary_cross_entropy(logits, batch["target"]) * weights).mean()
    return loss, {"positive_score": (jax.nn.sigmoid(logits) * batch["target"]).sum()
                  / batch["target"].sum()}

  return loop.train(config, workdir, init_fn, loss_fn, lambda: batches(config))


def export(workdir: str, path: str, threshold: float = 0.5) -> str:
  params, _, step = checkpoint.load_params(workdir)
  return pretrained.save_bundle(
      path, FAMILY, {"params": params},
      inference={"thresholds": [threshold], "min_face_size": SIDE, "box_convention": "tight",
                 "input_mean": 0.0, "input_scale": 1 / 255},
      model_config={"features": 8}, meta={"source": {"step": int(step)}})


# ------------------------------------------------------------------------------ engine


class BlobEngine(Engine):
  """Single-shot: score grid -> local maxima above threshold -> static top-K boxes."""

  name, has_landmarks, max_tiers = FAMILY, False, 2

  def __init__(self, bundle, settings):
    self.model = BlobNet(**bundle.model_config)
    self.params = {"params": bundle.trees["params"]}
    self.threshold = float(settings["thresholds"][0])
    self.mean, self.scale = float(settings["input_mean"]), float(settings["input_scale"])
    self.capacity = int(settings.get("capacity", 4))

  def bucket(self, height, width):
    return (-(-height // 32) * 32, -(-width // 32) * 32)

  def compile(self, bucket, batch, tier):
    k = self.capacity * 4 ** tier

    def fn(params, images, sizes):
      x = (images.astype(jnp.float32) - self.mean) * self.scale
      prob = jax.nn.sigmoid(self.model.apply(params, x))
      rows = jnp.arange(prob.shape[1])[None, :, None] * STRIDE
      cols = jnp.arange(prob.shape[2])[None, None, :] * STRIDE
      inside = (rows < sizes[:, 0, None, None]) & (cols < sizes[:, 1, None, None])
      peak = prob >= jax.lax.reduce_window(prob, -jnp.inf, jax.lax.max, (1, 3, 3), (1, 1, 1),
                                           "SAME")
      score = jnp.where(inside & peak & (prob > self.threshold), prob, -1.0).reshape(batch, -1)
      top, index = jax.lax.top_k(score, k)
      cy = (index // prob.shape[2]) * STRIDE
      cx = (index % prob.shape[2]) * STRIDE
      boxes = jnp.stack([cx - SIDE / 2, cy - SIDE / 2, cx + SIDE / 2, cy + SIDE / 2], -1)
      return {"boxes": boxes.astype(jnp.float32), "scores": top, "valid": top > 0,
              "overflow": (score > 0).sum(-1) > k}

    shapes = (jax.ShapeDtypeStruct((batch, *bucket, 3), np.uint8),
              jax.ShapeDtypeStruct((batch, 2), np.int32))
    return jax.jit(fn).lower(self.params, *shapes).compile()

  def inputs(self, arrays, bucket, batch):
    images = np.zeros((batch, *bucket, 3), np.uint8)
    sizes = np.zeros((batch, 2), np.int32)
    for i, a in enumerate(arrays):
      images[i, :a.shape[0], :a.shape[1]] = a
      sizes[i] = a.shape[:2]
    return images, sizes

  def outputs(self, host, count):
    out = []
    for i in range(count):
      v = host["valid"][i]
      out.append((Detections(host["boxes"][i][v], host["scores"][i][v], None,
                             truncated=bool(host["overflow"][i]), landmark_scheme=None),
                  bool(host["overflow"][i])))
    return out


def build_engine(bundle, settings) -> BlobEngine:
  return BlobEngine(bundle, settings)
