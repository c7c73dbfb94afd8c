"""The noise schedule over continuous diffusion time, and the conversions between x0, eps and v.

A noisy image is `noisy_images = signal_rates * images + noise_rates * noises` with
`signal_rates**2 + noise_rates**2 = 1` (variance preserving). Diffusion time t in [0, 1] maps to an
angle between arccos(max_signal_rate) and arccos(min_signal_rate) (a cosine schedule), so the
rates never reach exactly 0 or 1 and every conversion below stays finite.
"""

import dataclasses
import math

import tensorflow as tf

from core.config import TRAINING_TIME_DISTRIBUTIONS, DiffusionConfig

# The defaults below (the schedule's ends, how training draws times) are the profile's.
_DIFFUSION_DEFAULTS = DiffusionConfig()


@dataclasses.dataclass(frozen=True)
class CosineSchedule:
  min_signal_rate: float = _DIFFUSION_DEFAULTS.min_signal_rate
  max_signal_rate: float = _DIFFUSION_DEFAULTS.max_signal_rate

  @property
  def start_angle(self) -> float:
    return math.acos(self.max_signal_rate)

  @property
  def end_angle(self) -> float:
    return math.acos(self.min_signal_rate)

  def rates(self, diffusion_times: tf.Tensor):
    """Returns (signal_rates, noise_rates) for times in [0, 1] (0 = clean, 1 = pure noise)."""
    times = tf.cast(diffusion_times, tf.float32)
    angles = self.start_angle + times * (self.end_angle - self.start_angle)
    return tf.cos(angles), tf.sin(angles)

  def time_at_noise_ratio(self, noise_to_signal: tf.Tensor) -> tf.Tensor:
    """The diffusion time whose noise_rate / signal_rate equals `noise_to_signal` (clipped to [0, 1])."""
    angles = tf.atan(tf.cast(noise_to_signal, tf.float32))
    times = (angles - self.start_angle) / (self.end_angle - self.start_angle)
    return tf.clip_by_value(times, 0.0, 1.0)


def sample_training_times(rng: tf.random.Generator, batch_size, schedule: CosineSchedule,
                          distribution: str = _DIFFUSION_DEFAULTS.training_times,
                          log_sigma_mean: float = _DIFFUSION_DEFAULTS.log_sigma_mean,
                          log_sigma_std: float = _DIFFUSION_DEFAULTS.log_sigma_std) -> tf.Tensor:
  """Diffusion times [batch_size] in [0, 1] for one training batch.

  "uniform": t ~ U(0, 1), i.e. the cosine schedule's angle is uniform. "lognormal": the noise
  level sigma = noise_rate / signal_rate is log-normal (EDM), mapped back to t; levels beyond the
  schedule's ends are clamped to them.
  """
  if distribution == "uniform":
    return rng.uniform([batch_size])
  if distribution == "lognormal":
    sigmas = tf.exp(log_sigma_mean + log_sigma_std * rng.normal([batch_size]))
    return schedule.time_at_noise_ratio(sigmas)
  raise ValueError(f"Unknown training time distribution {distribution!r}; "
                   f"expected one of {TRAINING_TIME_DISTRIBUTIONS}")


def signal_to_noise(signal_rates: tf.Tensor, noise_rates: tf.Tensor) -> tf.Tensor:
  return tf.square(signal_rates) / tf.square(noise_rates)


def add_noise(images, noises, signal_rates, noise_rates):
  """The forward process q(x_t | x_0)."""
  return signal_rates * images + noise_rates * noises


def velocity(images, noises, signal_rates, noise_rates):
  """The v-prediction target: v = signal * eps - noise * x0."""
  return signal_rates * noises - noise_rates * images


def split_prediction(predictions, noisy_images, signal_rates, noise_rates, prediction: str):
  """Converts a network output ('v' or 'eps') into (pred_images, pred_noises)."""
  if prediction == "v":
    pred_images = signal_rates * noisy_images - noise_rates * predictions
    pred_noises = noise_rates * noisy_images + signal_rates * predictions
  elif prediction == "eps":
    pred_noises = predictions
    pred_images = (noisy_images - noise_rates * pred_noises) / signal_rates
  else:
    raise ValueError(f"Unknown prediction type {prediction!r}; expected 'v' or 'eps'")
  return pred_images, pred_noises


def training_target(images, noises, signal_rates, noise_rates, prediction: str):
  if prediction == "v":
    return velocity(images, noises, signal_rates, noise_rates)
  if prediction == "eps":
    return noises
  raise ValueError(f"Unknown prediction type {prediction!r}; expected 'v' or 'eps'")


def min_snr_weights(signal_rates, noise_rates, gamma: float, prediction: str):
  """Min-SNR-gamma loss weights (Hang et al. 2023), expressed for the chosen target.

  The weight on the x0 error is min(SNR, gamma); a v (eps) error is (SNR + 1) (SNR) times an x0
  error, so the weight on it is divided by that factor. gamma <= 0 means unweighted.
  """
  if gamma <= 0:
    return tf.ones_like(signal_rates)
  snr = signal_to_noise(signal_rates, noise_rates)
  clipped = tf.minimum(snr, gamma)
  return clipped / (snr + 1.0) if prediction == "v" else clipped / snr
