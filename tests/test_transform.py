"""Unit tests of trainer_module/transform.py (pixel scaling) and data.to_images_and_labels."""

import numpy as np
import tensorflow as tf

from core.config import IMAGE_KEY, LABEL_KEY
from trainer_module import data as data_lib
from trainer_module import transform


def _raw_batch(batch_size=3):
  """ExampleGen-like features: int64 pixels [B, 784] and int64 labels [B, 1]."""
  pixels = np.arange(batch_size * 784, dtype=np.int64).reshape(batch_size, 784) % 256
  labels = np.arange(batch_size, dtype=np.int64).reshape(batch_size, 1)
  return {IMAGE_KEY: tf.constant(pixels), LABEL_KEY: tf.constant(labels)}


def test_preprocessing_fn_maps_0_to_minus_1_and_255_to_1():
  pixels = np.zeros((2, 784), np.int64)
  pixels[0, :] = 255
  outputs = transform.preprocessing_fn({IMAGE_KEY: tf.constant(pixels),
                                        LABEL_KEY: tf.constant([[4], [9]], tf.int64)})
  image = outputs[IMAGE_KEY].numpy()
  np.testing.assert_allclose(image[0], 1.0, atol=1e-6)
  np.testing.assert_allclose(image[1], -1.0, atol=1e-6)


def test_preprocessing_fn_output_shapes_dtypes_and_range():
  outputs = transform.preprocessing_fn(_raw_batch(3))
  image, label = outputs[IMAGE_KEY], outputs[LABEL_KEY]
  assert image.shape == (3, 784)
  assert image.dtype == tf.float32
  assert label.shape == (3,)
  assert label.dtype == tf.int64
  np.testing.assert_array_equal(label.numpy(), [0, 1, 2])
  assert float(tf.reduce_min(image)) >= -1.0
  assert float(tf.reduce_max(image)) <= 1.0


def test_preprocessing_fn_accepts_28x28_images_and_flat_labels():
  pixels = tf.fill([2, 28, 28], tf.constant(51, tf.int64))
  outputs = transform.preprocessing_fn({IMAGE_KEY: pixels, LABEL_KEY: tf.constant([1, 2])})
  assert outputs[IMAGE_KEY].shape == (2, 784)
  np.testing.assert_allclose(outputs[IMAGE_KEY].numpy(), 51 * 2 / 255 - 1, atol=1e-6)
  assert outputs[LABEL_KEY].dtype == tf.int64


def test_scale_pixels_is_linear_and_increasing():
  scaled = transform.scale_pixels(tf.range(256)).numpy()
  np.testing.assert_allclose(scaled, np.arange(256) * 2.0 / 255.0 - 1.0, atol=1e-6)
  assert np.all(np.diff(scaled) > 0)


def test_to_pixels_inverts_scale_pixels_for_all_256_values():
  pixels = np.arange(256, dtype=np.uint8)
  restored = transform.to_pixels(transform.scale_pixels(tf.constant(pixels)))
  assert restored.dtype == tf.uint8
  np.testing.assert_array_equal(restored.numpy(), pixels)


def test_to_pixels_rounds_and_clips():
  images = tf.constant([-5.0, -1.0, 1.0 / 255.0 - 1.0 + 0.001, 0.0, 1.0, 7.0])
  np.testing.assert_array_equal(transform.to_pixels(images).numpy(), [0, 0, 1, 128, 255, 255])


def test_to_unit_range_maps_and_clips():
  images = tf.constant([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
  np.testing.assert_allclose(transform.to_unit_range(images).numpy(),
                             [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0], atol=1e-7)


def test_from_unit_range_inverts_to_unit_range_inside_data_range():
  images = tf.linspace(-1.0, 1.0, 101)
  np.testing.assert_allclose(
      transform.from_unit_range(transform.to_unit_range(images)).numpy(), images.numpy(),
      atol=1e-6)
  np.testing.assert_allclose(transform.from_unit_range(tf.constant([0, 1])).numpy(), [-1, 1])


def test_to_images_and_labels_reshapes_transformed_features():
  outputs = transform.preprocessing_fn(_raw_batch(3))
  images, labels = data_lib.to_images_and_labels(outputs)
  assert images.shape == (3, 28, 28, 1)
  assert labels.dtype == tf.int32
  np.testing.assert_array_equal(labels.numpy(), [0, 1, 2])
  np.testing.assert_array_equal(images.numpy().reshape(3, 784), outputs[IMAGE_KEY].numpy())
