"""GroupNorm for NHWC feature maps, with the residual block's scale-and-shift folded in.

Keras' GroupNormalization gives the same results with the same weights (gamma, beta), but on
this CPU it is the network's most expensive layer: it builds an all-ones mask the size of its
input, computes weighted moments on a 5-D reshape, and applies the normalisation in separate
passes over the feature map. Here the statistics are per-channel moments over H and W, everything
else happens on [B, C] tensors, and the feature map is touched once more
by one multiply-add. The class and time conditioning that follows the second norm of a residual
block, h * (1 + scale) + shift, folds into that same multiply-add.

At inference the statistics are the mean and the root of the sum of squares, each one read of the
feature map with no temporary (tf.nn.moments reads it three times and writes the squared
differences once): half the cost of the statistics, and about a tenth of a served network call.
Training keeps the moments, whose gradient has no singularity at an all-zero channel.
"""

import tensorflow as tf
import tf_keras as keras


class GroupNorm(keras.layers.GroupNormalization):
  """`keras.layers.GroupNormalization` over the last axis of [B, H, W, C] inputs, optionally
  followed by a per-example FiLM: `call(inputs, scale_shift)` with `scale_shift` [B, 2C] returns
  `norm(inputs) * (1 + scale) + shift`."""

  def call(self, inputs, scale_shift=None, training=None):
    if inputs.shape.rank != 4 or self.axis not in (-1, 3):
      raise ValueError(f"GroupNorm expects NHWC inputs normalised over the last axis, got rank "
                       f"{inputs.shape.rank} and axis {self.axis}")
    channels = inputs.shape[-1]
    group_shape = [-1, self.groups, channels // self.groups]
    # In float32 whatever the compute dtype: bfloat16's 8-bit mantissa is too coarse for sums of
    # a feature map. Only [B, C] statistics are float32; the feature map keeps its dtype.
    features = tf.cast(inputs, tf.float32)
    if training:
      group_mean, variance = _training_moments(features, group_shape)
    else:
      group_mean, variance = _inference_moments(features, group_shape)
    scale = tf.math.rsqrt(variance + self.epsilon)
    if self.scale:
      scale *= tf.reshape(tf.cast(self.gamma, tf.float32), group_shape)
    offset = -group_mean * scale
    if self.center:
      offset += tf.reshape(tf.cast(self.beta, tf.float32), group_shape)
    scale, offset = tf.reshape(scale, [-1, channels]), tf.reshape(offset, [-1, channels])
    if scale_shift is not None:
      scale_shift = tf.cast(scale_shift, tf.float32)
      film_scale, film_shift = scale_shift[:, :channels], scale_shift[:, channels:]
      scale, offset = scale * (1.0 + film_scale), offset * (1.0 + film_scale) + film_shift
    scale, offset = tf.cast(scale, inputs.dtype), tf.cast(offset, inputs.dtype)
    return inputs * scale[:, None, None, :] + offset[:, None, None, :]


def _training_moments(features, group_shape):
  """Mean and variance per (example, group), [B, G, 1]: moments per (example, channel), then per
  group by the law of total variance (the mean of the channels' variances plus the variance of
  their means), which stays accurate when |mean| >> std."""
  channel_mean, channel_variance = tf.nn.moments(features, axes=[1, 2])
  channel_mean = tf.reshape(channel_mean, group_shape)
  group_mean = tf.reduce_mean(channel_mean, -1, keepdims=True)
  variance = (tf.reduce_mean(tf.reshape(channel_variance, group_shape), -1, keepdims=True)
              + tf.reduce_mean(tf.square(channel_mean - group_mean), -1, keepdims=True))
  return group_mean, variance


def _inference_moments(features, group_shape):
  """`_training_moments` as E[x^2] - E[x]^2 from two single-pass reductions. The subtraction
  loses float32 digits only when mean^2 >> variance; in the trained cpu network mean^2 / variance
  stays under 4 at every norm and noise level, and its outputs move by under 1e-5."""
  pixels = features.shape[1] * features.shape[2]
  channel_mean = tf.reshape(tf.reduce_mean(features, axis=[1, 2]), group_shape)
  channel_mean_square = tf.reshape(
      tf.square(tf.math.reduce_euclidean_norm(features, axis=[1, 2])) / pixels, group_shape)
  group_mean = tf.reduce_mean(channel_mean, -1, keepdims=True)
  mean_square = tf.reduce_mean(channel_mean_square, -1, keepdims=True)
  return group_mean, tf.maximum(mean_square - tf.square(group_mean), 0.0)
