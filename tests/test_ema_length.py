"""Tests of benchmarks/ema_length.py: several weight averages kept by one training."""

import types

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import ema_length
from tests.support import tiny_models
from trainer_module import train

_STEPS = 3
# The Trainer's own decay, a copy of it, and one short enough to bind from the second step on
# (the warm-up gives 0.1, 0.18, 0.25 at steps 0-2).
_OWN, _SHORT = 0.999, 0.15


def _weights(model):
  return [weight.copy() for weight in model.get_weights()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A plain trainer and a multi-average one, stepped over the same batches; each raw-weight state
  of the latter, to average by hand."""
  config = tiny_models.tiny_pipeline_config(train_steps=_STEPS, ema_decay=_OWN)
  batches = list(tiny_models.random_batches(_STEPS, batch_size=4, seed=3))
  plain = train.DiffusionTrainer(config)
  for images, labels in batches:
    plain.train_step(images, labels)
  multi = ema_length.MultiEmaTrainer(config, [_OWN, _SHORT])
  raw_states = [_weights(multi.model)]
  for images, labels in batches:
    multi.train_step(images, labels)
    raw_states.append(_weights(multi.model))
  checkpoint_dir = str(tmp_path_factory.mktemp("ema_length"))
  multi.checkpoint().write(checkpoint_dir + "/ckpt")
  return types.SimpleNamespace(plain=plain, multi=multi, raw_states=raw_states,
                               checkpoint=checkpoint_dir + "/ckpt", config=config)


def test_extra_averages_leave_training_and_the_trainers_own_average_unchanged(trained):
  # Equal up to float32 round-off: the two train_step graphs are traced apart.
  for a, b in zip(trained.plain.model.get_weights(), trained.multi.model.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  for a, b in zip(trained.plain.ema_model.get_weights(), trained.multi.ema_model.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_an_extra_average_with_the_trainers_decay_is_its_ema_model(trained):
  for a, b in zip(trained.multi.ema_model.get_weights(),
                  trained.multi.extra_emas[_OWN].get_weights()):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)


def test_an_extra_average_follows_the_warmed_up_decay(trained):
  expected = trained.raw_states[0]
  for step, raw in enumerate(trained.raw_states[1:]):
    decay = min(_SHORT, (1 + step) / (10 + step))
    expected = [decay * e + (1 - decay) * w for e, w in zip(expected, raw)]
  short = trained.multi.extra_emas[_SHORT].get_weights()
  for a, b in zip(expected, short):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  # And it is not the long average: the short decay binds from the second step on.
  assert any(not np.allclose(a, b) for a, b in zip(short, trained.multi.ema_model.get_weights()))
  assert trained.multi.averages().keys() == {_OWN, _SHORT}


def test_the_checkpoint_holds_every_average(trained):
  restored = ema_length.MultiEmaTrainer(trained.config, [_OWN, _SHORT])
  restored.checkpoint().read(trained.checkpoint).assert_existing_objects_matched()
  for decay, average in trained.multi.extra_emas.items():
    for a, b in zip(average.get_weights(), restored.extra_emas[decay].get_weights()):
      np.testing.assert_array_equal(a, b)
  assert int(restored.step) == _STEPS


def test_a_resume_with_other_decays_restores_each_average_into_its_own_decay(trained):
  restored = ema_length.MultiEmaTrainer(trained.config, [_SHORT])
  restored.checkpoint().read(trained.checkpoint).expect_partial()
  for a, b in zip(trained.multi.extra_emas[_SHORT].get_weights(),
                  restored.extra_emas[_SHORT].get_weights()):
    np.testing.assert_array_equal(a, b)
