from pipeline import keras_env  # noqa: F401  (sets the Keras choice before TensorFlow loads)

import numpy as np
import tensorflow as tf

from trainer_module import clipped_noise

_SEED = tf.constant([3, 0])


def test_pixels_inside_the_range_and_unclipped_inputs_pass_unchanged():
  values = tf.constant([[0.01, 0.5, 0.99], [-0.3, 1.7, 0.2]])
  np.testing.assert_array_equal(clipped_noise.unclip(values, 0.4, _SEED).numpy(), values.numpy())


def test_clipped_pixels_move_beyond_their_bound():
  values = tf.constant([[0.0] * 50 + [1.0] * 50])
  unclipped = clipped_noise.unclip(values, 0.4, _SEED).numpy()[0]
  assert (unclipped[:50] <= 0.0).all() and (unclipped[50:] >= 1.0).all()
  assert (unclipped[:50] < 0.0).any() and (unclipped[50:] > 1.0).any()


def test_clipped_background_gets_back_the_gaussian_noise_statistics():
  sigma = 0.4
  noise = sigma * tf.random.stateless_normal([256, 28, 28, 1], seed=[1, 0])
  clipped = tf.clip_by_value(noise, 0.0, 1.0)  # a black background plus noise, as stored
  unclipped = clipped_noise.unclip(clipped, sigma, _SEED).numpy()
  assert abs(unclipped.mean()) < 0.005
  assert abs(unclipped.std() - sigma) < 0.005
  assert abs(clipped.numpy().mean() - sigma * np.sqrt(2 / np.pi) / 2) < 0.005  # the bias it removes


def test_same_seed_same_draws_and_zero_sigma_is_the_bound():
  values = tf.zeros([4, 28, 28, 1])
  first = clipped_noise.unclip(values, 0.2, _SEED).numpy()
  np.testing.assert_array_equal(first, clipped_noise.unclip(values, 0.2, _SEED).numpy())
  assert not np.array_equal(first, clipped_noise.unclip(values, 0.2, tf.constant([4, 0])).numpy())
  np.testing.assert_array_equal(clipped_noise.unclip(values, 0.0, _SEED).numpy(), 0.0)


def test_an_images_draws_do_not_depend_on_its_batch_or_row():
  images = tf.clip_by_value(0.4 * tf.random.stateless_normal([6, 28, 28, 1], seed=[2, 0]), 0.0, 1.0)
  together = clipped_noise.unclip(images, 0.4, _SEED).numpy()
  reordered = clipped_noise.unclip(tf.reverse(images, [0]), 0.4, _SEED).numpy()[::-1]
  alone = clipped_noise.unclip(images[4:5], 0.4, _SEED).numpy()
  np.testing.assert_array_equal(together, reordered)
  np.testing.assert_array_equal(together[4:5], alone)
  # Two images that differ in one pixel get different draws everywhere else.
  pair = np.zeros([2, 28, 28, 1], np.float32)
  pair[0, 0, 0, 0] = pair[1, 0, 1, 0] = 0.5
  first, second = clipped_noise.unclip(pair, 0.4, _SEED).numpy()
  assert np.all(first[5:] != second[5:])
