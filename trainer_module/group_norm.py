"""GroupNorm for NHWC feature maps, with the residual block's scale-and-shift folded in.

Keras' GroupNormalization gives the same results with the same weights (gamma, beta), but on
this CPU it is the network's most expensive layer: it builds an all-ones mask the size of its
input, computes weighted moments on a 5-D reshape, and applies the normalisation in separate
passes over the feature map. Here the statistics are per-channel moments over H and W, everything
else happens on [B, C] tensors, and the feature map is touched once more
by one multiply-add. The class and time conditioning that follows the second norm of a residual
block, h * (1 + scale) + shift, folds into that same multiply-add.
"""

import tensorflow as tf
import tf_keras as keras


class GroupNorm(keras.layers.GroupNormalization):
  """`keras.layers.GroupNormalization` over the last axis of [B, H, W, C] inputs, optionally
  followed by a per-example FiLM: `call(inputs, scale_shift)` with `scale_shift` [B, 2C] returns
  `norm(inputs) * (1 + scale) + shift`."""

  def call(self, inputs, scale_shift=None):
    if inputs.shape.rank != 4 or self.axis not in (-1, 3):
      raise ValueError(f"GroupNorm expects NHWC inputs normalised over the last axis, got rank "
                       f"{inputs.shape.rank} and axis {self.axis}")
    channels = inputs.shape[-1]
    group_shape = [-1, self.groups, channels // self.groups]
    # Moments per (example, channel), then per group by the law of total variance (the mean of
    # the channels' variances plus the variance of their means): stable when |mean| >> std.
    # In float32 whatever the compute dtype: bfloat16's 8-bit mantissa is too coarse for sums of
    # a feature map. Only [B, C] statistics are float32; the feature map keeps its dtype.
    channel_mean, channel_variance = tf.nn.moments(tf.cast(inputs, tf.float32), axes=[1, 2])
    channel_mean = tf.reshape(channel_mean, group_shape)
    group_mean = tf.reduce_mean(channel_mean, -1, keepdims=True)
    variance = (tf.reduce_mean(tf.reshape(channel_variance, group_shape), -1, keepdims=True)
                + tf.reduce_mean(tf.square(channel_mean - group_mean), -1, keepdims=True))
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
