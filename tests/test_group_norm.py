"""trainer_module/group_norm.py: the same function and weights as Keras' GroupNormalization."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from trainer_module.group_norm import GroupNorm


def _pair(groups, channels, seed=0):
  """A Keras GroupNormalization and a GroupNorm holding the same random gamma and beta."""
  reference, ours = keras.layers.GroupNormalization(groups), GroupNorm(groups)
  shape = (None, 5, 6, channels)
  reference.build(shape)
  ours.build(shape)
  for index, (a, b) in enumerate(zip(reference.weights, ours.weights)):
    value = 1.0 + tf.random.stateless_normal(a.shape, seed=[seed, index])
    a.assign(value)
    b.assign(value)
  return reference, ours


def _inputs(channels, seed=1, batch=3):
  # An offset and a scale per channel, so the mean and the variance both matter.
  x = tf.random.stateless_normal([batch, 5, 6, channels], seed=[seed, 0])
  return 3.0 * x + tf.range(channels, dtype=tf.float32)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("groups,channels", [(1, 4), (2, 8), (8, 32), (8, 8)])
def test_equals_keras_group_normalization(groups, channels, training):
  # Training takes moments; inference E[x^2] - E[x]^2 from two one-pass reductions, which loses
  # float32 digits in proportion to mean^2 / variance: up to about 85 in these inputs' groups,
  # under 4 in the trained network's.
  reference, ours = _pair(groups, channels)
  x = _inputs(channels)
  np.testing.assert_allclose(ours(x, training=training).numpy(), reference(x).numpy(),
                             atol=1e-5 if training else 1e-4)


def test_inference_statistics_survive_a_constant_group():
  # A group whose features are all equal has variance 0; E[x^2] - E[x]^2 can round below 0.
  _, ours = _pair(2, 8)
  x = tf.concat([tf.fill([3, 5, 6, 4], 7.1), _inputs(4)], axis=-1)
  outputs = ours(x, training=False).numpy()
  assert np.isfinite(outputs).all()
  np.testing.assert_allclose(outputs[..., :4], ours(x, training=True).numpy()[..., :4], atol=1e-3)


def test_same_weights_as_keras_layer():
  reference, ours = _pair(2, 8)
  assert [(w.name, w.shape) for w in ours.weights] == [(w.name, w.shape) for w in reference.weights]
  assert ours.get_config() == {**reference.get_config(), "name": ours.name}


def test_scale_shift_is_applied_after_the_normalisation():
  reference, ours = _pair(2, 8)
  x = _inputs(8)
  scale_shift = tf.random.stateless_normal([3, 16], seed=[2, 0])
  expected = reference(x) * (1.0 + scale_shift[:, None, None, :8]) + scale_shift[:, None, None, 8:]
  np.testing.assert_allclose(ours(x, scale_shift).numpy(), expected.numpy(), atol=1e-5)


def test_gradients_equal_keras_gradients():
  reference, ours = _pair(2, 8)
  x = _inputs(8)
  weights = tf.random.stateless_normal(x.shape, seed=[3, 0])
  grads = []
  for layer in (reference, ours):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(layer(x) * weights)
    grads.append(tape.gradient(loss, [x, *layer.trainable_weights]))
  for ref_grad, our_grad in zip(*grads):
    np.testing.assert_allclose(our_grad.numpy(), ref_grad.numpy(), atol=1e-4)


def test_examples_are_normalised_independently():
  _, ours = _pair(2, 8)
  x = _inputs(8, batch=4)
  np.testing.assert_allclose(ours(x[1:3]).numpy(), ours(x).numpy()[1:3], atol=1e-6)


def test_rejects_inputs_that_are_not_nhwc():
  with pytest.raises(ValueError, match="NHWC"):
    GroupNorm(2)(tf.zeros([3, 8]))
