"""Unit tests of trainer_module/unet.py: shapes per profile and what the output depends on."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tests.support import tiny_models
from core import config as config_lib
from trainer_module import unet

_NOISY = tf.random.stateless_normal([2, 28, 28, 1], seed=[3, 0])
_HALF = tf.constant([0.5, 0.5])


@pytest.fixture(scope="module")
def model():
  return tiny_models.seeded_tiny_unet(seed=0)


def _max_abs_diff(a, b):
  return float(tf.reduce_max(tf.abs(a - b)))


# Building a network takes seconds on a busy 2-core machine: the cpu and full profiles' widths are
# not built here; the tiny variant covers their code paths (two blocks per level) and the `model`
# fixture the tiny config itself.
@pytest.mark.parametrize("unet_config", [
    config_lib.profile("smoke").unet,
    dataclasses.replace(tiny_models.TINY_UNET, res_blocks_per_level=2, dropout=0.1,
                        attention_at_lowest=False),
    dataclasses.replace(tiny_models.TINY_UNET, channels=(4, 8), patch_size=2),
    dataclasses.replace(tiny_models.TINY_UNET, upsample="nearest_conv"),
    dataclasses.replace(tiny_models.TINY_UNET, upsample="bilinear"),
    dataclasses.replace(tiny_models.TINY_UNET, decoder_skips="res_blocks"),
    dataclasses.replace(tiny_models.TINY_UNET, decoder_skips="res_blocks", res_blocks_per_level=2,
                        patch_size=2, channels=(4, 8)),
], ids=["smoke", "tiny_two_blocks_dropout_no_attention", "tiny_patch2", "tiny_nearest_conv",
        "tiny_bilinear", "tiny_res_block_skips", "tiny_res_block_skips_two_blocks_patch2"])
def test_fresh_network_output_shape_and_zero_initialised_output(unet_config):
  network = unet.build_unet(unet_config)
  outputs = network([_NOISY, _HALF, tf.constant([1, 10])])
  assert outputs.shape == (2, 28, 28, 1)
  assert outputs.dtype == tf.float32
  # The output conv is zero-initialised, so a fresh network predicts exactly zero.
  np.testing.assert_array_equal(outputs.numpy(), 0.0)


def test_patch2_network_depends_on_every_pixel_of_its_patch():
  # Space-to-depth keeps all four pixels of a 2x2 patch as channels: changing one of them changes
  # the prediction at the patch's pixels (and the output is back at 28x28).
  network = tiny_models.seeded_tiny_unet(
      seed=1, config=dataclasses.replace(tiny_models.TINY_UNET, channels=(4, 8), patch_size=2))
  inputs = [_NOISY[:1], _HALF[:1], tf.constant([3])]
  base = network(inputs).numpy()
  assert base.shape == (1, 28, 28, 1)
  changed = _NOISY[:1].numpy()
  changed[0, 11, 13, 0] += 1.0  # the bottom-left pixel of the patch at rows 10-11, cols 12-13
  moved = network([tf.constant(changed)] + inputs[1:]).numpy()
  assert np.max(np.abs(moved - base)[0, 10:12, 12:14]) > 1e-4


def test_bilinear_upsampling_has_no_upsampling_convs():
  def upsampling_convs(mode):
    network = unet.build_unet(dataclasses.replace(tiny_models.TINY_UNET, upsample=mode))
    return [layer.name for layer in network.layers
            if layer.name.startswith("upsample") and layer.count_params()]

  assert upsampling_convs("nearest_conv") == ["upsample2", "upsample1"]
  assert upsampling_convs("bilinear") == []


def _decoder_blocks(network):
  return [layer.name for layer in network.layers
          if layer.name.startswith("up") and layer.name.endswith("_conv1")]


@pytest.mark.parametrize("decoder_skips, res_blocks, expected", [
    # Every encoder layer (stem, residual blocks, downsampling convs) feeds one decoder block.
    ("every_layer", 1, ["up2_0", "up2_1", "up1_0", "up1_1", "up0_0", "up0_1"]),
    ("every_layer", 2, ["up2_0", "up2_1", "up2_2", "up1_0", "up1_1", "up1_2",
                        "up0_0", "up0_1", "up0_2"]),
    # Only the residual blocks do: one decoder block per encoder block.
    ("res_blocks", 1, ["up2_0", "up1_0", "up0_0"]),
    ("res_blocks", 2, ["up2_0", "up2_1", "up1_0", "up1_1", "up0_0", "up0_1"]),
])
def test_decoder_has_one_block_per_skip(decoder_skips, res_blocks, expected):
  network = unet.build_unet(dataclasses.replace(
      tiny_models.TINY_UNET, decoder_skips=decoder_skips, res_blocks_per_level=res_blocks))
  assert _decoder_blocks(network) == [f"{name}_conv1" for name in expected]


def test_res_block_skips_concatenate_the_matching_encoder_block():
  # The first decoder block at 28x28 sees the upsampled 14x14 features (8 channels) and the
  # 28x28 encoder block's output (4 channels), not the stem's.
  network = unet.build_unet(dataclasses.replace(tiny_models.TINY_UNET, decoder_skips="res_blocks"))
  assert network.get_layer("up0_0_conv1").input.shape[1:] == (28, 28, 12)
  assert network.get_layer("up2_0_conv1").input.shape[1:] == (7, 7, 16)


def test_unknown_decoder_skips_are_rejected():
  with pytest.raises(ValueError, match="decoder_skips"):
    unet.build_unet(dataclasses.replace(tiny_models.TINY_UNET, decoder_skips="none"))


def test_unknown_upsample_mode_is_rejected():
  with pytest.raises(ValueError, match="unet.upsample"):
    unet.build_unet(dataclasses.replace(tiny_models.TINY_UNET, upsample="transposed"))


@pytest.mark.parametrize("channels, patch_size", [((4, 8, 8), 2), ((4,), 3)])
def test_levels_that_cannot_be_halved_are_rejected(channels, patch_size):
  with pytest.raises(ValueError, match="patch_size"):
    unet.build_unet(dataclasses.replace(tiny_models.TINY_UNET, channels=channels,
                                        patch_size=patch_size))


def test_seeded_tiny_network_output_shape(model):
  assert model([_NOISY, _HALF, tf.constant([1, 10])]).shape == (2, 28, 28, 1)


def test_class_label_changes_output(model):
  zeros = model([_NOISY, _HALF, tf.constant([0, 0])])
  sevens = model([_NOISY, _HALF, tf.constant([7, 7])])
  assert _max_abs_diff(zeros, sevens) > 1e-3


def test_null_label_is_accepted_and_differs_from_real_labels(model):
  null = model([_NOISY, _HALF, tf.constant([10, 10])])
  assert np.all(np.isfinite(null.numpy()))
  assert _max_abs_diff(null, model([_NOISY, _HALF, tf.constant([0, 0])])) > 1e-3


def test_diffusion_time_changes_output(model):
  labels = tf.constant([3, 3])
  early = model([_NOISY, tf.constant([0.1, 0.1]), labels])
  late = model([_NOISY, tf.constant([0.9, 0.9]), labels])
  assert _max_abs_diff(early, late) > 1e-3


def test_seeded_network_output_is_deterministic(model):
  inputs = [_NOISY, _HALF, tf.constant([4, 5])]
  np.testing.assert_array_equal(model(inputs).numpy(), model(inputs).numpy())


def test_each_example_is_independent_of_the_rest_of_the_batch(model):
  noisy = tf.random.stateless_normal([3, 28, 28, 1], seed=[4, 0])
  times, labels = tf.constant([0.2, 0.5, 0.8]), tf.constant([1, 10, 6])
  batched = model([noisy, times, labels]).numpy()
  for index in range(3):
    alone = model([noisy[index:index + 1], times[index:index + 1], labels[index:index + 1]])
    np.testing.assert_allclose(batched[index:index + 1], alone.numpy(), atol=1e-5)


def test_sinusoidal_embedding_shape_and_values_at_time_zero():
  layer = unet.SinusoidalEmbedding(8)
  embedding = layer(tf.constant([0.0, 0.25, 1.0])).numpy()
  assert embedding.shape == (3, 8)
  np.testing.assert_allclose(embedding[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)
  assert np.all(np.abs(embedding) <= 1.0)
  assert layer.get_config()["dim"] == 8


def test_embedding_distinguishes_nearby_sampler_times():
  # The sampler's times differ by 1 / num_steps; with TIME_SCALE they must embed differently.
  embedding = unet.SinusoidalEmbedding(8)(tf.constant([0.5, 0.5 + 1.0 / 1000.0])).numpy()
  assert np.max(np.abs(embedding[0] - embedding[1])) > 0.1


def test_bfloat16_network_has_the_float32_weights_and_follows_the_float32_network(model):
  bf16 = unet.build_unet(tiny_models.TINY_UNET, compute_dtype="bfloat16")
  assert [(v.name, v.shape, v.dtype) for v in bf16.variables] == [
      (v.name, v.shape, v.dtype) for v in model.variables]
  bf16.set_weights(model.get_weights())
  inputs = [_NOISY, _HALF, tf.constant([3, 10])]
  reference, output = model(inputs), bf16(inputs)
  assert output.dtype == tf.float32 and output.shape == reference.shape
  # bfloat16 keeps 8 bits of mantissa: within a few percent of the output's scale, not equal.
  scale = float(tf.reduce_max(tf.abs(reference)))
  assert 0.0 < _max_abs_diff(output, reference) < 0.05 * scale
  # The policy is the network's own: what is built next computes in float32 again.
  assert unet.build_unet(tiny_models.TINY_UNET)(inputs).dtype == tf.float32
  assert model.layers[-1].compute_dtype == "float32"


def test_unknown_compute_dtype_is_rejected():
  with pytest.raises(ValueError, match="compute_dtype"):
    unet.build_unet(tiny_models.TINY_UNET, compute_dtype="float16")
