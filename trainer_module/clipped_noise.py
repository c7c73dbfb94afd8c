"""Noisy images that were clipped to [0, 1], made Gaussian again before the network sees them.

The network learned x_t = signal_rate * x0 + noise_rate * eps with Gaussian eps, but a noisy image
as stored is clip(x0 + sigma * n, 0, 1). A pixel sitting exactly on a bound only says that its
unclipped value lay beyond that bound. Fed as it is, the black background of a digit reads as
bright half-normal noise and one-step denoising at sigma 0.4 loses about 4 dB (README, "Denoising
clipped images"). So each clipped pixel gets a value drawn from the Gaussian tail beyond its bound,
taking the clean pixel to be the bound itself (MNIST is mostly exact-0 background and some exact-1
strokes). Pixels strictly inside (0, 1), and values already outside it (an unclipped input), are
left unchanged, so Gaussian inputs pass through as they are.
"""

import tensorflow as tf


def unclip(noisy_images, noise_sigma, seed):
  """Returns `noisy_images` with pixels exactly at 0 or 1 replaced by draws beyond the bound.

  Args:
    noisy_images: float32 images in [0, 1], [N, ...] (axis 0 indexes images).
    noise_sigma: float32 scalar, the std of the noise that was added before clipping.
    seed: int [2], the stateless seed of the draws.
  An image's draws depend only on `seed` and the image itself (its fingerprint), never on the
  batch it arrives in or its row there: the Evaluator and TFMA batch the same images differently
  and must get the same denoised images.
  """
  noisy_images = tf.convert_to_tensor(noisy_images, tf.float32)
  image_keys = tf.bitcast(tf.fingerprint(noisy_images), tf.int64)  # [N]: 8 bytes per image
  base_seed = tf.cast(seed, tf.int64)

  def draw(image_key):
    return tf.random.stateless_normal(
        tf.shape(noisy_images)[1:], seed=tf.random.experimental.stateless_fold_in(base_seed, image_key))

  normals = tf.map_fn(draw, image_keys,
                      fn_output_signature=tf.TensorSpec(noisy_images.shape[1:], tf.float32))
  tails = noise_sigma * tf.abs(normals)
  return tf.where(tf.equal(noisy_images, 0.0), -tails,
                  tf.where(tf.equal(noisy_images, 1.0), 1.0 + tails, noisy_images))
