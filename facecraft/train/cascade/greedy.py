"""Schedule cascade_greedy: the separately trained baseline of FaceCraft's joint cascade.

  result = cascade.greedy.run(config, workdir, hooks=None)

Stages, each a full loop.train run in its own resumable folder:
  workdir/stage_x12   x12 alone (λ1·L12); everything else held still.
  workdir/stage_x24   x12 frozen (its params bit for bit); the pool is filtered through it:
                      only crops whose x12 face probability > t1 (gate.thresholds[0]) remain,
                      what a greedy cascade's second stage sees; x24 trained on them (λ2·L24).
  workdir/stage_x48   x12 and x24 frozen; crops passing x12 AND x24 (> t2); x48 trained (λ3·L48).
Optionally (greedy.mine_negatives > 0) each later stage also mines that many hard negatives from
the negative scenes through the frozen earlier stages (sliding.mine_hard_negatives). The pool
(its indices and mined crops) is saved in the stage folder, so a resumed stage trains on exactly
the same crops. Scores are those of the un-flipped crops; the loader flips afterwards.

Fair comparison with cascade_joint (#6): the SAME model (config.model), the SAME base crops
(cascade.data.build with config.data: same cache key), the same initial parameters (stage k
starts from the same seed's init for its own branch), and the SAME budget: the joint run's
num_steps updates of batch_size samples are split over the stages in proportion to
greedy.stage_weights (stage_steps: the last stage takes the rounding remainder, so the three sum to
num_steps and the sample count num_steps x batch_size is identical). Learning-rate boundaries and
warmup are scaled to each stage's length.

The final workdir holds the combined parameters (x12 from stage 1, x24 from stage 2, x48 from
stage 3, box statistics in extra) as a checkpoint at step num_steps in the same layout as a joint
run's, so checkpoint.load_params and the evaluation treat both alike.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import records as records_lib
from data_pipelines import sliding
from data_pipelines import training_crops
from data_pipelines import training_sets
from facecraft import losses
from facecraft.models import cascade
from facecraft.train import checkpoint
from facecraft.train import loop
from facecraft.train import metrics as metrics_lib
from facecraft.train import state as state_lib
from facecraft.train.cascade import config as config_lib
from facecraft.train.cascade import data as cascade_data
from facecraft.train.cascade import joint as cascade_joint
from facecraft.train.config_schema import check

CONFIG_SECTIONS = ("model", "data", "gate", "loss", "val", "greedy")
STAGES = ("x12", "x24", "x48")


def validate_config(config) -> None:
  config_lib.check_closed(config, CONFIG_SECTIONS)
  config_lib.validate_common(config)
  w = tuple(config.greedy.stage_weights)
  check(len(w) == 3 and all(x > 0 for x in w), "greedy.stage_weights",
        f"needs three weights > 0, got {w}")
  check(config.num_steps >= 3, "num_steps", "the greedy schedule needs >= 3 steps (one per stage)")
  check(config.greedy.mine_negatives >= 0, "greedy.mine_negatives", "must be >= 0")
  if not config.greedy.filter and not config.greedy.mine_negatives:
    logging.warning("cascade_greedy: greedy.filter=False and no mining: the later stages train on "
                    "the whole pool (no cascade)")


def stage_steps(config) -> tuple[int, int, int]:
  """Updates per stage; they sum to config.num_steps (the joint run's budget)."""
  n, w = int(config.num_steps), np.asarray(config.greedy.stage_weights, np.float64)
  first = [max(1, int(round(n * x / w.sum()))) for x in w[:2]]
  return first[0], first[1], n - sum(first)


def stage_config(config, k: int):
  """The run config of stage k: its step count, lr boundaries / warmup scaled to it."""
  steps = stage_steps(config)[k]
  c = copy.deepcopy(config)
  scale = steps / float(config.num_steps)
  bounds = []
  for b in config.lr.boundaries:  # scaled, kept strictly increasing (rates keep their count)
    bounds.append(max(int(round(b * scale)), bounds[-1] + 1 if bounds else 1))
  with c.unlocked():
    c.num_steps = steps
    c.lr.boundaries = tuple(bounds)
    c.lr.warmup_steps = int(round(config.lr.warmup_steps * scale))
    c.frozen = ()
  return c


def trains(branch: str):
  """Frozen-parameter predicate: everything but `branch`'s modules (x24, x24_head, x24_fuse)."""
  return lambda path: not (path.split("/")[0] == branch or
                           path.split("/")[0].startswith(branch + "_"))


def make_stage_loss_fn(config, model, branch: str):
  loss_cfg = cascade_joint.loss_config(config)
  lam = float(config.loss.lambdas[STAGES.index(branch)])

  def loss_fn(params, batch, rng, step, extra):
    del step
    out = cascade_joint.forward(model, params, batch, rng)
    loss, m = losses.branch_loss(out[branch], batch, cascade_joint.stats_of(extra), loss_cfg)
    return lam * loss, ({f"{branch}/{k}": v for k, v in m.items()}, extra)

  return loss_fn


def cascade_pass(model, params, images: np.ndarray, upto: int, thresholds, batch_size: int,
                 cache: dict) -> tuple[np.ndarray, np.ndarray]:
  """(passed bool [M], score [M]) of uint8 48x48 crops through the first `upto` frozen stages.

  Runs only x12 (and x24): the inference methods on the training forward's pooled crops.
  """
  key = f"pass{upto}"
  if key not in cache:
    @jax.jit
    def fn(params, x):
      x = cascade.normalize(x)
      crop24 = cascade.avg_pool(x, 2)
      v = {"params": params}
      out = [model.apply(v, cascade.avg_pool(crop24, 2), method=cascade.FaceCraft.stage1)]
      if upto >= 2:
        out.append(model.apply(v, crop24, method=cascade.FaceCraft.stage2))
      return jnp.stack([cascade.face_probability(o["logits"]).reshape(-1) for o in out], -1)
    cache[key] = fn
  probs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    probs.append(np.asarray(cache[key](params, chunk))[:batch_size - pad])
  probs = np.concatenate(probs) if probs else np.zeros((0, upto), np.float32)
  passed = probs[:, 0] > thresholds[0]
  score = probs[:, 0]
  if upto >= 2:
    score = np.where(passed, probs[:, 1], 0.0)
    passed &= probs[:, 1] > thresholds[1]
  return passed, score


def _stage_pool(config, model, params, base: records_lib.CropSet, k: int, stage_dir: str,
                scenes, cache: dict) -> tuple[records_lib.CropSet, dict]:
  """The crops stage k trains on (cached in stage_dir/pool.npz + pool_mined.npz)."""
  path, mined_path = os.path.join(stage_dir, "pool.npz"), os.path.join(stage_dir, "pool_mined.npz")
  made_now = fingerprint(params)
  if os.path.exists(path):
    with np.load(path) as z:
      index, made_by = z["index"], str(z["made_by"])
    if made_by != made_now:
      raise ValueError(f"{stage_dir} was built on other frozen stages than the ones now in "
                       f"{os.path.dirname(stage_dir)} (an earlier stage changed, e.g. more "
                       "num_steps): delete this stage folder and the later ones to redo them")
    mined = records_lib.CropSet.load(mined_path) if os.path.exists(mined_path) else None
  else:
    os.makedirs(stage_dir, exist_ok=True)
    t = tuple(config.gate.thresholds)
    index = np.arange(len(base))
    if config.greedy.filter:
      passed, _ = cascade_pass(model, params, base.images, k, t, int(config.val.batch_size),
                               cache)
      index = np.flatnonzero(passed)
    mined = None
    if config.greedy.mine_negatives:
      scorer = lambda x: cascade_pass(model, params, x, k, t, int(config.val.batch_size),  # noqa
                                      cache)[1]
      res = sliding.mine_hard_negatives(
          scenes, cascade.WINDOWS[2], scorer, int(config.greedy.mine_negatives), t[k - 1],
          np.random.default_rng([config.data.seed, 20 + k]), windows="random",
          progress=config.progress_bar)
      mined = res.crops
      mined.source[:] = records_lib.MINED_SOURCE
      mined.save(mined_path + ".tmp.npz")
      os.replace(mined_path + ".tmp.npz", mined_path)
    np.savez(path + ".tmp.npz", index=index, made_by=made_now)
    os.replace(path + ".tmp.npz", path)
  pool = training_crops.take(base, index)
  if mined is not None and len(mined):
    pool = records_lib.CropSet.concatenate([pool, mined])
  counts = {"kept": int(len(index)), "of": int(len(base)), "mined": 0 if mined is None else
            len(mined), **training_crops.label_counts(pool)}
  if counts["positive"] == 0 or counts["negative"] == 0 or len(pool) < config.batch_size:
    raise ValueError(f"cascade_greedy stage {STAGES[k]}: the pool passing the earlier stages has "
                     f"{counts}; too few crops to train on (lower gate.thresholds?)")
  logging.info("cascade_greedy stage %s pool: %s", STAGES[k], counts)
  return pool, counts


def fingerprint(params) -> str:
  """SHA-1 of the parameter bytes: ties a stage's pool to the frozen stages that made it."""
  digest = hashlib.sha1()
  for leaf in jax.tree.leaves(jax.device_get(params)):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def run(config, workdir: str, hooks=None) -> loop.TrainResult:
  workdir = os.fspath(workdir)
  final = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep, async_save=False)
  try:
    return _run(config, workdir, hooks, final)
  finally:
    final.close()


