"""experiments.configs: defaults, validation naming the bad key, and the launcher's early exits."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import ml_collections
import pytest

from experiments.configs import common
from experiments.configs import toy as toy_config
from facecraft import train as train_lib
from facecraft.train import config_schema
from facecraft.train import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
TOY = str(REPO / "experiments" / "configs" / "toy.py")


def test_base_config_is_the_papers_recipe():
  config = common.base_config()
  assert config.optimizer.name == "sgd" and config.optimizer.momentum == 0.9
  assert config.optimizer.weight_decay == 5e-4 and config.optimizer.weight_decay_mode == "l2"
  assert tuple(config.lr.rates) == (1e-3, 1e-4)
  assert set(train_lib.SCHEDULES) >= {"cascade_joint", "cascade_greedy", "toy"}


def test_toy_config_validates():
  config_schema.validate(toy_config.get_config())


def _set(config, key, value):
  *parents, leaf = key.split(".")
  for p in parents:
    config = config[p]
  with config.unlocked():
    config[leaf] = value


@pytest.mark.parametrize("key,value,named", [
    ("lr.rates", (0.1, -0.01), "config.lr.rates"),
    ("lr.rates", (0.1,), "config.lr.rates"),           # One boundary needs two rates.
    ("lr.boundaries", (50, 20), "config.lr.boundaries"),
    ("batch_size", 0, "config.batch_size"),
    ("num_steps", -5, "config.num_steps"),
    ("seed", -1, "config.seed"),
    ("schedule", "cascade_jiont", "config.schedule"),
    ("optimizer.momentum", 1.0, "config.optimizer.momentum"),
    ("optimizer.name", "sgdd", "config.optimizer.name"),
    ("optimizer.weight_decay_mode", "caffe", "config.optimizer.weight_decay_mode"),
    ("optimizer.momentun", 0.5, "config.optimizer.momentun"),       # Unknown key in a section.
    ("optimiser", 1, "config.optimiser"),                           # Unknown top-level key.
    ("eval.best_mode", "best", "config.eval.best_mode"),
    ("checkpoint.every", 0, "config.checkpoint.every"),
    ("frozen", ("x12/(",), "config.frozen"),
    ("data.dim", 0, "config.data.dim"),                            # The schedule's own check.
    ("model.num_classes", 1, "config.model.num_classes"),
])
def test_validate_names_the_bad_key(key, value, named):
  config = toy_config.get_config()
  _set(config, key, value)
  with pytest.raises(ConfigError) as e:
    config_schema.validate(config)
  assert e.value.key == named
  assert str(e.value).startswith(named + ":")


def test_wrong_type_is_named():
  # ConfigDict refuses str for a float field, but a config file may build the section itself.
  config = toy_config.get_config()
  config.optimizer = ml_collections.ConfigDict({**config.optimizer.to_dict(), "momentum": "0.9"})
  with pytest.raises(ConfigError, match=r"^config\.optimizer\.momentum: must be float, got str"):
    config_schema.validate(config)


def test_missing_common_key_is_named():
  config = toy_config.get_config()
  del config.checkpoint["keep"]
  with pytest.raises(ConfigError, match=r"^config\.checkpoint\.keep: missing"):
    config_schema.validate(config)


def test_override_names_are_checked_against_the_config_file():
  config_schema.check_overrides(["--config", TOY, "--config.lr.rates=(0.1, 0.01)",
                          "--noconfig.progress_bar"])
  with pytest.raises(ConfigError, match=r"config\.optimzer: unknown config key \(did you mean "
                     r"'optimizer'\?\)"):
    config_schema.check_overrides([f"--config={TOY}", "--config.optimzer.momentum=0.5"])
  with pytest.raises(ConfigError, match=r"^config\.data\.rooot: unknown"):
    config_schema.check_overrides(["--config", TOY, "--config.data.rooot", "../shared/data"])
  with pytest.raises(ConfigError, match=r"^config\.lr\.rates\.x: unknown"):
    config_schema.check_overrides(["--config", TOY, "--config.lr.rates.x=1"])


@pytest.mark.parametrize("override,named", [
    ("--config.optimzer.momentum=0.5", "config.optimzer"),
    ("--config.lr.rates=(0.1,-0.01)", "config.lr.rates"),
])
def test_launcher_fails_before_training(tmp_path, override, named):
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config", TOY, "--workdir", str(workdir),
       override], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr
  assert named in proc.stderr
  assert not workdir.exists(), "nothing may be written before the config is valid"


def test_evaluators_are_chosen_by_config(tmp_path):
  """config.evals (big_vision style): presets from the config argument, types checked by name,
  and the training hook builds exactly those evaluators."""
  from experiments import cascade_eval  # pylint: disable=g-import-not-at-top
  from experiments.configs import joint_cascade  # pylint: disable=g-import-not-at-top
  from facecraft.eval.evaluators import official  # pylint: disable=g-import-not-at-top
  assert not joint_cascade.get_config().evals  # default: CMU+MIT from config.val
  config = joint_cascade.get_config("sigmoid,wider")
  assert config.gate.mode == "sigmoid" and config.evals.wider.type == "wider"
  config_schema.validate(config)
  config.data.root = str(tmp_path)
  built = cascade_eval.val_evaluators(config)
  assert list(built) == ["wider"] and isinstance(built["wider"], official.WiderEvaluator)
  assert built["wider"].settings["root"] == str(tmp_path / "wider_face_subset")
  with pytest.raises(ValueError, match="unknown config argument 'magic'"):
    joint_cascade.get_config("magic")
  with config.evals.unlocked():
    config.evals.wider.type = "widr"
  with pytest.raises(ConfigError, match=r"config.evals.wider.type: unknown evaluator 'widr'"):
    config_schema.validate(config)


@pytest.mark.parametrize("arg", ["", "extra=/data/wider_extra", "extra=/data/wider_extra,augment"])
def test_facecraft_wider_config_validates(arg):
  from experiments.configs import facecraft_wider  # pylint: disable=g-import-not-at-top
  config = facecraft_wider.get_config(arg)
  config_schema.validate(config)
  d = config.data
  assert d.val_set == "wider_face:wider_face_subset:val" and "cmu_mit" not in config.evals
  assert tuple(d.rule_box_shape) == facecraft_wider.WIDER_BOX_SHAPE and config.model.landmarks
  assert ("wider_face:/data/wider_extra:val" in d.native_sets) == ("extra=" in arg)
  assert (d.rotation_deg > 0) == ("augment" in arg)
  with pytest.raises(ConfigError, match="data.rotation_deg"):
    _set(config, "data.rotation_deg", -1.0)
    config_schema.validate(config)
