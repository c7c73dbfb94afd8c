"""Noisy images clipped to [0, 1]: their pixels on the bounds moved back beyond them for the network.

The network learned x_t = signal_rate * x0 + noise_rate * eps with Gaussian eps, but a noisy image
as stored is clip(x0 + sigma * n, 0, 1). A pixel sitting exactly on a bound only says that its
unclipped value lay beyond that bound. Fed as it is, the black background of a digit reads as
bright half-normal noise and one-step denoising loses several dB. So each clipped pixel gets the
mean of the noisy values it stands for, taking the clean pixel to be the bound itself (MNIST is
mostly exact-0 background and some exact-1 strokes): E[sigma n | sigma n < 0] =
-sigma * sqrt(2 / pi) below 0, and 1 plus that much above 1. The mean rather than one random draw
from that tail: a draw adds noise the network then has to remove (docs/design.md#clipped-noise
has the gain per sigma). Pixels strictly inside (0, 1), and values already outside it (an
unclipped input), are left unchanged, so Gaussian inputs pass through as they are; each pixel is
mapped on its own, so an image comes out the same in any batch.
"""

import math

import tensorflow as tf

# E[n | n < 0] for a standard normal n is -sqrt(2 / pi).
_HALF_NORMAL_MEAN = math.sqrt(2.0 / math.pi)


def unclip(noisy_images, noise_sigma):
  """Returns `noisy_images` with pixels exactly at 0 or 1 moved beyond the bound by their mean tail.

  Args:
    noisy_images: float32 images in [0, 1], any shape.
    noise_sigma: float32 scalar, the std of the noise that was added before clipping.
  """
  noisy_images = tf.convert_to_tensor(noisy_images, tf.float32)
  tail_mean = tf.cast(noise_sigma, tf.float32) * _HALF_NORMAL_MEAN
  return tf.where(tf.equal(noisy_images, 0.0), -tail_mean,
                  tf.where(tf.equal(noisy_images, 1.0), 1.0 + tail_mean, noisy_images))
