"""The divergence guard, for real: a batch poisoned with NaN (TrainConfig.poison_step) stops the
diffusion Trainer at that step with the last good checkpoint kept and nothing exported; the judge
classifier stops the same way; and a smoke pipeline run with the fault fails without blessing or
pushing anything."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from core import config as config_lib
from pipeline import retrain
from tests.support import tiny_models
from trainer_module import classifier
from trainer_module import flops
from trainer_module import train

# TINY_TRAIN: 6 steps, a checkpoint every 3. Step 5's batch is NaN: step 3 is the last good one.
_POISON_STEP = 5


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
  root = tmp_path_factory.mktemp("divergence")
  trainer = train.DiffusionTrainer(tiny_models.tiny_pipeline_config(poison_step=_POISON_STEP))
  checkpoint_dir = str(root / "checkpoints")
  serving_model_dir = str(root / "model" / "Format-Serving")
  with pytest.MonkeyPatch.context() as patch, pytest.raises(train.NonFiniteLossError) as error:
    # The loop's speed report measures the machine's matmul rate: seconds this test does not need.
    patch.setattr(flops, "matmul_flops_per_second", lambda: 1e10)
    train.train_and_export(trainer, tiny_models.random_batches(6), checkpoint_dir,
                           serving_model_dir, log_dir=str(root / "logs"))
  return trainer, str(error.value), checkpoint_dir, serving_model_dir


def test_training_stops_at_the_poisoned_step_and_names_it(poisoned):
  trainer, message, checkpoint_dir, _ = poisoned
  assert int(trainer.step) == _POISON_STEP
  assert f"loss became nan at step {_POISON_STEP}" in message
  assert f"last good checkpoint: step 3 in {checkpoint_dir}" in message
  # The fault reached the weights: what stayed on disk is from before it.
  assert not all(np.isfinite(w).all() for w in trainer.model.get_weights())


def test_the_last_good_checkpoint_is_kept_and_finite(poisoned):
  _, _, checkpoint_dir, _ = poisoned
  state = tf.train.get_checkpoint_state(checkpoint_dir)
  assert [path.rsplit("-", 1)[1] for path in state.all_model_checkpoint_paths] == ["3"]
  reader = tf.train.load_checkpoint(state.model_checkpoint_path)
  values = [reader.get_tensor(name) for name, dtype in reader.get_variable_to_dtype_map().items()
            if dtype.is_floating]
  assert len(values) > 10
  assert all(np.isfinite(value).all() for value in values)


def test_nothing_is_exported_or_saved_beside_the_export(poisoned):
  _, _, _, serving_model_dir = poisoned
  assert not os.path.exists(os.path.dirname(serving_model_dir))


def test_a_rerun_without_the_fault_resumes_from_the_same_checkpoints():
  config = tiny_models.tiny_pipeline_config()
  files = ["/data/train-0"]
  poisoned_config = tiny_models.tiny_pipeline_config(poison_step=_POISON_STEP)
  assert (train.checkpoint_dir_for("/ckpt", files, poisoned_config)
          == train.checkpoint_dir_for("/ckpt", files, config))


def test_poison_step_is_validated():
  with pytest.raises(ValueError, match="train.poison_step"):
    config_lib.TrainConfig(poison_step=0)


def test_the_classifier_guard_raises_at_the_first_non_finite_batch_loss():
  # The callback train_classifier passes to Keras fit (a fit takes tens of seconds to trace here).
  guard = classifier.RaiseOnNonFiniteLoss()
  guard.on_train_batch_end(0, {"loss": 2.3})
  guard.on_train_batch_end(1, {"loss": np.float32(1.9)})
  # The class the guard raises, as its module sees it (an in-process pipeline run may re-import
  # trainer_module.train, making a second class of the same name).
  with pytest.raises(classifier.NonFiniteLossError, match="classifier loss became inf at step 3"):
    guard.on_train_batch_end(2, {"loss": np.float32("inf")})
  with pytest.raises(classifier.NonFiniteLossError, match="classifier loss became nan at step 8"):
    guard.on_train_batch_end(7, {"loss": float("nan")})


@pytest.mark.slow
def test_a_poisoned_pipeline_run_fails_and_pushes_nothing(tmp_path):
  smoke = config_lib.profile("smoke")
  # The smoke profile checkpoints every 10 of its 30 steps.
  config = dataclasses.replace(
      smoke, pipeline_root=str(tmp_path / "pipeline_root"),
      serving_dir=str(tmp_path / "serving_model"),
      train=dataclasses.replace(smoke.train, poison_step=17))
  summary = retrain.retrain(config)
  assert summary["outcome"] == "failed"
  assert "loss became nan at step 17; last good checkpoint: step 10" in summary["error"]
  assert summary["trainer"] == "FAILED"
  assert not summary.get("blessed")
  assert "pushed_version" not in summary
  assert not os.path.exists(config.serving_dir) or not os.listdir(config.serving_dir)
