"""Tiny stand-ins for the pipeline's artifacts, with the exact interfaces of the real ones.

"Digits" here are ten non-overlapping bright blocks (`digit_templates`): the fake sampler draws the
block of the requested class, the fake classifier scores images by their brightness in each block,
and the fake examples are noisy blocks, so every fake agrees with every other one. Models are
saved as `<model_uri>/Format-Serving`, the layout `tfx.utils.path_utils.serving_model_path` reads.
"""

import math
import os
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from core import serving_contract
from core.config import IMAGE_KEY, IMAGE_SIZE, LABEL_KEY, NUM_CLASSES, SamplerConfig

_IMAGE_SPEC = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32)


def digit_templates() -> np.ndarray:
  """[10, 28, 28, 1] float32: class c is an 8x4 block at row c // 5, column c % 5 of a grid."""
  templates = np.zeros((NUM_CLASSES, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
  for digit in range(NUM_CLASSES):
    top, left = 3 + 14 * (digit // 5), 2 + 5 * (digit % 5)
    templates[digit, top:top + 8, left:left + 4] = 1.0
  return templates


class _FakeDiffusionModel(tf.Module):
  """Sampler drawing noisy class templates; denoiser that blurs ("blur") or does nothing."""

  def __init__(self, denoiser: str, label_shift: int, sample_noise: float,
               guidance_sigma_interval: Tuple[float, float]):
    super().__init__()
    if denoiser not in ("blur", "identity"):
      raise ValueError(f"Unknown fake denoiser {denoiser!r}")
    # The sampler settings the real exporter records beside its signatures.
    low, high = guidance_sigma_interval
    recorded = SamplerConfig(guidance_min_sigma=low,
                             guidance_max_sigma=None if math.isinf(high) else high)
    for name, variable in serving_contract.sampler_variables(recorded).items():
      setattr(self, name, variable)
    self._denoiser = denoiser
    self._label_shift = label_shift
    self._sample_noise = sample_noise
    self.templates = tf.constant(digit_templates())

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.int32, name="labels"),
      tf.TensorSpec([], tf.float32, name="guidance_scale"),
      tf.TensorSpec([], tf.int32, name="num_steps"),
      tf.TensorSpec([], tf.int32, name="seed"),
  ])
  def serving_default(self, labels, guidance_scale, num_steps, seed):
    del guidance_scale, num_steps  # the fake draws the same images whatever the settings
    shown = tf.math.floormod(labels + self._label_shift, NUM_CLASSES)
    images = tf.gather(self.templates, shown)
    noise = tf.random.stateless_normal(tf.shape(images), seed=tf.stack([seed, 0]))
    images_float = tf.clip_by_value(images + self._sample_noise * noise, 0.0, 1.0)
    return {
        "images": tf.cast(tf.round(images_float * 255.0), tf.uint8),
        "images_float": images_float,
    }

  @tf.function(input_signature=[
      tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 1], tf.float32, name="noisy_images"),
      tf.TensorSpec([], tf.float32, name="noise_sigma"),
  ])
  def denoise(self, noisy_images, noise_sigma):
    del noise_sigma
    if self._denoiser == "blur":
      denoised = tf.nn.avg_pool2d(noisy_images, ksize=3, strides=1, padding="SAME")
    else:
      denoised = tf.identity(noisy_images)
    return {"denoised_images": tf.clip_by_value(denoised, 0.0, 1.0)}


class _FakeClassifier(tf.Module):
  """Logits = mean brightness inside each class block; features = those ten means."""

  def __init__(self):
    super().__init__()
    templates = digit_templates().reshape(NUM_CLASSES, -1)
    self.block_means = tf.constant((templates / templates.sum(axis=1, keepdims=True)).T)

  @tf.function(input_signature=[_IMAGE_SPEC])
  def serving_default(self, images):
    flat = tf.reshape(images, [-1, IMAGE_SIZE * IMAGE_SIZE])
    features = tf.matmul(flat, self.block_means)
    logits = 10.0 * features
    return {"logits": logits, "probabilities": tf.nn.softmax(logits), "features": features}


def save_fake_diffusion_model(model_uri: str, denoiser: str = "blur", label_shift: int = 0,
                              sample_noise: float = 0.05,
                              guidance_sigma_interval: Tuple[float, float] = (0.0, math.inf)) -> str:
  """Saves a fake diffusion SavedModel under `model_uri`; returns model_uri.

  label_shift=k draws the template of class (label + k) % 10: a sampler ignoring its condition.
  guidance_sigma_interval: recorded with the other sampler settings as the exporter records them
  (default: guidance at every step).
  """
  module = _FakeDiffusionModel(denoiser, label_shift, sample_noise, guidance_sigma_interval)
  tf.saved_model.save(module, path_utils.serving_model_path(model_uri), signatures={
      "serving_default": module.serving_default.get_concrete_function(),
      "denoise": module.denoise.get_concrete_function(),
  })
  return model_uri


def save_fake_classifier(model_uri: str) -> str:
  """Saves the fake judge classifier SavedModel under `model_uri`; returns model_uri."""
  module = _FakeClassifier()
  tf.saved_model.save(module, path_utils.serving_model_path(model_uri), signatures={
      "serving_default": module.serving_default.get_concrete_function(),
  })
  return model_uri


def model_artifact(uri: str, artifact_id: int) -> standard_artifacts.Model:
  artifact = standard_artifacts.Model()
  artifact.uri = uri
  artifact.id = artifact_id
  return artifact


def _example(image: np.ndarray, label: int) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=image.reshape(-1))),
      LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
  })).SerializeToString()


def write_fake_examples(uri: str, num_train: int = 40, num_eval: int = 20, noise: float = 0.1,
                        seed: int = 0,
                        record_order_seed: Optional[int] = None) -> standard_artifacts.Examples:
  """An Examples artifact like ExampleGen's: gzip TFRecords of noisy templates per split.
  `record_order_seed` writes the same examples in a shuffled order, as ExampleGen may."""
  rng = np.random.default_rng(seed)
  templates = digit_templates()
  for split, count in (("train", num_train), ("eval", num_eval)):
    split_dir = os.path.join(uri, f"Split-{split}")
    os.makedirs(split_dir, exist_ok=True)
    labels = np.arange(count) % NUM_CLASSES
    images = templates[labels] + noise * rng.standard_normal(templates[labels].shape)
    images = np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.int64)
    if record_order_seed is not None:
      order = np.random.default_rng(record_order_seed).permutation(count)
      images, labels = images[order], labels[order]
    path = os.path.join(split_dir, "data_tfrecord-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
      for image, label in zip(images, labels):
        writer.write(_example(image, int(label)))
  examples = standard_artifacts.Examples()
  examples.uri = uri
  examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
  return examples
