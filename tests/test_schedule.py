"""Unit tests of trainer_module/schedule.py: the cosine schedule and x0 / eps / v conversions."""

import math

import numpy as np
import pytest
import tensorflow as tf

from trainer_module import schedule as schedule_lib

_SCHEDULE = schedule_lib.CosineSchedule(min_signal_rate=0.02, max_signal_rate=0.9995)
_TIMES = tf.linspace(0.0, 1.0, 101)


def _rates(times=_TIMES, schedule=_SCHEDULE):
  signal_rates, noise_rates = schedule.rates(times)
  return signal_rates.numpy(), noise_rates.numpy()


def test_signal_rates_decrease_and_noise_rates_increase_with_time():
  signal_rates, noise_rates = _rates()
  assert np.all(np.diff(signal_rates) < 0)
  assert np.all(np.diff(noise_rates) > 0)


def test_rates_are_variance_preserving():
  signal_rates, noise_rates = _rates()
  np.testing.assert_allclose(signal_rates ** 2 + noise_rates ** 2, 1.0, atol=1e-6)


@pytest.mark.parametrize("min_rate,max_rate", [(0.02, 0.9995), (0.1, 0.95)])
def test_rate_endpoints_equal_max_and_min_signal_rate(min_rate, max_rate):
  schedule = schedule_lib.CosineSchedule(min_rate, max_rate)
  signal_rates, noise_rates = _rates(tf.constant([0.0, 1.0]), schedule)
  np.testing.assert_allclose(signal_rates, [max_rate, min_rate], atol=1e-6)
  np.testing.assert_allclose(noise_rates, [math.sqrt(1 - max_rate ** 2),
                                           math.sqrt(1 - min_rate ** 2)], atol=1e-6)


def test_rates_keep_the_shape_of_times():
  signal_rates, noise_rates = _SCHEDULE.rates(tf.zeros([3, 1, 1, 1]))
  assert signal_rates.shape == (3, 1, 1, 1)
  assert noise_rates.shape == (3, 1, 1, 1)


def test_time_at_noise_ratio_inverts_rates():
  signal_rates, noise_rates = _rates()
  times = _SCHEDULE.time_at_noise_ratio(tf.constant(noise_rates / signal_rates)).numpy()
  np.testing.assert_allclose(times, _TIMES.numpy(), atol=1e-4)


def test_time_at_noise_ratio_clips_to_unit_interval():
  times = _SCHEDULE.time_at_noise_ratio(tf.constant([0.0, 1e-6, 1e6])).numpy()
  np.testing.assert_allclose(times, [0.0, 0.0, 1.0])


