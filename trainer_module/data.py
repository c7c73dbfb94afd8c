"""Reads the Transform's output into (images [B, 28, 28, 1] in [-1, 1], labels int32 [B]) batches."""

from typing import List

import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from core.config import IMAGE_KEY, IMAGE_SIZE, LABEL_KEY


def to_images_and_labels(features):
  images = tf.reshape(features[IMAGE_KEY], [-1, IMAGE_SIZE, IMAGE_SIZE, 1])
  labels = tf.cast(tf.reshape(features[LABEL_KEY], [-1]), tf.int32)
  return images, labels


def transformed_dataset(file_pattern: List[str], data_accessor, transform_output_dir: str,
                        batch_size: int, seed: int, shuffle_buffer: int = 10000,
                        num_epochs=None) -> tf.data.Dataset:
  """Batches of transformed examples; repeats forever unless `num_epochs` is given."""
  tf_transform_output = tft.TFTransformOutput(transform_output_dir)
  dataset = data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=num_epochs is None,
                                     shuffle_seed=seed, shuffle_buffer_size=shuffle_buffer,
                                     num_epochs=num_epochs, drop_final_batch=num_epochs is None),
      tf_transform_output.transformed_metadata.schema)
  return dataset.map(to_images_and_labels, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
