
import math

import numpy as np
import tensorflow as tf

from trainer_module import clipped_noise


def test_pixels_inside_the_range_and_unclipped_inputs_pass_unchanged():
  values = tf.constant([[0.01, 0.5, 0.99], [-0.3, 1.7, 0.2]])
  np.testing.assert_array_equal(clipped_noise.unclip(values, 0.4).numpy(), values.numpy())


def test_clipped_pixels_move_to_the_mean_of_their_tail():
  values = tf.constant([[0.0, 1.0, 0.0, 0.25]])
  tail_mean = 0.4 * math.sqrt(2.0 / math.pi)
  np.testing.assert_allclose(clipped_noise.unclip(values, 0.4).numpy(),
                             [[-tail_mean, 1.0 + tail_mean, -tail_mean, 0.25]], rtol=1e-6)
  np.testing.assert_array_equal(clipped_noise.unclip(values, 0.0).numpy(), values.numpy())


def test_clipped_background_gets_back_the_mean_of_the_gaussian_noise():
  sigma = 0.4
  noise = sigma * tf.random.stateless_normal([64, 28, 28, 1], seed=[1, 0])
  clipped = tf.clip_by_value(noise, 0.0, 1.0)  # a black background plus noise, as stored
  assert abs(clipped.numpy().mean() - sigma * np.sqrt(2 / np.pi) / 2) < 0.005  # the bias it removes
  on_bound = clipped.numpy() == 0.0
  unclipped = clipped_noise.unclip(clipped, sigma).numpy()
  assert abs(unclipped.mean()) < 0.005
  # Each clipped pixel stands for the mean of the noise values clipping collapsed onto it.
  assert abs(unclipped[on_bound].mean() - noise.numpy()[on_bound].mean()) < 0.005


def test_an_image_comes_out_the_same_in_any_batch_and_traces_with_unknown_shapes():
  images = tf.clip_by_value(0.4 * tf.random.stateless_normal([6, 28, 28, 1], seed=[2, 0]), 0.0, 1.0)
  together = clipped_noise.unclip(images, 0.4).numpy()
  np.testing.assert_array_equal(together[4:5], clipped_noise.unclip(images[4:5], 0.4).numpy())
  traced = tf.function(clipped_noise.unclip, input_signature=[
      tf.TensorSpec([None, 28, 28, 1], tf.float32), tf.TensorSpec([], tf.float32)])
  np.testing.assert_allclose(traced(images, tf.constant(0.4)).numpy(), together, rtol=1e-6)