def _run(config, workdir, hooks, final) -> loop.TrainResult:
  data = cascade_data.build(config, workdir)
  model = cascade_joint.model_of(config)
  stats = cascade_joint.box_stats(data, config)
  scorer: dict = {}  # one jitted crop scorer for the evals and the pool filters
  crop_eval = cascade_joint.crop_eval_fn(config, model, data.val, scorer)
  num_steps = int(config.num_steps)
  if final.latest_step() == num_steps:
    logging.info("cascade_greedy: %s already holds the combined model", workdir)
    params, extra, _ = checkpoint.load_params(workdir)
    state = state_lib.create_train_state(config, params, jax.random.PRNGKey(config.seed), extra)
    return loop.TrainResult(state.replace(step=jnp.int32(num_steps)), num_steps, False, {},
                            final.best_meta(), None, None, workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  previous, results, pools = None, [], {}
  for k, branch in enumerate(STAGES):
    stage_dir = os.path.join(workdir, f"stage_{branch}")
    cfg = stage_config(config, k)
    pool = data.train
    if k > 0:
      scenes = training_sets.scenes(config.data) if config.greedy.mine_negatives else None
      pool, pools[branch] = _stage_pool(config, model, previous, data.train, k, stage_dir,
                                        scenes, scorer)
    init_params = None if previous is None else previous
    result = loop.train(
        cfg, stage_dir, cascade_joint.make_init_fn(config, model, stats, init_params),
        make_stage_loss_fn(config, model, branch),
        lambda pool=pool, k=k: cascade_data.train_iterator(
            pool, config.batch_size, config.seed + k, config.data, config.model.landmarks),
        crop_eval, uses_extra=True, frozen=trains(branch), jit_init=False)
    if result.preempted:
      return result
    results.append(result)
    previous = jax.device_get(result.state.params)

  # The combined model: stage 3's params hold all three trained branches.
  state = state_lib.create_train_state(config, previous, jax.random.PRNGKey(config.seed),
                                       {cascade_joint.STATS_KEY: stats})
  state = state.replace(step=jnp.int32(num_steps))
  eval_fn = cascade_joint.combine_eval(crop_eval, (hooks or {}).get("eval_fn"))
  t0 = time.perf_counter()
  eval_metrics = {k: float(v) for k, v in dict(eval_fn(state)).items()}
  writer = metrics_lib.MetricWriter(workdir, resume_step=num_steps)
  writer.write(num_steps, {f"eval/{k}": v for k, v in eval_metrics.items()})
  writer.close()
  best = None
  if config.eval.best_metric in eval_metrics:
    best = {"metric": config.eval.best_metric, "value": eval_metrics[config.eval.best_metric],
            "step": num_steps}
    final.save_best(state, dict(best))
  final.save(state, None, {"why": "greedy combined", "wall_time": time.time(), "best": best,
                           "stage_steps": list(stage_steps(config)), "pools": pools})
  final.wait()
  logging.info("cascade_greedy: combined model in %s (eval %.1f s): %s", workdir,
               time.perf_counter() - t0, eval_metrics)
  compile_s = [r.compile_time_s for r in results if r.compile_time_s is not None]
  timed = [(r.step, r.samples_per_sec) for r in results if r.samples_per_sec]
  sps = (sum(s for s, _ in timed) / sum(s / v for s, v in timed)) if timed else None
  return loop.TrainResult(state, num_steps, False, eval_metrics, best,
                          sum(compile_s) if compile_s else None, sps, workdir)
