"""The Transform step: pixels 0..255 -> [-1, 1], and its inverse for everything the model emits.

The scaling uses the fixed pixel range of the format (0..255), not TFT min/max analyzers: a data
slice without a white pixel must not change what a model output of 1.0 means. Training, the
evaluator and the exported sampler all go through these two functions.
"""

import tensorflow as tf

from core.config import IMAGE_KEY, IMAGE_SIZE, LABEL_KEY

PIXEL_MAX = 255.0


def scale_pixels(pixels: tf.Tensor) -> tf.Tensor:
  """Maps pixel values in [0, PIXEL_MAX] to model space [-1, 1]."""
  return tf.cast(pixels, tf.float32) * (2.0 / PIXEL_MAX) - 1.0


def to_unit_range(images: tf.Tensor, clip: bool = True) -> tf.Tensor:
  """Maps model space [-1, 1] back to [0, 1], clipped unless `clip` is False (a training loss on
  the result needs the gradient at the bounds)."""
  unit = (images + 1.0) * 0.5
  return tf.clip_by_value(unit, 0.0, 1.0) if clip else unit


def from_unit_range(images: tf.Tensor) -> tf.Tensor:
  """Maps images in [0, 1] to model space [-1, 1]."""
  return tf.cast(images, tf.float32) * 2.0 - 1.0


def to_pixels(images: tf.Tensor) -> tf.Tensor:
  """Inverts `scale_pixels`: model space [-1, 1] -> uint8 pixels (rounded, clipped)."""
  return tf.cast(tf.round(to_unit_range(images) * PIXEL_MAX), tf.uint8)


def preprocessing_fn(inputs):
  """TFT preprocessing_fn: flat image [B, 784] in [-1, 1] and an int64 label [B]."""
  image = tf.reshape(inputs[IMAGE_KEY], [-1, IMAGE_SIZE * IMAGE_SIZE])
  label = tf.reshape(inputs[LABEL_KEY], [-1])
  return {IMAGE_KEY: scale_pixels(image), LABEL_KEY: tf.cast(label, tf.int64)}
