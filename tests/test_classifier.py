"""Unit tests of trainer_module/classifier.py: the judge CNN and its serving wrapper."""

import numpy as np
import pytest
import tensorflow as tf

from core.config import ClassifierConfig
from trainer_module import classifier

_CONFIG = ClassifierConfig(filters=(4, 8), feature_dim=16, batch_size=4, train_steps=2,
                           learning_rate=1e-3, seed=0)


@pytest.fixture(scope="module")
def model():
  tf.keras.utils.set_random_seed(0)
  return classifier.build_classifier(_CONFIG)


def _unit_images(count, seed=0):
  return tf.random.stateless_uniform([count, 28, 28, 1], seed=[seed, 0])


def test_build_classifier_outputs_logits_and_features(model):
  logits, features = model(tf.zeros([3, 28, 28, 1]))
  assert logits.shape == (3, 10)
  assert features.shape == (3, _CONFIG.feature_dim)
  assert model.get_layer("features").output.shape[-1] == _CONFIG.feature_dim


def test_features_are_relu_activations(model):
  _, features = model(_unit_images(4) * 2.0 - 1.0)
  assert float(tf.reduce_min(features)) >= 0.0


def test_serving_default_outputs_probabilities_summing_to_one(model):
  module = classifier.ClassifierModule(model)
  outputs = module.serving_default(_unit_images(5))
  assert set(outputs) == {"logits", "probabilities", "features"}
  probabilities = outputs["probabilities"].numpy()
  assert probabilities.shape == (5, 10)
  assert np.all(probabilities >= 0.0)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
  assert outputs["features"].shape == (5, _CONFIG.feature_dim)


def test_serving_default_maps_unit_range_images_to_model_space(model):
  images = _unit_images(3, seed=1)
  module = classifier.ClassifierModule(model)  # tf.function methods hold `self` weakly: keep it
  outputs = module.serving_default(images)
  logits, features = model(images * 2.0 - 1.0, training=False)
  np.testing.assert_allclose(outputs["logits"].numpy(), logits.numpy(), atol=1e-5)
  np.testing.assert_allclose(outputs["features"].numpy(), features.numpy(), atol=1e-5)
  np.testing.assert_allclose(outputs["probabilities"].numpy(),
                             tf.nn.softmax(logits).numpy(), atol=1e-6)


def test_classifier_module_tracks_the_model_variables(model):
  module = classifier.ClassifierModule(model)
  assert len(module.model_variables) == len(model.variables)
  assert {id(v) for v in module.trainable_variables} == {id(v) for v in model.trainable_variables}


def test_convs_per_level_stacks_that_many_convs_before_each_pool():
  config = ClassifierConfig(filters=(4, 8), convs_per_level=3, dropout=0.0, feature_dim=16)
  layers = classifier.build_classifier(config).layers
  conv_widths = [layer.filters for layer in layers if layer.__class__.__name__ == "Conv2D"]
  assert conv_widths == [4, 4, 4, 8, 8, 8]


def test_dropout_acts_in_training_only():
  config = ClassifierConfig(filters=(4, 8), feature_dim=16, dropout=0.5)
  tf.keras.utils.set_random_seed(0)
  model = classifier.build_classifier(config)
  images = _unit_images(4, seed=2) * 2.0 - 1.0
  module = classifier.ClassifierModule(model)  # held: tf.function methods hold `self` weakly
  served = module.serving_default(_unit_images(4, seed=2))
  logits, features = model(images, training=False)
  np.testing.assert_allclose(served["logits"].numpy(), logits.numpy(), atol=1e-5)
  trained_logits, _ = model(images, training=True)
  assert not np.allclose(trained_logits.numpy(), logits.numpy())
  assert features.shape == (4, 16)
