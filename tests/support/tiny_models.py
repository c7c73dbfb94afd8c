"""Tiny, seeded stand-ins for the trainer module's network, configs and data (fast on 2 CPU cores).

`seeded_tiny_unet` overwrites every weight of a freshly built U-Net with seeded values: the real
initialisation zeroes the output conv, which would make every prediction identically zero and
hide whether labels, times or guidance reach the output.
"""

import dataclasses

import tensorflow as tf

from core import config as config_lib
from core.config import (DiffusionConfig, SamplerConfig, TrainConfig,
                             UNetConfig)
from trainer_module import export
from trainer_module import unet

# The golden values of tests/test_samplers.py and test_export.py were pinned on this network
# (skips from every encoder layer); the cpu profile's decoder is tested in test_unet.py.
TINY_UNET = UNetConfig(channels=(4, 8, 8), embedding_dim=8, groups=2, decoder_skips="every_layer")
TINY_DIFFUSION = DiffusionConfig()
# max_rows_per_call 3: a guided request of 2 or more labels runs the network in chunks, so the
# export tests serve through samplers.chunked_network.
TINY_SAMPLER = SamplerConfig(num_steps=3, max_steps=16, max_batch=4, max_rows_per_call=3)
TINY_TRAIN = TrainConfig(batch_size=4, train_steps=6, learning_rate=1e-3, warmup_steps=2,
                         log_every_steps=3, checkpoint_every_steps=3, shuffle_buffer=8)
# Std of the seeded weights: large enough that labels and times visibly change the output.
WEIGHT_SCALE = 0.3


def seeded_tiny_unet(seed: int = 0, config: UNetConfig = TINY_UNET, name: str = "unet"):
  """Builds the U-Net and sets the weight k-th in name order to stateless_normal(seed=[seed, k])
  * WEIGHT_SCALE (name order: a change to the layer graph that reorders `model.weights` without
  changing the network leaves the seeded model, and the golden values, as they are)."""
  model = unet.build_unet(config, name=name)
  for index, weight in enumerate(sorted(model.weights, key=lambda w: w.name)):
    weight.assign(WEIGHT_SCALE * tf.random.stateless_normal(
        weight.shape, seed=[seed, index], dtype=weight.dtype))
  return model


def tiny_schedule():
  return export.schedule_from_config(TINY_DIFFUSION)


def tiny_pipeline_config(**train_overrides) -> config_lib.PipelineConfig:
  """The smoke profile with the tiny U-Net and sampler, and TINY_TRAIN with `train_overrides`."""
  return config_lib.profile(
      "smoke", unet=TINY_UNET, diffusion=TINY_DIFFUSION, sampler=TINY_SAMPLER,
      train=dataclasses.replace(TINY_TRAIN, **train_overrides))


def random_batches(num_batches: int, batch_size: int = 4, seed: int = 0) -> tf.data.Dataset:
  """`num_batches` batches of (images [B, 28, 28, 1] uniform in [-1, 1], labels int32 [B])."""
  count = num_batches * batch_size
  images = tf.random.stateless_uniform([count, 28, 28, 1], seed=[seed, 0], minval=-1.0,
                                       maxval=1.0)
  labels = tf.random.stateless_uniform([count], seed=[seed, 1], minval=0, maxval=10,
                                       dtype=tf.int32)
  return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
