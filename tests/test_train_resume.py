"""Resume: a run stopped at a checkpoint (in-process), killed with SIGKILL, or stopped with SIGTERM
(through `python -m experiments.train`) ends bit for bit where an uninterrupted run ends (CPU)."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.configs import toy as toy_config
from facecraft.train import checkpoint
from facecraft.train import loop
from facecraft.train import metrics
from facecraft.train import toy

REPO = pathlib.Path(__file__).resolve().parents[1]
TOY = str(REPO / "experiments" / "configs" / "toy.py")
COMMON_FLAGS = ["--config.num_steps=60", "--config.checkpoint.every=10",
                "--config.eval.every=30", "--config.progress_bar=False"]


def _assert_same_tree(a, b) -> None:
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)  # Bit for bit: no tolerance.


def _assert_same_run(workdir_a: str, workdir_b: str) -> None:
  a, b = checkpoint.load_tree(workdir_a), checkpoint.load_tree(workdir_b)
  assert int(a["train"]["step"]) == int(b["train"]["step"])
  _assert_same_tree(a["model"], b["model"])
  _assert_same_tree(a["train"], b["train"])
  assert a["data"] == b["data"]


def test_resume_in_process_matches_uninterrupted(tmp_path):
  config = toy_config.get_config()
  config.progress_bar, config.num_steps, config.checkpoint.every = False, 30, 7
  toy.run(config, str(tmp_path / "straight"))
  config.num_steps = 17  # Stops at 17 (a final save off the every-7 grid), then continues.
  assert toy.run(config, str(tmp_path / "split")).step == 17
  config.num_steps = 30
  resumed = toy.run(config, str(tmp_path / "split"))
  assert resumed.step == 30 and not resumed.preempted
  _assert_same_run(str(tmp_path / "straight"), str(tmp_path / "split"))
  steps = metrics.read_csv(str(tmp_path / "split"))["step"]
  assert list(steps) == [7, 10, 14, 17, 20, 21, 28, 30], "one row per step, none repeated"
  events = metrics.read_events(str(tmp_path / "split" / metrics.TENSORBOARD_DIR))
  assert [s for s, _ in events["train/loss"]] == list(steps)
  # A finished run just restores.
  again = toy.run(config, str(tmp_path / "split"))
  assert again.step == 30 and again.compile_time_s is None


def test_resume_with_the_crop_loader_continues_with_the_next_batch(tmp_path):
  """The real data path: data_pipelines.loader batches (grain state in the checkpoint)."""
  from data_pipelines import loader  # pylint: disable=g-import-not-at-top
  from data_pipelines import records  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  crops = records.CropSet(
      images=rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8),
      labels=rng.choice([records.POSITIVE, records.NEGATIVE, records.PART], 40),
      boxes=np.tile([[2.0, 2.0, 10.0, 10.0]], (40, 1)), landmarks=np.zeros((40, 5, 2)),
      landmark_mask=np.zeros((40, 5), bool), source=np.arange(40))
  config = toy_config.get_config()
  config.progress_bar, config.checkpoint.every, config.log_every = False, 4, 4

  def init_fn(rng):
    return {"w": 0.01 * jax.random.normal(rng, (12 * 12 * 3,)), "b": jnp.zeros(())}

  def loss_fn(params, batch, rng, step):
    del rng, step
    logits = batch["image"].reshape(len(batch["image"]), -1) @ params["w"] + params["b"]
    losses = optax.sigmoid_binary_cross_entropy(logits, batch["cls_target"].astype(jnp.float32))
    mask = batch["cls_mask"].astype(jnp.float32)
    return jnp.sum(losses * mask) / jnp.maximum(mask.sum(), 1.0), {}

  def run(workdir, num_steps):
    config.num_steps = num_steps
    return loop.train(config, str(workdir), init_fn, loss_fn,
                      lambda: loader.make_crop_loader(crops, batch_size=8, seed=3))

  run(tmp_path / "straight", 14)
  run(tmp_path / "split", 6)
  assert run(tmp_path / "split", 14).step == 14
  _assert_same_run(str(tmp_path / "straight"), str(tmp_path / "split"))


def _launch(workdir, *extra):
  return subprocess.Popen(
      [sys.executable, "-m", "experiments.train", "--config", TOY, "--workdir", str(workdir),
       *COMMON_FLAGS, *extra],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc, workdir, above: int, timeout: float = 60.0) -> int:
  """Polls until a finished checkpoint (a plain <step> folder) newer than `above` exists."""
  folder = pathlib.Path(workdir) / "checkpoints"
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    steps = [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.is_dir() else []
    if steps and max(steps) > above:
      return max(steps)
    assert proc.poll() is None, f"run ended early: {proc.communicate()}"
    time.sleep(0.02)
  proc.kill()
  raise AssertionError(f"no checkpoint above {above} in {folder} after {timeout} s")


def test_sigkill_and_sigterm_then_resume_match_uninterrupted(tmp_path):
  reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
  ref_proc = _launch(reference)  # Runs alongside the interrupted one.
  # 1. SIGKILL after the first checkpoint (the 50 ms per batch leaves ~0.5 s between saves).
  proc = _launch(interrupted, "--config.data.delay_s=0.05")
  first = _wait_for_checkpoint(proc, interrupted, above=0)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  killed_at = checkpoint.load_tree(str(interrupted))["meta"]["step"]
  assert first <= killed_at < 60
  # 2. Resume, then SIGTERM after its next checkpoint: it saves where it is and exits 0.
  proc = _launch(interrupted, "--config.data.delay_s=0.05")
  _wait_for_checkpoint(proc, interrupted, above=killed_at)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=60)
  assert proc.returncode == 0, err
  assert '"preempted": true' in out
  meta = checkpoint.load_tree(str(interrupted))["meta"]
  assert meta["why"] == "preempted" and killed_at < meta["step"] < 60
  # 3. Resume to the end.
  proc = _launch(interrupted)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  assert '"preempted": false' in out and '"step": 60' in out
  out, err = ref_proc.communicate(timeout=120)
  assert ref_proc.returncode == 0, err
  _assert_same_run(str(reference), str(interrupted))
  # The best checkpoint and the eval curve agree too.
  best_ref, _, step_ref = checkpoint.load_params(str(reference), which="best")
  best_int, _, step_int = checkpoint.load_params(str(interrupted), which="best")
  assert step_ref == step_int
  _assert_same_tree(best_ref, best_int)
  table_ref, table_int = metrics.read_csv(str(reference)), metrics.read_csv(str(interrupted))
  # The killed run's rows after its checkpoint were dropped (CSV) and purged (TensorBoard).
  assert np.all(np.diff(table_int["step"]) > 0) and table_int["step"][-1] == 60
  events = metrics.read_events(str(interrupted / metrics.TENSORBOARD_DIR))["train/loss"]
  assert np.all(np.diff([s for s, _ in events]) > 0)
  np.testing.assert_array_equal(table_ref["eval/accuracy"][~np.isnan(table_ref["eval/accuracy"])],
                                table_int["eval/accuracy"][~np.isnan(table_int["eval/accuracy"])])
