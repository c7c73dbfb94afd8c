"""The class-conditional denoising U-Net.

Inputs: noisy images [B, 28, 28, 1] in model space, diffusion times [B] in [0, 1], labels [B] in
0..num_classes where `num_classes` itself is the null class (classifier-free guidance). Output: the
prediction ([B, 28, 28, 1], v or eps as the DiffusionConfig says). The time and class embeddings
are summed and injected into every residual block; self-attention runs only at the lowest (7x7)
resolution where it costs little. Upsampling is nearest-neighbour + conv or bilinear without a conv
(UNetConfig.upsample; neither needs XLA). The decoder concatenates a skip from every encoder layer
or only from the residual blocks (UNetConfig.decoder_skips), one decoder block per skip.
"""

import math

import tensorflow as tf
import tf_keras as keras

from core.config import (COMPUTE_DTYPES, DECODER_SKIPS, IMAGE_SIZE, NUM_CLASSES, UPSAMPLE_MODES,
                         UNetConfig)
from trainer_module.group_norm import GroupNorm

# Diffusion times are embedded as t * TIME_SCALE with transformer-style sinusoids.
TIME_SCALE = 1000.0
MAX_PERIOD = 10000.0


class SinusoidalEmbedding(keras.layers.Layer):
  """Embeds a scalar diffusion time per example into `dim` sinusoid features."""

  def __init__(self, dim: int, **kwargs):
    super().__init__(**kwargs)
    self.dim = dim

  def call(self, times):
    half = self.dim // 2
    frequencies = tf.exp(-math.log(MAX_PERIOD) * tf.range(half, dtype=tf.float32) / half)
    angles = tf.cast(times, tf.float32)[:, None] * TIME_SCALE * frequencies[None, :]
    return tf.concat([tf.sin(angles), tf.cos(angles)], axis=-1)

  def get_config(self):
    return {**super().get_config(), "dim": self.dim}


def _residual_block(x, embedding, width: int, config: UNetConfig, name: str):
  """GroupNorm-swish-conv twice, with the embedding added in between (a BigGAN/DDPM block)."""
  skip = x if x.shape[-1] == width else keras.layers.Conv2D(width, 1, name=f"{name}_skip")(x)
  h = GroupNorm(config.groups, name=f"{name}_norm1")(x)
  h = keras.layers.Activation("swish")(h)
  h = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_conv1")(h)
  # Scale-and-shift conditioning after the second norm (ADM's use_scale_shift_norm): the class
  # and time can gate features multiplicatively, which conditions much faster than adding a bias.
  # GroupNorm applies it in the same multiply-add as the normalisation.
  scale_shift = keras.layers.Dense(2 * width, name=f"{name}_embedding")(embedding)
  h = GroupNorm(config.groups, name=f"{name}_norm2")(h, scale_shift)
  h = keras.layers.Activation("swish")(h)
  if config.dropout:
    h = keras.layers.Dropout(config.dropout)(h)
  # Zero-initialised last conv: every block starts as the identity, which stabilises early training.
  h = keras.layers.Conv2D(width, 3, padding="same", kernel_initializer="zeros",
                          name=f"{name}_conv2")(h)
  return skip + h


def _attention_block(x, config: UNetConfig, name: str):
  height, width, channels = x.shape[1], x.shape[2], x.shape[3]
  h = GroupNorm(config.groups, name=f"{name}_norm")(x)
  h = keras.layers.Reshape((height * width, channels))(h)
  h = keras.layers.MultiHeadAttention(num_heads=4, key_dim=max(channels // 4, 1),
                                      name=f"{name}_mha")(h, h)
  h = keras.layers.Reshape((height, width, channels))(h)
  return x + h


def _upsample(x, mode: str, name: str):
  """Doubles the resolution: nearest-neighbour + a 3x3 conv, or bilinear with no conv."""
  if mode == "nearest_conv":
    x = keras.layers.UpSampling2D(2, interpolation="nearest")(x)
    return keras.layers.Conv2D(x.shape[-1], 3, padding="same", name=name)(x)
  if mode == "bilinear":
    return keras.layers.UpSampling2D(2, interpolation="bilinear", name=name)(x)
  raise ValueError(f"Unknown upsample mode {mode!r}; expected one of {UPSAMPLE_MODES}")


def _check_resolutions(config: UNetConfig) -> None:
  """Every downsampling needs an even size, or the skip connections would not line up."""
  if IMAGE_SIZE % config.patch_size:
    raise ValueError(f"patch_size {config.patch_size} does not divide the image size {IMAGE_SIZE}")
  size = IMAGE_SIZE // config.patch_size
  for level in range(len(config.channels) - 1):
    if size % 2:
      raise ValueError(f"{len(config.channels)} levels with patch_size {config.patch_size}: level "
                       f"{level} is {size}x{size}, which cannot be halved; use fewer channels")
    size //= 2


def build_unet(config: UNetConfig, num_classes: int = NUM_CLASSES, name: str = "unet",
               compute_dtype: str = "float32") -> keras.Model:
  """Builds the U-Net as a functional Keras model taking [noisy_images, diffusion_times, labels].

  `compute_dtype` "bfloat16" builds the same network (the same float32 variables, so the same
  weights load into it) computing in bfloat16 (Keras' "mixed_bfloat16" policy) and returning
  float32: a serving option for CPUs with bfloat16 dot products (AVX512_BF16, AMX). The time
  sinusoids stay float32 (diffusion times rounded to 8 bits would blur their high frequencies),
  and GroupNorm takes its statistics in float32.
  """
  if compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
  previous_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(
      "mixed_bfloat16" if compute_dtype == "bfloat16" else "float32")
  try:
    return _build_unet(config, num_classes, name)
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)