@pytest.mark.parametrize("time", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("value", [-1.0, 0.5])
def test_add_noise_has_expected_mean_and_std_for_constant_images(time, value):
  signal_rate, noise_rate = (float(rate) for rate in _SCHEDULE.rates(time))
  images = tf.fill([200, 28, 28, 1], value)
  noises = tf.random.stateless_normal(images.shape, seed=[7, 0])
  noisy = schedule_lib.add_noise(images, noises, signal_rate, noise_rate).numpy()
  # 156,800 samples: the sample mean and std are within ~0.3% of the truth.
  assert noisy.mean() == pytest.approx(signal_rate * value, abs=0.01)
  assert noisy.std() == pytest.approx(noise_rate, rel=0.01)


def test_velocity_matches_its_definition():
  images, noises = tf.constant([0.5, -1.0]), tf.constant([1.0, 2.0])
  np.testing.assert_allclose(
      schedule_lib.velocity(images, noises, 0.6, 0.8).numpy(),
      [0.6 * 1.0 - 0.8 * 0.5, 0.6 * 2.0 - 0.8 * -1.0], atol=1e-6)


@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_split_prediction_recovers_images_and_noises(prediction):
  images = tf.random.stateless_uniform([11, 28, 28, 1], seed=[1, 0], minval=-1.0, maxval=1.0)
  noises = tf.random.stateless_normal([11, 28, 28, 1], seed=[1, 1])
  signal_rates, noise_rates = _SCHEDULE.rates(tf.linspace(0.0, 1.0, 11)[:, None, None, None])
  noisy = schedule_lib.add_noise(images, noises, signal_rates, noise_rates)
  targets = schedule_lib.training_target(images, noises, signal_rates, noise_rates, prediction)
  pred_images, pred_noises = schedule_lib.split_prediction(targets, noisy, signal_rates,
                                                           noise_rates, prediction)
  # eps at t = 1 divides by min_signal_rate (0.02): float32 error grows 50x, still far below 1e-4.
  np.testing.assert_allclose(pred_images.numpy(), images.numpy(), atol=1e-4)
  np.testing.assert_allclose(pred_noises.numpy(), noises.numpy(), atol=1e-4)


def test_training_target_is_noise_for_eps_and_velocity_for_v():
  images, noises = tf.constant([0.25]), tf.constant([-0.5])
  assert float(schedule_lib.training_target(images, noises, 0.6, 0.8, "eps")[0]) == -0.5
  assert float(schedule_lib.training_target(images, noises, 0.6, 0.8, "v")[0]) == pytest.approx(
      0.6 * -0.5 - 0.8 * 0.25)


def test_signal_to_noise_is_ratio_of_squares():
  assert float(schedule_lib.signal_to_noise(tf.constant(0.6), tf.constant(0.8))) == pytest.approx(
      0.36 / 0.64)


# SNR = 4 exactly: signal_rate = 2 / sqrt(5), noise_rate = 1 / sqrt(5).
_SNR4 = (tf.constant([2.0 / math.sqrt(5.0)]), tf.constant([1.0 / math.sqrt(5.0)]))


@pytest.mark.parametrize("gamma,prediction,expected", [
    (5.0, "v", 4.0 / 5.0),  # min(4, 5) / (4 + 1)
    (5.0, "eps", 1.0),  # min(4, 5) / 4
    (2.0, "v", 2.0 / 5.0),  # min(4, 2) / (4 + 1)
    (2.0, "eps", 0.5),  # min(4, 2) / 4
])
def test_min_snr_weights_for_known_snr(gamma, prediction, expected):
  weights = schedule_lib.min_snr_weights(*_SNR4, gamma, prediction)
  assert float(weights[0]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("gamma", [0.0, -1.0])
@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_min_snr_weights_nonpositive_gamma_gives_ones(gamma, prediction):
  signal_rates, noise_rates = _SCHEDULE.rates(tf.constant([0.0, 0.3, 1.0]))
  weights = schedule_lib.min_snr_weights(signal_rates, noise_rates, gamma, prediction)
  np.testing.assert_array_equal(weights.numpy(), [1.0, 1.0, 1.0])


def test_min_snr_weights_are_positive_and_finite_over_the_schedule():
  signal_rates, noise_rates = _SCHEDULE.rates(_TIMES)
  for prediction in ("v", "eps"):
    weights = schedule_lib.min_snr_weights(signal_rates, noise_rates, 5.0, prediction).numpy()
    assert np.all(np.isfinite(weights))
    assert np.all(weights > 0)


def test_invalid_prediction_type_raises():
  ones = tf.ones([2])
  with pytest.raises(ValueError, match="x0"):
    schedule_lib.split_prediction(ones, ones, ones, ones, "x0")
  with pytest.raises(ValueError, match="x0"):
    schedule_lib.training_target(ones, ones, ones, ones, "x0")


def _training_sigmas(distribution, num=20_000, **kwargs):
  rng = tf.random.Generator.from_seed(0)
  times = schedule_lib.sample_training_times(rng, num, _SCHEDULE, distribution, **kwargs)
  assert times.shape == (num,)
  times = times.numpy()
  assert np.all((times >= 0.0) & (times <= 1.0))
  signal_rates, noise_rates = _SCHEDULE.rates(tf.constant(times))
  return times, (noise_rates / signal_rates).numpy()


def test_uniform_training_times_cover_the_unit_interval_evenly():
  times, _ = _training_sigmas("uniform")
  np.testing.assert_allclose(np.histogram(times, bins=4, range=(0, 1))[0] / len(times), 0.25,
                             atol=0.02)


@pytest.mark.parametrize("mean,std", [(-1.2, 1.2), (-0.4, 1.4)])
def test_lognormal_training_times_give_lognormal_noise_levels(mean, std):
  _, sigmas = _training_sigmas("lognormal", log_sigma_mean=mean, log_sigma_std=std)
  # Inside the schedule's range (sigma 0.03 to 50) ln(sigma) keeps its mean-centred quantiles.
  np.testing.assert_allclose(np.median(np.log(sigmas)), mean, atol=0.05)
  quartiles = np.percentile(np.log(sigmas), [25, 75])
  np.testing.assert_allclose(quartiles, [mean - 0.674 * std, mean + 0.674 * std], atol=0.06)


def test_lognormal_training_times_spend_more_steps_near_the_denoising_level_than_uniform():
  near = lambda sigmas: np.mean((sigmas > 0.2) & (sigmas < 0.8))  # noqa: E731
  assert near(_training_sigmas("lognormal")[1]) > near(_training_sigmas("uniform")[1]) + 0.05


def test_unknown_training_time_distribution_raises():
  with pytest.raises(ValueError, match="logit"):
    schedule_lib.sample_training_times(tf.random.Generator.from_seed(0), 2, _SCHEDULE, "logit")
