"""Tests of trainer_module/train.py: the training loop, resumable checkpoints, EMA and helpers."""

import dataclasses
import json
import math
import os
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

from tests.support import tiny_models
from core import config as config_lib
from core.config import PipelineConfig
from trainer_module import train


def _weights(model):
  return [weight.copy() for weight in model.get_weights()]


def _assert_weights_equal(first, second, atol=0.0):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    np.testing.assert_allclose(a, b, atol=atol, rtol=0)


def _any_weight_differs(first, second):
  return any(not np.array_equal(a, b) for a, b in zip(first, second))


def _checkpoint_numbers(checkpoint_dir):
  state = tf.train.get_checkpoint_state(checkpoint_dir)
  return [int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths]


# warmup_steps beyond train_steps: the learning rate of every step is then the same whether
# train_steps is 3 or 6, so a 3-step run continued by hand is the reference for a resumed run.
_WARMUP = 8


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A 3-step run, then a new 6-step trainer resuming from its checkpoint directory, both given
  the whole stream of 6 batches.

  Each trainer traces its train_step once, the slowest part of this module, so it builds
  only two. After saving, the first trainer is stepped by hand over the same 3 batches the
  second one gets: that is what an uninterrupted 6-step run computes.
  """
  root = tmp_path_factory.mktemp("train")
  batches = tiny_models.random_batches(6, batch_size=4, seed=0)
  checkpoint_dir, log_dir = str(root / "checkpoints"), str(root / "logs")

  first = train.DiffusionTrainer(tiny_models.tiny_pipeline_config(train_steps=3,
                                                                  warmup_steps=_WARMUP))
  initial = types.SimpleNamespace(model=_weights(first.model), ema=_weights(first.ema_model))
  images, labels = next(iter(batches))
  first_loss = float(first.train_step(images, labels))  # one step by hand: checks the EMA update
  after_one = types.SimpleNamespace(model=_weights(first.model), ema=_weights(first.ema_model))
  # At step 1 it skips the first batch and has 2 left: the loop must stop at train_steps, not
  # at the end of data.
  first_summary = train.train_diffusion(first, batches.take(3), checkpoint_dir, log_dir=log_dir)
  saved = types.SimpleNamespace(model=_weights(first.model), ema=_weights(first.ema_model),
                                rng_state=first.rng.state.numpy().copy(),
                                checkpoints=_checkpoint_numbers(checkpoint_dir))
  for images, labels in batches.skip(3):
    first.train_step(images, labels)

  second = train.DiffusionTrainer(tiny_models.tiny_pipeline_config(train_steps=6,
                                                                   warmup_steps=_WARMUP))
  second.checkpoint().restore(
      tf.train.latest_checkpoint(checkpoint_dir)).assert_existing_objects_matched()
  restored = types.SimpleNamespace(model=_weights(second.model), ema=_weights(second.ema_model),
                                   step=int(second.step), rng_state=second.rng.state.numpy().copy())
  # The whole stream, as run_fn passes it: the resumed trainer must start at batch 3.
  second_summary = train.train_diffusion(second, batches, checkpoint_dir)
  return types.SimpleNamespace(
      checkpoint_dir=checkpoint_dir, log_dir=log_dir, initial=initial, first_loss=first_loss,
      after_one=after_one, first=first, first_summary=first_summary, saved=saved, second=second,
      restored=restored, second_summary=second_summary)


def test_training_returns_finite_loss_and_stops_at_train_steps(runs):
  assert math.isfinite(runs.first_loss)
  assert math.isfinite(runs.first_summary["final_loss"])
  assert runs.first_summary["steps"] == 3
  assert runs.saved.checkpoints == [3]


def test_training_reports_its_speed_against_the_machines_matmul_rate(runs):
  summary = runs.first_summary
  assert summary["images_per_second"] > 0
  assert summary["train_gflop_per_image"] > 0 and summary["machine_matmul_gflops"] > 0
  assert summary["share_of_matmul_rate"] == pytest.approx(
      summary["images_per_second"] * summary["train_gflop_per_image"]
      / summary["machine_matmul_gflops"])


def test_training_writes_summaries_to_log_dir(runs):
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(runs.log_dir))


def test_training_changes_the_weights(runs):
  assert _any_weight_differs(runs.initial.model, runs.after_one.model)


def test_ema_equals_model_at_start_and_follows_warmup_decay(runs):
  _assert_weights_equal(runs.initial.model, runs.initial.ema)
  # First step: decay = min(ema_decay, (1 + 0) / (10 + 0)) = 0.1.
  expected = [0.1 * ema + 0.9 * weight
              for ema, weight in zip(runs.initial.ema, runs.after_one.model)]
  _assert_weights_equal(runs.after_one.ema, expected, atol=1e-6)


def test_ema_weights_differ_from_raw_weights_after_training(runs):
  assert _any_weight_differs(runs.second.model.get_weights(), runs.second.ema_model.get_weights())
  assert _any_weight_differs(runs.saved.model, runs.saved.ema)


def test_restored_state_equals_saved_state(runs):
  assert runs.restored.step == 3
  _assert_weights_equal(runs.restored.model, runs.saved.model)
  _assert_weights_equal(runs.restored.ema, runs.saved.ema)
  np.testing.assert_array_equal(runs.restored.rng_state, runs.saved.rng_state)


def test_resumed_trainer_continues_from_3_to_6_and_checkpoints(runs):
  assert runs.second_summary["steps"] == 6
  assert int(runs.second.step) == 6
  # The optimizer's own counter was restored too (it would read 3 after a fresh start).
  assert int(runs.second.optimizer.iterations) == 6
  assert math.isfinite(runs.second_summary["final_loss"])
  assert _checkpoint_numbers(runs.checkpoint_dir) == [3, 6]


def test_resumed_run_matches_uninterrupted_run(runs):
  # Same weights, EMA, optimizer moments, noise stream and batches 4-6: the same result.
  assert int(runs.first.step) == 6
  _assert_weights_equal(runs.second.model.get_weights(), runs.first.model.get_weights(),
                        atol=1e-6)
  _assert_weights_equal(runs.second.ema_model.get_weights(), runs.first.ema_model.get_weights(),
                        atol=1e-6)


def test_checkpoint_dir_for_is_stable_and_keyed_by_training_inputs():
  config = tiny_models.tiny_pipeline_config()
  files = ["/data/train-1", "/data/train-0"]
  directory = train.checkpoint_dir_for("/ckpt", files, config)
  assert directory == train.checkpoint_dir_for("/ckpt", list(reversed(files)), config)
  assert os.path.dirname(directory) == "/ckpt"
  assert len(os.path.basename(directory)) == 16
  changed_train = tiny_models.tiny_pipeline_config(train_steps=7)
  assert train.checkpoint_dir_for("/ckpt", files, changed_train) != directory
  assert train.checkpoint_dir_for("/ckpt", ["/data/other"], config) != directory
  unet = config_lib.profile("smoke").unet
  assert train.checkpoint_dir_for("/ckpt", files, config_lib.profile(
      "smoke", unet=unet, diffusion=config.diffusion, train=config.train)) != directory
  # Settings that do not affect training (evaluation, sampler) keep the directory.
  same_training = config_lib.profile("full", unet=config.unet, diffusion=config.diffusion,
                                     train=config.train)
  assert train.checkpoint_dir_for("/ckpt", files, same_training) == directory


def test_trainer_custom_config_round_trips_the_trainer_fields():
  config = config_lib.profile("smoke")
  custom_config = train.trainer_custom_config(config, train.DIFFUSION_TRAINER_FIELDS)
  assert set(custom_config) == {train.CONFIG_KEY, train.CODE_VERSION_KEY}
  assert set(json.loads(custom_config[train.CONFIG_KEY])) == set(train.DIFFUSION_TRAINER_FIELDS)
  restored = train.config_from_custom_config(custom_config)
  for field in train.DIFFUSION_TRAINER_FIELDS:
    assert getattr(restored, field) == getattr(config, field)
  # Fields that do not travel come back at their defaults.
  assert restored.eval == PipelineConfig().eval
  assert restored.classifier == PipelineConfig().classifier


def test_trainer_custom_config_for_classifier_and_checkpoint_root():
  config = config_lib.profile("full")
  custom_config = train.trainer_custom_config(config, train.CLASSIFIER_TRAINER_FIELDS,
                                              checkpoint_root="/ckpt")
  assert custom_config[train.CHECKPOINT_ROOT_KEY] == "/ckpt"
  assert train.config_from_custom_config(custom_config).classifier == config.classifier


def test_code_version_is_a_stable_16_digit_hex_string():
  version = train.code_version()
  assert version == train.code_version()
  assert len(version) == 16
  int(version, 16)  # raises unless hex


def test_code_version_covers_the_ground_the_model_stands_on(tmp_path):
  # The exported model depends on core/ (config, serving contract) as much as on trainer_module/:
  # an edit to either must invalidate the Trainer's cache.
  assert {os.path.basename(d) for d in train.MODEL_CODE_DIRS} == {"core", "trainer_module"}
  copies = [str(tmp_path / os.path.basename(d)) for d in train.MODEL_CODE_DIRS]
  for source, copy in zip(train.MODEL_CODE_DIRS, copies):
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
  before = train.code_version(copies)
  assert before == train.code_version()
  for copy in copies:
    contract = os.path.join(copy, "serving_contract.py" if copy.endswith("core") else "export.py")
    with open(contract, "a") as f:
      f.write("\n# an edit\n")
    assert train.code_version(copies) != before
    before = train.code_version(copies)


def test_warmup_cosine_decay_values():
  schedule = train.WarmupCosineDecay(peak=1.0, warmup_steps=4, total_steps=10,
                                     final_fraction=0.1)
  rates = [float(schedule(step)) for step in (0, 1, 3, 4, 7, 10, 20)]
  # Warm-up: (step + 1) / 4; then 0.1 + 0.9 * (1 + cos(pi * (step - 4) / 6)) / 2.
  np.testing.assert_allclose(rates, [0.25, 0.5, 1.0, 1.0, 0.55, 0.1, 0.1], atol=1e-6)
  assert schedule.get_config() == {"peak": 1.0, "warmup_steps": 4, "total_steps": 10,
                                   "final_fraction": 0.1}


def test_warmup_cosine_decay_without_warmup_starts_at_peak():
  schedule = train.WarmupCosineDecay(peak=2e-3, warmup_steps=0, total_steps=5)
  assert float(schedule(0)) == pytest.approx(2e-3)
  assert float(schedule(5)) == pytest.approx(2e-4)


def test_train_step_is_traced_once(runs):
  # The optimizer's slots exist before the first step: a step that created them would be traced
  # twice, and one trace costs seconds (more on the cpu profile's network).
  assert runs.second.train_step.experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_warm_start_continues_the_saved_state_for_warm_start_steps(runs, tmp_path):
  # The 6-step model, saved as run_fn saves it beside its export; a new run starts from it.
  serving_dir = str(tmp_path / "model" / "Format-Serving")
  state_dir = train.save_training_state(runs.second, serving_dir)
  assert os.path.basename(state_dir) == train.TRAINING_STATE_DIR
  warm = train.DiffusionTrainer(tiny_models.tiny_pipeline_config(train_steps=6,
                                                                 warmup_steps=_WARMUP,
                                                                 warm_start_steps=2))
  start = train.warm_start(warm, serving_dir)
  assert start == {"start": "warm", "base_model": serving_dir, "base_step": 6}
  assert (int(warm.step), int(warm.start_step), warm.final_step) == (6, 6, 8)
  _assert_weights_equal(_weights(warm.model), _weights(runs.second.model))
  _assert_weights_equal(_weights(warm.ema_model), _weights(runs.second.ema_model))
  # Two more steps on this run's data, from its first batch.
  summary = train.train_diffusion(warm, tiny_models.random_batches(2, batch_size=4, seed=1),
                                  str(tmp_path / "checkpoints"))
  assert summary["steps"] == 8 and math.isfinite(summary["final_loss"])
  assert _any_weight_differs(_weights(warm.model), _weights(runs.second.model))


@pytest.mark.slow
def test_warm_start_falls_back_to_a_cold_start_and_says_why(runs, tmp_path):
  config = tiny_models.tiny_pipeline_config(train_steps=6, warmup_steps=_WARMUP)
  assert train.warm_start(train.DiffusionTrainer(config), None) == {
      "start": "cold", "reason": "no blessed model to start from"}
  no_state = str(tmp_path / "old" / "Format-Serving")
  assert "no saved training state" in train.warm_start(train.DiffusionTrainer(config),
                                                       no_state)["reason"]
  serving_dir = str(tmp_path / "model" / "Format-Serving")
  train.save_training_state(runs.second, serving_dir)
  wider = dataclasses.replace(config, unet=dataclasses.replace(config.unet, channels=(4, 8, 16)))
  trainer = train.DiffusionTrainer(wider)
  start = train.warm_start(trainer, serving_dir)
  assert start["start"] == "cold" and "network or noise schedule changed" in start["reason"]
  assert (int(trainer.step), trainer.final_step) == (0, 6)