def _build_unet(config: UNetConfig, num_classes: int, name: str) -> keras.Model:
  noisy_images = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="noisy_images")
  diffusion_times = keras.Input((), name="diffusion_times")
  labels = keras.Input((), dtype=tf.int32, name="labels")

  dim = config.embedding_dim
  time_embedding = SinusoidalEmbedding(dim, name="time_sinusoids", dtype="float32")(diffusion_times)
  time_embedding = keras.layers.Dense(dim, activation="swish", name="time_mlp1")(time_embedding)
  time_embedding = keras.layers.Dense(dim, name="time_mlp2")(time_embedding)
  # num_classes + 1 rows: the last one is the null class used for unconditional predictions.
  # Unit-variance init: Keras' default (uniform +-0.05) starts the class signal ~20x weaker than
  # the time embedding, and the first thousand steps then learn almost no conditioning.
  class_embedding = keras.layers.Embedding(
      num_classes + 1, dim, embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0),
      name="class_embedding")(labels)
  embedding = keras.layers.Activation("swish")(time_embedding + class_embedding)

  _check_resolutions(config)
  if config.decoder_skips not in DECODER_SKIPS:
    raise ValueError(f"Unknown decoder_skips {config.decoder_skips!r}; expected one of "
                     f"{DECODER_SKIPS}")
  x = noisy_images
  if config.patch_size > 1:
    # Space-to-depth: the network runs at 28 / patch_size, where every conv costs patch_size**2
    # times less; the head maps back with depth-to-space. MNIST strokes survive a 2x2 patch.
    x = keras.layers.Lambda(lambda images: tf.nn.space_to_depth(images, config.patch_size),
                            name="patchify")(x)
  x = keras.layers.Conv2D(config.channels[0], 3, padding="same", name="stem")(x)
  # skips[level]: what the decoder of that level concatenates, in encoder order. The stem and
  # the downsampling convs open a level; their outputs are skips only with "every_layer".
  level_inputs_are_skips = config.decoder_skips == "every_layer"
  skips = [[x] if level_inputs_are_skips else []]
  last_level = len(config.channels) - 1
  for level, width in enumerate(config.channels):
    for block in range(config.res_blocks_per_level):
      x = _residual_block(x, embedding, width, config, f"down{level}_{block}")
      skips[level].append(x)
    if level < last_level:
      x = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"downsample{level}")(x)
      skips.append([x] if level_inputs_are_skips else [])

  x = _residual_block(x, embedding, config.channels[-1], config, "middle0")
  if config.attention_at_lowest:
    x = _attention_block(x, config, "middle_attention")
  x = _residual_block(x, embedding, config.channels[-1], config, "middle1")

  for level in reversed(range(len(config.channels))):
    width = config.channels[level]
    for block, skip in enumerate(reversed(skips[level])):
      x = keras.layers.Concatenate()([x, skip])
      x = _residual_block(x, embedding, width, config, f"up{level}_{block}")
    if level > 0:
      x = _upsample(x, config.upsample, f"upsample{level}")

  x = GroupNorm(config.groups, name="out_norm")(x)
  x = keras.layers.Activation("swish")(x)
  outputs = keras.layers.Conv2D(config.patch_size ** 2, 3, padding="same", kernel_initializer="zeros",
                                name="out")(x)
  if config.patch_size > 1:
    outputs = keras.layers.Lambda(lambda patches: tf.nn.depth_to_space(patches, config.patch_size),
                                  name="unpatchify")(outputs)
  if outputs.dtype != tf.float32:
    outputs = keras.layers.Activation("linear", dtype="float32", name="to_float32")(outputs)
  return keras.Model([noisy_images, diffusion_times, labels], outputs, name=name)
